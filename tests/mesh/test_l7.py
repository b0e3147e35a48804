"""L7 intentions decided in-process, held to Consul's documented rules.

Consul's built-in proxy is L4 only (its authorize endpoint denies any caller whose
intention has permissions), so the reference for L7 is Consul's documentation and the
Envoy RBAC it generates (agent/xds/rbac.go):

- service-intentions config entry, ``Sources[].Permissions``: "Permission precedence is
  applied top to bottom. For any given request the first permission to match in the list
  is terminal and stops further evaluation. As with L4 intentions, traffic that fails to
  match any of the provided permissions in this intention will be subject to the default
  intention behavior".
- ``Permissions[].HTTP``: at most one of ``PathExact``/``PathPrefix``/``PathRegex``;
  ``Methods`` (any of); ``Header`` conditions (all of), each one of ``Present``, ``Exact``,
  ``Prefix``, ``Suffix``, ``Regex``, optionally ``Invert``. Envoy's HeaderMatcher: a
  missing header matches only an inverted ``Present``; repeated values are joined by ",".
- Intention precedence (docs "Intentions", precedence table, Community Edition rows):
  exact source to exact destination 9, ``*`` source to exact destination 8, exact source
  to ``*`` destination 6, ``*`` to ``*`` 5; the highest-precedence intention whose source
  matches the caller decides, lower ones are not consulted.
"""

from __future__ import annotations

from typing import Any

import pytest

from consul_discovery.mesh.intentions import IntentionSet
from consul_discovery.mesh.l7 import RequestView, header_matches, http_matches, l7_action
from consul_discovery.mesh.spiffe import SpiffeId

API = SpiffeId("td.consul", "default", "dc1", "api")
WEB = SpiffeId("td.consul", "default", "dc1", "web")


def _ixn(source: str, precedence: int, **rest: Any) -> dict[str, Any]:
    return {"SourceNS": "default", "SourceName": source, "DestinationNS": "default",
            "DestinationName": "orders", "Precedence": precedence, **rest}  # fmt: skip


def _req(method: str = "GET", path: str = "/", **headers: str) -> RequestView:
    return RequestView.of(method, path, [(k.replace("_", "-"), v) for k, v in headers.items()])


def _l7(*permissions: dict[str, Any]) -> IntentionSet:
    return IntentionSet.from_json("orders", [_ixn("api", 9, Permissions=list(permissions))])


def _decide(intentions: IntentionSet, request: RequestView, source: SpiffeId = API) -> str | None:
    intention = intentions.match(source)
    assert intention is not None and intention.is_l7
    return l7_action(intention, request)


@pytest.mark.parametrize(
    ("http", "request_", "matches"),
    [
        ({"PathExact": "/orders"}, _req(path="/orders"), True),
        ({"PathExact": "/orders"}, _req(path="/orders/"), False),
        ({"PathExact": "/orders"}, _req(path="/orders?x=1"), True),  # the query is not the path
        ({"PathExact": "/orders"}, _req(path="/Orders"), False),  # case-sensitive
        ({"PathPrefix": "/orders/"}, _req(path="/orders/7"), True),
        ({"PathPrefix": "/orders/"}, _req(path="/orders"), False),
        ({"PathRegex": "/orders/[0-9]+"}, _req(path="/orders/42"), True),
        ({"PathRegex": "/orders/[0-9]+"}, _req(path="/orders/42/items"), False),  # full match
        ({"PathRegex": "/orders/[0-9]+"}, _req(path="/x/orders/42"), False),
        ({"Methods": ["GET", "HEAD"]}, _req("HEAD"), True),
        ({"Methods": ["GET", "HEAD"]}, _req("POST"), False),
        ({"Methods": ["GET"]}, _req("get"), False),  # methods are case-sensitive
        ({"PathPrefix": "/a", "Methods": ["POST"]}, _req("POST", "/ab"), True),
        ({"PathPrefix": "/a", "Methods": ["POST"]}, _req("GET", "/ab"), False),  # all parts
    ],
)
def test_path_and_method_rules(http: dict[str, Any], request_: RequestView, matches: bool) -> None:
    from consul_discovery.mesh.intentions import _permission

    permission = _permission({"Action": "allow", "HTTP": http})
    assert permission.http is not None
    assert http_matches(permission.http, request_) is matches


