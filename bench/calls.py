"""Load-generator calls (``seq -> (ok, instance id)``) through ServiceClient or a plain URL."""

from __future__ import annotations

from collections.abc import Callable

import requests
from requests.adapters import HTTPAdapter

LoadCall = Callable[[int], tuple[bool, str]]


def session(pool: int = 64) -> requests.Session:
    """A keep-alive Session for a proxy path (trust_env off, like ServiceClient's)."""
    s = requests.Session()
    s.trust_env = False
    s.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=pool, max_retries=0))
    return s


def answer(response: requests.Response) -> tuple[bool, str]:
    """(ok, the instance that answered) from a backend response ``{"instance": ID}``."""
    try:
        if response.status_code != 200:
            return False, f"HTTP {response.status_code}"
        return True, str(response.json()["instance"])
    finally:
        response.close()


def via_client(client, service: str, path: str = "/") -> LoadCall:
    """GET ``path`` on ``service`` through a ServiceClient."""
    return lambda _seq: answer(client.get(service, path))


def via_url(s: requests.Session, url: str, timeout: tuple[float, float]) -> LoadCall:
    """GET ``url`` (e.g. HAProxy's frontend) through a plain Session."""
    return lambda _seq: answer(s.get(url, timeout=timeout))
