"""DiscoveryAdapter: let an existing requests.Session call ``http://user-service/...``.

Mount it once and keep the rest of the code unchanged::

    client = ServiceClient("127.0.0.1:8500")
    session = requests.Session()
    session.mount("http://", DiscoveryAdapter(client))
    session.get("http://user-service/users/42")      # through discovery
    session.get("http://example.com/")               # a plain HTTPAdapter

A URL goes through discovery when its scheme is ``http``, it names no port, and its
host is a service name (discovery_client/routing.py): one of ``services`` when given,
otherwise one of the client's configured ``services`` or any single-label host name
other than ``localhost``. Everything else goes to
``fallback`` (a normal HTTPAdapter by default). To route only chosen names, mount per
prefix instead: ``session.mount("http://user-service/", DiscoveryAdapter(client))``
(the trailing slash keeps ``http://user-service.example.com`` out).

Discovery errors surface as ``requests.ConnectionError`` (the DiscoveryError chained as
``__cause__``) so code written against requests keeps its ``except`` clauses. A
response's ``url`` and ``request`` are the logical ones (``http://user-service/...``),
so relative redirects stay within discovery.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter, HTTPAdapter

from consul_discovery.client.client import ServiceClient
from consul_discovery.client.errors import DiscoveryError
from consul_discovery.client.routing import service_for


class DiscoveryAdapter(BaseAdapter):
    """A requests transport adapter that sends service-named URLs through a ServiceClient."""

    def __init__(
        self,
        client: ServiceClient,
        services: Iterable[str] | None = None,
        *,
        fallback: BaseAdapter | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.only: frozenset[str] | None = None if services is None else frozenset(services)
        self.fallback = fallback if fallback is not None else HTTPAdapter()

    def service_for(self, url: str) -> str | None:
        """The service a URL names, or None when it should go to the fallback adapter."""
        parts = urlsplit(url)
        return service_for(
            parts.scheme, parts.hostname, parts.port, only=self.only, known=self.client.services
        )

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        """Send through discovery if the host is a service name, else through ``fallback``."""
        service = self.service_for(request.url or "")
        if service is None:
            return self.fallback.send(
                request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies
            )
        try:
            response = self.client.send(
                service,
                request,
                timeout=timeout,
                stream=stream,
                verify=verify,
                cert=cert,
                allow_redirects=False,  # the outer Session follows redirects itself
            )
        except DiscoveryError as exc:
            raise requests.ConnectionError(str(exc), request=request) from exc
        response.url = request.url or response.url
        response.request = request
        response.connection = self
        return response

    def close(self) -> None:
        """Close the fallback adapter (the ServiceClient belongs to its creator)."""
        self.fallback.close()
