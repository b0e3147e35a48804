"""Small deterministic stand-ins for unit tests of balancing and calling.

FakeClock and a static InstanceSource replace time and Consul; ``http_backend`` runs a
tiny real HTTP server in a thread (werkzeug on 127.0.0.1:0) whose answers a test scripts.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from consul_discovery.client.instance import Instance, Resolution
from consul_discovery.client.source import Listener
from consul_discovery.client.target import Target, service_of


class FakeClock:
    """A monotonic clock that moves only when told; also usable as ``sleep``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        """Record a sleep and advance by it instead of waiting."""
        self.sleeps.append(seconds)
        self.now += seconds


def instance(n: int | str, port: int = 0, **kwargs) -> Instance:
    """An Instance ``i<n>`` of service ``svc`` on 127.0.0.1."""
    ident = n if isinstance(n, str) else f"i{n}"
    return Instance(id=ident, service="svc", address="127.0.0.1", port=port, **kwargs)


def resolution(*instances: Instance, index: int = 1, fetched_at: float = 0.0, **kw) -> Resolution:
    """A Resolution of ``svc`` holding ``instances``."""
    return Resolution("svc", tuple(instances), index=index, fetched_at=fetched_at, **kw)


class StaticSource:
    """An InstanceSource serving fixed Resolutions; ``push`` delivers a new one."""

    def __init__(self, *resolutions: Resolution) -> None:
        self.current = {r.service: r for r in resolutions}
        self.listeners: dict[str, list[Listener]] = {}
        self.resolves = 0
        self.closed = False

    def resolve(self, service: str, timeout: float = 5.0) -> Resolution:
        """The current Resolution (KeyError for an unknown service)."""
        self.resolves += 1
        return self.current[service_of(service)]

    def cached(self, service: str | Target) -> Resolution | None:
        """The current Resolution, without counting a resolve (None if unknown)."""
        return self.current.get(service_of(service))

    def subscribe(self, service: str, listener: Listener) -> None:
        """Remember ``listener`` for ``push``."""
        self.listeners.setdefault(service_of(service), []).append(listener)

    def push(self, res: Resolution) -> None:
        """Make ``res`` current and hand it to every listener of its service."""
        self.current[res.service] = res
        for listener in self.listeners.get(res.service, []):
            listener(res)

    def close(self) -> None:
        """Mark closed."""
        self.closed = True


@dataclass
class Backend:
    """A scripted in-thread HTTP server: ``handler(request) -> Response``."""

    port: int
    handler: Callable[[Request], Response]
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    @property
    def hits(self) -> int:
        """How many requests reached this backend."""
        return len(self.requests)


def ok(name: str) -> Callable[[Request], Response]:
    """A handler that answers 200 with the backend's name."""
    return lambda _req: Response(name, status=200)


def status(code: int, headers: dict[str, str] | None = None) -> Callable[[Request], Response]:
    """A handler that always answers ``code``."""
    return lambda _req: Response(f"status {code}", status=code, headers=headers or {})


@contextlib.contextmanager
def http_backend(handler: Callable[[Request], Response]) -> Iterator[Backend]:
    """Serve ``handler`` on 127.0.0.1:<free port> in a thread; shut down on exit."""
    backend = Backend(port=0, handler=handler)

    @Request.application
    def app(request: Request) -> Response:
        backend.requests.append((request.method, request.full_path, dict(request.headers)))
        return backend.handler(request)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    backend.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield backend
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
