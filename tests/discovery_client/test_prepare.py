"""prepare_request makes the PreparedRequest requests' Session.prepare_request makes."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consul_discovery.client.prepare import prepare_request, prepared_url


def _session(
    headers: dict[str, str | None], cookie: bool, auth: bool, params: bool, trust_env: bool
) -> requests.Session:
    session = requests.Session()
    session.trust_env = trust_env
    session.headers.update(headers)  # a None value: the header is left out of each request
    if cookie:
        session.cookies.set("sid", "abc", domain="svc.local")
    if auth:
        session.auth = ("user", "secret")
    if params:
        session.params = {"from": "session"}
    return session


def _view(prepared: requests.PreparedRequest) -> dict[str, Any]:
    """Everything a PreparedRequest carries to Session.send and the adapter."""
    return {
        "method": prepared.method,
        "url": prepared.url,
        "headers": list(prepared.headers.items()),
        "body": prepared.body,
        "hooks": {event: list(hooks) for event, hooks in prepared.hooks.items()},
        "body_position": prepared._body_position,
        "cookies": sorted((c.name, c.value, c.domain) for c in prepared._cookies),  # type: ignore[union-attr]
        "type": type(prepared),
    }


def _outcome(prepare: Any) -> Any:
    try:
        return _view(prepare())
    except Exception as exc:  # the same error, with the same message
        return (type(exc), str(exc))


def _hook(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """A response hook (compared by identity)."""


header_names = st.sampled_from(
    ["Accept", "X-Trace", "user-agent", "Content-Type", "Bad Name", "X-Crlf\r\n"]
)
header_values = st.one_of(
    st.none(), st.sampled_from(["", "a b", "text/plain", " lead", "x\r\ny", "ü"]), st.just(b"raw")
)
services = st.sampled_from(
    ["svc", "Order-Service", "svc.local", "user:pw@svc", "bücher", "*svc", ""]
)
paths = st.lists(st.sampled_from([*"/?#%&=ab ü~:@!$'()*+,;[]é", "%20", "%zz"]), max_size=12).map(
    lambda parts: "/" + "".join(parts)
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "post", "PUT", "DELETE", "HEAD", "patch", "OPTIONS"]),
    service=services,
    path=paths,
    headers=st.dictionaries(header_names, header_values, max_size=3),
    session_headers=st.dictionaries(header_names, header_values, max_size=2),
    body=st.sampled_from([None, b"bytes", "text", {"k": "v"}, [("a", "1")], ""]),
    json=st.sampled_from([None, {"j": 1}, [1, 2]]),
    cookie=st.booleans(),
    request_cookies=st.sampled_from([None, {"c": "1"}]),
    auth=st.booleans(),
    request_auth=st.sampled_from([None, ("u", "p")]),
    params=st.booleans(),
    request_params=st.sampled_from([None, {"q": "1"}, "a=b"]),
    trust_env=st.booleans(),
    hooks=st.sampled_from([None, {"response": _hook}]),
    session_hook=st.booleans(),
    plain=st.booleans(),
)
def test_the_prepared_request_is_the_one_requests_prepares(
    method: str,
    service: str,
    path: str,
    headers: dict[str, Any],
    session_headers: dict[str, Any],
    body: Any,
    json: Any,
    cookie: bool,
    request_cookies: Any,
    auth: bool,
    request_auth: Any,
    params: bool,
    request_params: Any,
    trust_env: bool,
    hooks: Any,
    session_hook: bool,
    plain: bool,
) -> None:
    if plain:  # nothing to merge (most calls): the short way, half the examples
        cookie = auth = params = trust_env = False
        request_cookies = request_auth = request_params = None
    session = _session(session_headers, cookie, auth, params, trust_env)
    if session_hook:
        session.hooks["response"].append(_hook)

    def request() -> requests.Request:  # a new one per side: preparing may not change it
        return requests.Request(
            method=method, url=f"http://{service}{path}", headers=dict(headers), data=body,
            json=json, cookies=request_cookies, auth=request_auth, params=request_params,
            hooks=hooks,
        )  # fmt: skip

    assert _outcome(lambda: prepare_request(session, request())) == _outcome(
        lambda: session.prepare_request(request())
    )


def test_the_common_call_takes_the_short_way() -> None:
    """A call with nothing to merge is not prepared by Session.prepare_request."""

    class Counting(requests.Session):
        calls = 0

        def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
            Counting.calls += 1
            return super().prepare_request(request)

    plain = requests.Session()
    plain.trust_env = False
    prepared = prepare_request(plain, requests.Request("GET", "http://svc/a b", headers={"X": "1"}))
    assert (prepared.url, prepared.headers["X"]) == ("http://svc/a%20b", "1")
    assert "Cookie" not in prepared.headers

    own = Counting()
    own.trust_env = False
    prepare_request(own, requests.Request("GET", "http://svc/"))
    assert Counting.calls == 1  # a subclass's own prepare_request is never bypassed


def test_the_url_cache_is_bounded_and_keeps_no_error() -> None:
    prepared_url.cache_clear()
    with pytest.raises(requests.exceptions.InvalidURL):
        prepared_url("http://*bad/")
    assert prepared_url.cache_info().currsize == 0
    for n in range(prepared_url.cache_info().maxsize + 10):  # type: ignore[operator]
        prepared_url(f"http://svc/{n}")
    assert prepared_url.cache_info().currsize == prepared_url.cache_info().maxsize
