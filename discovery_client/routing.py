"""Which URLs name a service: the one routing rule of the requests adapter and httpx transports.

A URL goes through discovery when its scheme is ``http``, it names no port, and its
host is a service name: one of ``only`` when given, otherwise one of the ``known``
(configured) services or any single-label host name other than ``localhost`` (Consul
service names are DNS labels; ordinary hosts have dots).
"""

from __future__ import annotations

import re
from collections.abc import Container

_SERVICE_LABEL = re.compile(r"^[A-Za-z0-9_-]+$")


def service_for(
    scheme: str,
    host: str | None,
    port: int | None,
    *,
    only: Container[str] | None,
    known: Container[str],
) -> str | None:
    """The service a URL's parts name, or None when it is an ordinary address."""
    if scheme != "http" or not host or port is not None:
        return None
    if only is not None:
        return host if host in only else None
    if host in known:
        return host
    if host != "localhost" and _SERVICE_LABEL.match(host):
        return host
    return None
