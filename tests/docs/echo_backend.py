"""An instance of a service for README examples to call (stdlib only).

    python echo_backend.py NAME PORT

Serves 127.0.0.1:PORT until SIGTERM: every method on every path answers 200 with JSON
``{"service": NAME, "method": ..., "path": ..., "json": the request's JSON body or
null, "idempotency_key": the header or null}``; a request body that is not JSON is
echoed as ``"body"``. Tests register it in Consul themselves.
"""

from __future__ import annotations

import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def handler(name: str) -> type[BaseHTTPRequestHandler]:
    """A request handler that echoes each request as JSON."""

    class Echo(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            data: dict[str, Any] = {
                "service": name,
                "method": self.command,
                "path": self.path,
                "json": None,
                "idempotency_key": self.headers.get("Idempotency-Key"),
            }
            if raw:
                try:
                    data["json"] = json.loads(raw)
                except ValueError:
                    data["body"] = raw.decode("utf-8", "replace")
            body = b"" if self.command == "HEAD" else json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(json.dumps(data).encode())))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Echo


def main() -> None:
    """Serve until SIGTERM."""
    name, port = sys.argv[1], int(sys.argv[2])
    server = ThreadingHTTPServer(("127.0.0.1", port), handler(name))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"echo backend {name} on 127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
