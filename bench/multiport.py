"""One process serving many loopback ports: a real HTTP/1.1 keep-alive server per port.

``MultiPortServer(count)`` starts ``count`` threaded HTTP servers on free 127.0.0.1
ports in this process and counts, on the server side, every accepted TCP connection and
every request; each answers ``GET /`` with its port. Benchmarks and tests use it to
stand in for many instances without many processes (``with MultiPortServer(50) as s``).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class _Counting(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, owner: MultiPortServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self):  # type: ignore[no-untyped-def]
        request = super().get_request()
        self.owner.count("connections")
        return request


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self) -> None:
        server: _Counting = self.server  # type: ignore[assignment]
        server.owner.count("requests")
        body = str(server.server_address[1]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a benchmark would otherwise print a line per request."""


class MultiPortServer:
    """``count`` keep-alive HTTP servers on loopback, with server-side counters."""

    def __init__(self, count: int) -> None:
        self._lock = threading.Lock()
        self.connections = 0  # accepted TCP connections; server threads, under _lock
        self.requests = 0  # requests served; server threads, under _lock
        self._servers = [_Counting(self) for _ in range(count)]
        self._threads = [
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            for s in self._servers
        ]

    @property
    def ports(self) -> list[int]:
        """The ports served, in start order."""
        return [s.server_address[1] for s in self._servers]

    def count(self, field: str) -> None:
        """Add one to ``field`` (``connections`` or ``requests``)."""
        with self._lock:
            setattr(self, field, getattr(self, field) + 1)

    def reset(self) -> None:
        """Zero both counters (after a warm-up)."""
        with self._lock:
            self.connections = self.requests = 0

    def __enter__(self) -> MultiPortServer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
