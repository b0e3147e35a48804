"""Which URLs name a service: the one routing rule of the requests adapter and httpx transports.

A URL goes through discovery when its scheme is ``http``, it names no port, and its
host is a service name: one of ``only`` when given, otherwise one of the ``known``
(configured) services or any single-label host name other than ``localhost`` (Consul
service names are DNS labels; ordinary hosts have dots).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Hashable, Iterable

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


class Router:
    """``service_for`` with its answers remembered per (scheme, host, port).

    A transport asks once per request; the answer for a host never changes (``only`` and
    ``known`` are fixed for the router's life), so it is looked up in a dict, which is
    cleared rather than grown past ``max_hosts`` entries. Safe from any thread.
    """

    def __init__(
        self, only: Iterable[str] | None, known: Container[str], max_hosts: int = 1024
    ) -> None:
        self.only: frozenset[str] | None = None if only is None else frozenset(only)
        self.known = known
        self.max_hosts = max_hosts
        # (scheme, host, port) -> service or None; any thread (dict operations are atomic)
        self._seen: dict[Hashable, str | None] = {}
        #: ``seen(key, UNSEEN)``: the answer remembered under ``key`` (a shell's own key
        #: for a URL's origin: ``remember`` stores it), else ``UNSEEN`` (the dict's get).
        self.seen: Callable[[Hashable, _Unseen], str | _Unseen | None] = self._seen.get

    def service(self, scheme: str, host: str | None, port: int | None) -> str | None:
        """The service a URL's parts name, or None when it is an ordinary address."""
        key = (scheme, host, port)
        try:
            return self._seen[key]
        except KeyError:
            pass
        return self.remember(key, scheme, host, port)

    def remember(
        self, key: Hashable, scheme: str, host: str | None, port: int | None
    ) -> str | None:
        """The service a URL's parts name, remembered under ``key`` from now on."""
        found = service_for(scheme, host, port, only=self.only, known=self.known)
        if len(self._seen) >= self.max_hosts:
            self._seen.clear()
        self._seen[key] = found
        return found


class _Unseen:
    """The type of ``UNSEEN``."""


#: What ``Router.seen`` answers for a key it has no answer for.
UNSEEN = _Unseen()
