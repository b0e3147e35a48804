"""A token in a URL's query never leaves a connection's session: it goes as the header.

py-consul's ``catalog.register`` puts ``?token=<secret>`` in its URL; before, that URL was
in urllib3's DEBUG log line and in requests' connection error. The session every
``ConsulConnection`` builds moves it to ``X-Consul-Token`` before the URL is used.
"""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Iterator

import pytest
import requests

from consul_discovery.connection import ConsulConnection

SECRET = "5ec7e7a1-0000-4c8b-9e61-url70ken5ec7"


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.seen.append((self.path, self.headers.get("X-Consul-Token")))
        self.send_response(200)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"true")

    do_GET = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def recorder() -> Iterator[tuple[int, list[tuple[str, str | None]]]]:
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], _Recorder.seen
    finally:
        server.shutdown()
        server.server_close()


def test_py_consul_catalog_register_sends_the_token_as_a_header_not_in_the_url(
    recorder: tuple[int, list[tuple[str, str | None]]], caplog: pytest.LogCaptureFixture
) -> None:
    port, seen = recorder
    client = ConsulConnection(host="127.0.0.1", port=port, token=SECRET).py_consul()
    with caplog.at_level(logging.DEBUG):
        client.catalog.register("node-1", "127.0.0.1")
    assert seen == [("/v1/catalog/register", SECRET)]
    assert SECRET not in caplog.text
    assert "/v1/catalog/register" in caplog.text  # urllib3's line was captured


def test_a_query_token_wins_over_the_sessions_as_consul_reads_it(
    recorder: tuple[int, list[tuple[str, str | None]]],
) -> None:
    port, seen = recorder
    session = ConsulConnection(host="127.0.0.1", port=port, token="session-token").session()
    session.get(f"http://127.0.0.1:{port}/v1/kv/a", params={"recurse": "", "token": SECRET})
    session.get(f"http://127.0.0.1:{port}/v1/kv/b?index=3&token=")
    assert seen == [("/v1/kv/a?recurse=", SECRET), ("/v1/kv/b?index=3", "session-token")]


def test_a_connection_error_does_not_quote_a_query_token() -> None:
    session = ConsulConnection(host="127.0.0.1", port=1).session()
    with pytest.raises(requests.ConnectionError) as caught:
        session.put("http://127.0.0.1:1/v1/catalog/register", params={"token": SECRET})
    assert SECRET not in str(caught.value)
    assert "/v1/catalog/register" in str(caught.value)
