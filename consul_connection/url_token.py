"""An ACL token in a request's URL (``?token=``) moved to the ``X-Consul-Token`` header.

Our own calls never put the token in a URL, but py-consul's ``catalog.register`` does
(``/v1/catalog/register?token=...``), and a URL is what urllib3's DEBUG log line, requests'
connection errors and Consul's own access log show. Every requests Session a
``ConsulConnection`` builds (py-consul's included) sends through ``TokenHeaderAdapter``,
which takes ``token`` out of the query before anything sees the URL and sends its value
as the header instead; Consul reads the two alike (the query one first, so it wins over a
header here too).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

TOKEN_HEADER = "X-Consul-Token"
TOKEN_PARAMETER = "token"


def move_token_to_header(request: requests.PreparedRequest) -> None:
    """Take ``token`` out of ``request``'s query and set its value as the token header."""
    parts = urlsplit(request.url or "")
    if not parts.query:
        return
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    tokens = [value for name, value in pairs if name == TOKEN_PARAMETER]
    if not tokens:
        return
    kept = [(name, value) for name, value in pairs if name != TOKEN_PARAMETER]
    request.url = urlunsplit(parts._replace(query=urlencode(kept)))
    if tokens[0]:
        request.headers[TOKEN_HEADER] = tokens[0]


class TokenHeaderAdapter(HTTPAdapter):
    """An HTTPAdapter that never sends (or shows) a token in a URL: see the module."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        """``request`` with its URL's token moved to the header, sent as HTTPAdapter does."""
        move_token_to_header(request)
        return super().send(request, *args, **kwargs)
