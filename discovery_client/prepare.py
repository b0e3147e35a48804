"""requests' request preparation for a call to a service, without the merges that change nothing.

``Session.prepare_request`` merges the request's cookies, params, auth and headers with
the session's, generically: with the requests release this library installs (2.34),
those merges check their inputs against runtime protocols (``typing``'s slow
``isinstance``), build and merge three cookie jars, and parse the URL twice more (auth
from the URL, the cookie policy's). For a typical service call (no cookies anywhere, no
auth, no params, a session that does not read the environment) all of that yields what
the request already holds, and it cost about 70 µs of the ~100 µs requests spends on a
call before any I/O on this machine: more than the whole discovery layer.

``prepare_request`` takes that case apart and runs requests' own steps (method, headers
with their validation, body, hooks) on it; the URL, a pure function of its string when
there are no params, comes from a small cache of requests' own ``prepare_url``. Anything
else (a cookie in the session's jar, auth, params, ``trust_env``, a URL with user info,
headers that are not a plain dict, a Session subclass with its own ``prepare_request``)
goes to ``Session.prepare_request`` unchanged. The result is the PreparedRequest
requests would have made: tests/discovery_client/test_prepare.py compares the two over
generated requests.
"""

from __future__ import annotations

from functools import lru_cache

import requests
from requests.cookies import RequestsCookieJar
from requests.sessions import merge_hooks
from requests.structures import CaseInsensitiveDict
from requests.utils import get_auth_from_url

URL_CACHE_SIZE = 1024  # distinct URLs kept: a miss costs requests' own prepare_url (~8 µs)


@lru_cache(maxsize=URL_CACHE_SIZE)
def prepared_url(url: str) -> tuple[str, bool]:
    """requests' preparation of ``url`` (no params), and whether it carries user info
    (basic auth requests would take from it). Invalid URLs raise requests' own error."""
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    return prepared.url, any(get_auth_from_url(prepared.url))  # type: ignore[arg-type]


def prepare_request(
    session: requests.Session, request: requests.Request
) -> requests.PreparedRequest:
    """``session.prepare_request(request)``: the same PreparedRequest, sooner when the
    session's and the request's cookies, auth and params are all empty."""
    if (
        request.cookies
        or request.auth
        or request.params
        or session.auth
        or session.params
        or session.trust_env  # netrc auth: requests' own
        or type(session).prepare_request is not requests.Session.prepare_request
        or type(request.url) is not str
        or type(request.headers) is not dict
        or type(session.headers) is not CaseInsensitiveDict
        or len(session.cookies)
    ):
        return session.prepare_request(request)
    url, has_auth = prepared_url(request.url)
    if has_auth:
        return session.prepare_request(request)
    # merge_setting(request.headers, session.headers, CaseInsensitiveDict): the request's
    # headers over the session's, and a header set to None removed
    headers = CaseInsensitiveDict(session.headers)
    if request.headers:
        headers.update(request.headers)
    for name in [name for name, value in headers.items() if value is None]:
        del headers[name]
    prepared = requests.PreparedRequest()
    prepared.prepare_method(request.method)  # upper case, as requests makes it
    prepared.url = url
    prepared.prepare_headers(headers)
    prepared._cookies = RequestsCookieJar()  # an empty jar adds no Cookie header
    prepared.prepare_body(request.data, request.files, request.json)
    prepared.prepare_hooks(merge_hooks(request.hooks, session.hooks))
    return prepared
