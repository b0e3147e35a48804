"""A scripted TLS HTTP/2 server on loopback, for the HTTP/2 transport's edge cases.

Real Consul agents cover the common path (tests/consul_connection/test_http2_agent.py);
what an agent will not do on demand is here: lower ``SETTINGS_MAX_CONCURRENT_STREAMS``,
answers larger than the client's flow-control windows, GOAWAY or a dropped connection
while streams are in flight, a stream that never answers, and go-connlimit's raw
``HTTP/1.1 429`` after ALPN chose h2. The server runs on its own thread's event loop
(the ``h2`` library, server side) and records what it saw. Mutable fields are written
by that loop and read by the test thread (lists and counters: single stores).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings

RAW_429 = (
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\n\r\n"
    b"Your IP is issuing too many concurrent connections, please rate limit your calls\n"
)


@dataclass(frozen=True)
class Answer:
    """What to answer a request with; ``hold`` never answers (the client must give up)."""

    status: int = 200
    body: bytes = b"[]"
    headers: tuple[tuple[str, str], ...] = (("x-consul-index", "7"),)
    delay: float = 0.0
    hold: bool = False


Handler = Callable[[dict[str, str]], Answer]


@dataclass
class H2TestServer:
    """Serve ``handler``'s answers over TLS + HTTP/2 on 127.0.0.1 (see the module)."""

    cert: Path
    key: Path
    handler: Handler = lambda _headers: Answer()
    max_streams: int = 100
    raw_429: bool = False  # answer every connection with go-connlimit's raw 429
    client_ca: Path | None = None  # require a client certificate signed by this CA
    requests: list[dict[str, str]] = field(default_factory=list)  # loop writes
    resets: list[int] = field(default_factory=list)  # loop writes: streams the client reset
    connections: int = 0  # loop writes: connections accepted
    most_open: int = 0  # loop writes: most streams open at once on one connection
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _protocols: list[_Connection] = field(default_factory=list)  # loop only

    def start(self) -> H2TestServer:
        """Listen on a free port (returns once it does)."""
        ready = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.cert, self.key)
            context.set_alpn_protocols(["h2"])
            if self.client_ca is not None:
                context.load_verify_locations(self.client_ca)
                context.verify_mode = ssl.CERT_REQUIRED
            server = loop.run_until_complete(
                loop.create_server(lambda: _Connection(self), "127.0.0.1", 0, ssl=context)
            )
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            server.close()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)
        return self

    def call(self, action: Callable[[], object]) -> None:
        """Run ``action`` on the server's loop and wait for it."""
        assert self._loop is not None
        done = threading.Event()

        def run() -> None:
            try:
                action()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(5)

    def goaway(self) -> None:
        """Send GOAWAY on every connection (streams in flight never get their answer)."""
        self.call(lambda: [p.goaway() for p in list(self._protocols)])

    def drop(self) -> None:
        """Close every connection abruptly."""
        self.call(lambda: [p.transport.abort() for p in list(self._protocols) if p.transport])

    def stop(self) -> None:
        """Stop the loop (connections die with it)."""
        if self._loop is not None:
            self.drop()
            self._loop.call_soon_threadsafe(self._loop.stop)


class _Connection(asyncio.Protocol):
    def __init__(self, server: H2TestServer) -> None:
        self.server = server
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, dict[str, str]] = {}
        self.open = 0
        self.windows: dict[int, asyncio.Event] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections += 1
        if self.server.raw_429:
            self.transport.write(RAW_429)
            self.transport.close()
            return
        self.server._protocols.append(self)
        codes = h2.settings.SettingCodes
        self.h2.local_settings = h2.settings.Settings(  # in the first SETTINGS frame
            client=False,
            initial_values={
                codes.MAX_CONCURRENT_STREAMS: self.server.max_streams,
                codes.MAX_HEADER_LIST_SIZE: self.h2.DEFAULT_MAX_HEADER_LIST_SIZE,
            },
        )
        self.h2.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.server._protocols:
            self.server._protocols.remove(self)

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def goaway(self) -> None:
        self.h2.close_connection()
        self.flush()

    def data_received(self, data: bytes) -> None:
        if self.server.raw_429:
            return
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                headers = {_text(k): _text(v) for k, v in event.headers}
                self.server.requests.append(headers)
                self.streams[event.stream_id] = headers
                self.open += 1
                self.server.most_open = max(self.server.most_open, self.open)
                if event.stream_ended:
                    asyncio.get_running_loop().create_task(self.answer(event.stream_id, headers))
            elif isinstance(event, h2.events.DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                headers = self.streams.get(event.stream_id)
                if headers is not None and headers.get(":method") != "GET":
                    asyncio.get_running_loop().create_task(self.answer(event.stream_id, headers))
            elif isinstance(event, h2.events.StreamReset):
                self.server.resets.append(event.stream_id)
                self.close_stream(event.stream_id)
            elif isinstance(event, h2.events.WindowUpdated):
                for waiter in self.windows.values():
                    waiter.set()
        self.flush()

    def close_stream(self, stream_id: int) -> None:
        if self.streams.pop(stream_id, None) is not None:
            self.open -= 1

    async def answer(self, stream_id: int, headers: dict[str, str]) -> None:
        answer = self.server.handler(headers)
        if answer.hold:
            return
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if stream_id not in self.streams:
            return
        fields = [(":status", str(answer.status)), *answer.headers]
        self.h2.send_headers(stream_id, fields, end_stream=not answer.body)
        self.flush()
        body = answer.body
        while body and stream_id in self.streams:
            window = self.h2.local_flow_control_window(stream_id)
            size = min(window, self.h2.max_outbound_frame_size, len(body))
            if size <= 0:
                waiter = self.windows[stream_id] = asyncio.Event()
                await waiter.wait()
                continue
            end = size == len(body)
            self.h2.send_data(stream_id, body[:size], end_stream=end)
            body = body[size:]
            self.flush()
        self.windows.pop(stream_id, None)
        self.close_stream(stream_id)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