@pytest.mark.parametrize(
    ("header", "headers", "matches"),
    [
        ({"Name": "X-Team", "Present": True}, {"x_team": "a"}, True),
        ({"Name": "X-Team", "Present": True}, {}, False),
        ({"Name": "X-Team", "Present": True, "Invert": True}, {}, True),  # missing + inverted
        ({"Name": "X-Team", "Present": True, "Invert": True}, {"x_team": "a"}, False),
        ({"Name": "X-Team", "Exact": "blue"}, {"x_team": "blue"}, True),
        ({"Name": "X-Team", "Exact": "blue"}, {"x_team": "Blue"}, False),  # values: case matters
        ({"Name": "x-team", "Exact": "blue"}, {"X_TEAM": "blue"}, True),  # names: they do not
        ({"Name": "X-Team", "Exact": "blue", "Invert": True}, {"x_team": "red"}, True),
        # Envoy: a missing header never matches a value rule, inverted or not.
        ({"Name": "X-Team", "Exact": "blue", "Invert": True}, {}, False),
        ({"Name": "X-Team", "Prefix": "bl"}, {"x_team": "blue"}, True),
        ({"Name": "X-Team", "Prefix": "bl"}, {"x_team": "lbl"}, False),
        ({"Name": "X-Team", "Suffix": "ue"}, {"x_team": "blue"}, True),
        ({"Name": "X-Team", "Suffix": "ue"}, {"x_team": "blues"}, False),
        ({"Name": "X-Team", "Regex": "b.*e"}, {"x_team": "blue"}, True),
        ({"Name": "X-Team", "Regex": "b.*e"}, {"x_team": "blues"}, False),  # full match
        ({"Name": "X-Team", "Regex": "b.*e", "Invert": True}, {"x_team": "red"}, True),
    ],
)
def test_header_rules(header: dict[str, Any], headers: dict[str, str], matches: bool) -> None:
    from consul_discovery.mesh.intentions import _header

    assert header_matches(_header(header), _req(**headers)) is matches


def test_repeated_header_values_are_joined_with_commas() -> None:
    from consul_discovery.mesh.intentions import _header

    request = RequestView.of("GET", "/", [("X-Tag", "a"), ("x-tag", "b")])
    assert header_matches(_header({"Name": "X-Tag", "Exact": "a,b"}), request)
    assert not header_matches(_header({"Name": "X-Tag", "Exact": "a"}), request)


def test_the_first_matching_permission_is_terminal() -> None:
    intentions = _l7(
        {"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
        {"Action": "allow", "HTTP": {"PathPrefix": "/"}},
        {"Action": "deny", "HTTP": {"PathExact": "/public"}},  # never reached for /public
    )
    assert _decide(intentions, _req(path="/admin/x")) == "deny"
    assert _decide(intentions, _req(path="/orders")) == "allow"
    assert _decide(intentions, _req(path="/public")) == "allow"


def test_no_matching_permission_leaves_the_request_to_the_default() -> None:
    intentions = _l7({"Action": "allow", "HTTP": {"PathPrefix": "/orders", "Methods": ["GET"]}})
    assert _decide(intentions, _req("GET", "/orders/1")) == "allow"
    assert _decide(intentions, _req("DELETE", "/orders/1")) is None  # -> default policy
    assert _decide(intentions, _req("GET", "/users")) is None


def test_a_permission_without_http_matches_every_request() -> None:
    intentions = _l7({"Action": "deny", "HTTP": {"PathPrefix": "/x"}}, {"Action": "allow"})
    assert _decide(intentions, _req(path="/anything")) == "allow"
    assert _decide(intentions, _req(path="/x")) == "deny"


def test_precedence_table_the_most_specific_source_decides() -> None:
    # Consul sends them sorted; give them shuffled to show the set sorts by precedence.
    intentions = IntentionSet.from_json(
        "orders",
        [
            _ixn("*", 5, Action="allow", DestinationName="*"),
            _ixn("api", 9, Action="deny"),
            _ixn("*", 8, Permissions=[{"Action": "allow", "HTTP": {"PathPrefix": "/pub"}}]),
            _ixn("api", 6, Action="allow", DestinationName="*"),
        ],
    )
    assert [i.precedence for i in intentions.intentions] == [9, 8, 6, 5]
    api = intentions.match(API)
    assert api is not None and (api.precedence, api.action) == (9, "deny")
    web = intentions.match(WEB)  # no exact intention for web: the * source (8), L7
    assert web is not None and web.precedence == 8 and web.is_l7
    # The L7 intention decides alone for web: lower ones (the *->* allow) are not consulted.
    assert l7_action(web, _req(path="/private")) is None  # -> the default, not the 5's allow
    assert l7_action(web, _req(path="/pub/x")) == "allow"


def test_source_matching_follows_namespace_partition_and_peer() -> None:
    intentions = IntentionSet.from_json(
        "orders",
        [
            _ixn("api", 9, Action="allow", SourcePeer="other-cluster"),
            _ixn("api", 9, Action="deny", SourceNS="team"),
            _ixn("api", 9, Action="allow", SourcePartition="p2"),
        ],
    )
    assert intentions.match(API) is None  # none of them is default/default/api, local
    assert intentions.match(SpiffeId("td", "team", "dc1", "api")) is not None
    assert intentions.match(SpiffeId("td", "default", "dc1", "api", partition="p2")) is not None
