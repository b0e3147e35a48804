"""Route matching as Envoy evaluates what Consul renders: path, headers, query, methods."""

from __future__ import annotations

import pytest
from requests.structures import CaseInsensitiveDict

from consul_discovery.client.chain.match import compile_match
from consul_discovery.client.chain.model import HeaderMatch, HttpMatch, QueryMatch
from consul_discovery.client.route import RequestView


def req(target: str = "/", method: str = "GET", **headers: str) -> RequestView:
    names = {k.replace("_", "-"): v for k, v in headers.items()}
    return RequestView.of(method, target, CaseInsensitiveDict(names))


def matches(match: HttpMatch, request: RequestView) -> bool:
    return compile_match(match)(request)


def test_request_view_splits_the_query_and_uppercases_the_method():
    view = RequestView.of("get", "/a/b?x=1&y=2")
    assert (view.method, view.path, view.query) == ("GET", "/a/b", "x=1&y=2")
    assert RequestView.of("GET", "?x=1").path == "/"


@pytest.mark.parametrize(
    ("match", "path", "expected"),
    [
        (HttpMatch(path_exact="/v2"), "/v2", True),
        (HttpMatch(path_exact="/v2"), "/v2/", False),
        (HttpMatch(path_exact="/v2"), "/V2", False),
        (HttpMatch(path_exact="/v2", case_insensitive=True), "/V2", True),
        (HttpMatch(path_prefix="/api"), "/api/users", True),
        (HttpMatch(path_prefix="/api"), "/apiary", True),  # a string prefix, as Envoy's
        (HttpMatch(path_prefix="/api"), "/API/users", False),
        (HttpMatch(path_prefix="/api", case_insensitive=True), "/API/users", True),
        (HttpMatch(path_regex="/x/[0-9]+"), "/x/12", True),
        (HttpMatch(path_regex="/x/[0-9]+"), "/x/12/more", False),  # a full match
        (HttpMatch(path_regex="/x/[0-9]+"), "/y/x/12", False),
        (HttpMatch(path_prefix="/"), "/anything", True),
        (HttpMatch(), "/anything", True),
    ],
)
def test_path_rules(match, path, expected):
    assert matches(match, req(path + "?q=1")) is expected


def test_path_matching_ignores_the_query_string():
    assert matches(HttpMatch(path_exact="/v2"), req("/v2?debug=/v3"))


@pytest.mark.parametrize(
    ("rule", "headers", "expected"),
    [
        (HeaderMatch("x-user", present=True), {"X-User": ""}, True),
        (HeaderMatch("x-user", present=True), {}, False),
        (HeaderMatch("x-user", present=True, invert=True), {}, True),
        (HeaderMatch("x-user", present=True, invert=True), {"x-user": "a"}, False),
        (HeaderMatch("x-env", exact="prod"), {"x-env": "prod"}, True),
        (HeaderMatch("x-env", exact="prod"), {"x-env": "Prod"}, False),
        (HeaderMatch("x-env", exact="prod", invert=True), {"x-env": "dev"}, True),
        (HeaderMatch("x-env", exact="prod", invert=True), {"x-env": "prod"}, False),
        # Envoy: an absent header never matches a value rule, inverted or not.
        (HeaderMatch("x-env", exact="prod", invert=True), {}, False),
        (HeaderMatch("x-env", prefix="pr"), {"x-env": "prod"}, True),
        (HeaderMatch("x-env", prefix="pr"), {"x-env": "xprod"}, False),
        (HeaderMatch("x-env", suffix="od"), {"x-env": "prod"}, True),
        (HeaderMatch("x-env", regex="pro?d"), {"x-env": "prd"}, True),
        (HeaderMatch("x-env", regex="pro?d"), {"x-env": "prod-1"}, False),  # full match
        # Consul's precedence when several are set: exact wins over prefix.
        (HeaderMatch("x-env", exact="prod", prefix="d"), {"x-env": "prod"}, True),
        # A rule that sets nothing is skipped (matches), as Consul renders it.
        (HeaderMatch("x-env"), {}, True),
    ],
)
def test_header_rules(rule, headers, expected):
    request = RequestView("GET", "/", CaseInsensitiveDict(headers))
    assert matches(HttpMatch(headers=(rule,)), request) is expected


@pytest.mark.parametrize(
    ("rule", "query", "expected"),
    [
        (QueryMatch("q", present=True), "q=", True),
        (QueryMatch("q", present=True), "p=1", False),
        (QueryMatch("q", present=True), "", False),
        (QueryMatch("q", exact="a b"), "q=a+b", True),  # decoded before comparing
        (QueryMatch("q", exact="a"), "q=a&q=b", True),  # the first value
        (QueryMatch("q", exact="b"), "q=a&q=b", False),
        (QueryMatch("q", regex="a.*"), "q=abc", True),
        (QueryMatch("q", regex="a.*"), "q=xabc", False),
    ],
)
def test_query_parameter_rules(rule, query, expected):
    request = RequestView("GET", f"/?{query}", {})
    assert matches(HttpMatch(query=(rule,)), request) is expected


def test_methods_and_every_rule_must_hold():
    match = HttpMatch(
        path_prefix="/admin",
        methods=("GET", "POST"),
        headers=(HeaderMatch("x-debug", present=True),),
        query=(QueryMatch("v", exact="2"),),
    )
    assert matches(match, req("/admin/x?v=2", x_debug="1"))
    assert not matches(match, req("/admin/x?v=2", "DELETE", x_debug="1"))
    assert not matches(match, req("/admin/x?v=3", x_debug="1"))
    assert not matches(match, req("/admin/x?v=2"))
    assert not matches(match, req("/other?v=2", x_debug="1"))
