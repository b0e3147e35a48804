"""HTTP/2 to one Consul agent on asyncio: every request of the process a stream of one
connection, on the ``h2`` state machine (an optional dependency: the ``http2`` extra).

Why not httpx' own HTTP/2 (httpcore 1.0): its connection is read by whichever request
holds the read lock, and that request blocks in a socket read for *its own* stream; an
answer for another stream waits in the buffer until the holder's read returns (a long
poll: up to its whole wait). And one read timeout marks the whole connection failed
(``_read_exception``), so with long polls of different waits one timeout fails them
all. Here one protocol object owns the connection and ``data_received`` hands every
frame to its stream at once, so each long poll's answer is delivered the moment Consul
sends it, whatever the other streams are doing.

``H2Connection`` (one TCP+TLS connection, ALPN ``h2``):

- the preface and our SETTINGS (no server push; a 1 MiB stream window and a 16 MiB
  connection window, so a 100+ KiB health answer flows without waiting for a window
  update); received DATA is acknowledged as it is consumed (WINDOW_UPDATE);
- ``request``: waits for the agent's first SETTINGS (so its stream limit is known before
  any stream opens), then for a stream slot when its ``SETTINGS_MAX_CONCURRENT_STREAMS``
  are all in use (Go's server allows 250), sends the headers (and a body within the
  flow-control window), and returns the whole answer; a request cancelled or timed out
  resets its stream (RST_STREAM CANCEL);
- the agent resetting a stream fails that request (``RESET``); GOAWAY, a protocol error
  or the connection's loss fail every request in flight (``RESET``; ``CLOSED`` when we
  closed it: h2 accepts no frame after a GOAWAY, so streams cannot finish on it), and
  the connection takes no new stream: the owner opens a new one on the next request;
- Consul's per-client connection limit (go-connlimit) answers a connection over the
  limit with a raw ``HTTP/1.1 429`` and a close, even after ALPN chose h2: every request
  on it gets that answer as a ``Response`` (status 429), not a protocol error.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import logging
from collections.abc import Iterable
from http.client import parse_headers

from consul_discovery.connection.aio_http1 import USER_AGENT
from consul_discovery.connection.exchange import Response, TransportError
from consul_discovery.connection.transport_errors import TransportFailure
from consul_discovery.extras import missing

try:
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions
    import h2.settings
    from hpack import NeverIndexedHeaderTuple
except ImportError as exc:  # the http2 extra; agent_transport falls back to HTTP/1.1
    raise missing("consul_discovery.connection.aio_http2", "http2", exc) from exc

STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 1 << 24
ASSUMED_MAX_STREAMS = 100  # if the agent's SETTINGS do not say (RFC 9113: at least 100)
_DEFAULT_WINDOW = 65535
#: Headers that carry a secret: sent never-indexed (RFC 7541 7.1.3: kept out of HPACK's
#: tables, and hpack's DEBUG line "Adding ..." shows SENSITIVE_REDACTED, not the value).
SECRET_HEADERS = frozenset({"x-consul-token", "authorization", "proxy-authorization"})
_ENCODED_BLOCK = "Encoded header block to %s"


class _EncodedBlockRedactor(logging.Filter):
    """hpack logs each encoded header block at DEBUG: the token in it is only Huffman
    coded (anyone can decode it), so the block is not shown."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _ENCODED_BLOCK:
            record.args = ("<not shown: it may hold the ACL token>",)
        return True


logging.getLogger("hpack.hpack").addFilter(_EncodedBlockRedactor())


def _header_field(name: str, value: str) -> tuple[str, str]:
    """One request header as h2 sends it: a secret one never-indexed (see SECRET_HEADERS)."""
    name = name.lower()
    return NeverIndexedHeaderTuple(name, value) if name in SECRET_HEADERS else (name, value)


class _Stream:
    """One request's answer as it arrives (the protocol fills it on the loop)."""

    __slots__ = ("body", "future", "headers")

    def __init__(self, future: asyncio.Future[Response]) -> None:
        self.future = future
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()


class H2Connection(asyncio.Protocol):
    """An HTTP/2 client connection: requests as streams, frames dispatched on arrival.

    Made by ``AgentTransport`` once ALPN chose ``h2`` (``attach``). ``authority`` is the
    ``:authority`` of every request (the agent's ``host:port``). Loop only.
    """

    def __init__(
        self,
        authority: str,
        *,
        stream_window: int = STREAM_WINDOW,
        connection_window: int = CONNECTION_WINDOW,
    ) -> None:
        self.authority = authority
        self._stream_window = stream_window
        self._connection_window = connection_window
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self._h2 = h2.connection.H2Connection(config)
        self.transport: asyncio.Transport | None = None  # set by connection_made
        self._streams: dict[int, _Stream] = {}  # loop only: requests awaiting their answer
        self._active = 0  # loop only: streams holding a slot
        self._max_streams = ASSUMED_MAX_STREAMS  # loop only: the agent's limit
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._window_waiters: list[asyncio.Future[None]] = []  # loop only: senders of bodies
        self._raw: bytearray | None = None  # loop only: a raw HTTP/1 answer (connlimit's 429)
        self._raw_response: Response | None = None  # loop only: that answer, parsed
        self._settings: asyncio.Event | None = None  # made on the loop: the agent's SETTINGS came
        self._first_data = True  # loop only
        self._failure: TransportError | None = None  # loop only: why no stream can finish
        self._closing = False  # loop only: we closed it (requests fail with CLOSED)
        self.answered = 0  # loop only: streams answered (for stats and tests)

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the preface and our settings."""
        self.transport = transport  # type: ignore[assignment]
        self._settings = asyncio.Event()
        self._h2.initiate_connection()
        self._h2.update_settings(
            {
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self._stream_window,
            }
        )
        if self._connection_window > _DEFAULT_WINDOW:
            self._h2.increment_flow_control_window(self._connection_window - _DEFAULT_WINDOW)
        self._flush()

    def data_received(self, data: bytes) -> None:
        """Hand every frame to its stream (or collect a raw HTTP/1 answer)."""
        if self._raw is not None:
            self._raw += data
            return
        if self._first_data:
            self._first_data = False
            if data.startswith(b"HTTP/1."):
                self._raw = bytearray(data)  # go-connlimit's 429: answered when it closes
                return
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._fail(TransportError(TransportFailure.RESET, f"HTTP/2 protocol error: {exc}"))
            return
        for event in events:
            self._handle(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail (or, for a raw HTTP/1 answer, answer) every request in flight."""
        if self._raw is not None:
            self._answer_all_raw(bytes(self._raw))
        elif self._closing:
            self._fail(TransportError(TransportFailure.CLOSED))
        else:
            why = f"connection lost: {exc}" if exc else "the agent closed the connection"
            error = TransportError(TransportFailure.RESET, why)
            if exc is not None:
                error.__cause__ = exc
            self._fail(error)

    # -- the owner's API -----------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """True while new requests may start on this connection."""
        return self._failure is None and self.transport is not None

    @property
    def in_flight(self) -> int:
        """Requests waiting for their answer (or for a slot)."""
        return len(self._streams) + len(self._slot_waiters)

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: bytes = b"",
    ) -> Response:
        """Send one request as a new stream and wait for its whole answer.

        Cancellation (a timeout, a closing watch) resets the stream. Raises
        TransportError when the connection fails first.
        """
        try:
            return await self._request(method, target, headers, body)
        except TransportError:
            if self._raw_response is not None:  # go-connlimit answered the connection
                return self._raw_response
            raise

    async def _request(
        self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> Response:
        if self._settings is not None and not self._settings.is_set():
            await self._settings.wait()
        if self._failure is not None:
            raise self._failure
        await self._slot()
        try:
            if self._failure is not None:
                raise self._failure
            loop = asyncio.get_running_loop()
            stream_id = self._h2.get_next_available_stream_id()
            stream = _Stream(loop.create_future())
            self._streams[stream_id] = stream
            fields = [
                (":method", method),
                (":scheme", "https"),
                (":authority", self.authority),
                (":path", target),
                ("user-agent", USER_AGENT),
                ("accept", "application/json"),
                *(_header_field(name, value) for name, value in headers),
            ]
            if body:
                fields.append(("content-length", str(len(body))))
            self._h2.send_headers(stream_id, fields, end_stream=not body)
            self._flush()
            try:
                if body:
                    await self._send_body(stream_id, body)
                return await stream.future
            finally:
                if self._streams.pop(stream_id, None) is not None and self._failure is None:
                    self._reset(stream_id)
        finally:
            self._release()

    def close(self) -> None:
        """Close the connection; requests in flight fail with CLOSED."""
        self._closing = True
        if self._failure is None:
            self._failure = TransportError(TransportFailure.CLOSED)
        if self.transport is not None:
            self.transport.close()
        self._fail(TransportError(TransportFailure.CLOSED))

    # -- internals -----------------------------------------------------------------------

    def _handle(self, event: h2.events.Event) -> None:
        stream = self._streams.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.ResponseReceived):
            if stream is not None:
                stream.headers = list(event.headers)  # type: ignore[arg-type]
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None and event.flow_controlled_length is not None
            if stream is not None and event.data:
                stream.body += event.data
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            if stream is not None:
                del self._streams[event.stream_id]  # type: ignore[arg-type]
                self.answered += 1
                if not stream.future.done():
                    stream.future.set_result(_response(stream))
        elif isinstance(event, h2.events.StreamReset):
            if stream is not None:
                del self._streams[event.stream_id]  # type: ignore[arg-type]
                code = _code_name(event.error_code)
                if not stream.future.done():
                    stream.future.set_exception(
                        TransportError(TransportFailure.RESET, f"stream reset by the agent: {code}")
                    )
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            changed = event.changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
            if changed is not None:
                self._max_streams = max(1, int(changed.new_value or 1))
                self._wake_slots()
            if self._settings is not None:
                self._settings.set()
        elif isinstance(event, h2.events.WindowUpdated):
            waiters, self._window_waiters = self._window_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        elif isinstance(event, h2.events.ConnectionTerminated):
            code = _code_name(event.error_code)
            self._fail(TransportError(TransportFailure.RESET, f"the agent sent GOAWAY ({code})"))

    async def _slot(self) -> None:
        if self._active < self._max_streams and not self._slot_waiters:
            self._active += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._slot_waiters.append(waiter)
        try:
            await waiter  # resolved with a slot already counted as ours
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release()  # given a slot while being cancelled: hand it on
            else:
                with contextlib.suppress(ValueError):
                    self._slot_waiters.remove(waiter)
            raise

    def _release(self) -> None:
        self._active -= 1
        self._wake_slots()

    def _wake_slots(self) -> None:
        while self._slot_waiters and self._active < self._max_streams:
            waiter = self._slot_waiters.popleft()
            if waiter.done():
                continue
            self._active += 1
            waiter.set_result(None)

    async def _send_body(self, stream_id: int, body: bytes) -> None:
        view = memoryview(body)
        while view:
            if self._failure is not None:
                raise self._failure
            window = self._h2.local_flow_control_window(stream_id)
            size = min(window, self._h2.max_outbound_frame_size, len(view))
            if size <= 0:
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._window_waiters.append(waiter)
                await waiter
                continue
            self._h2.send_data(stream_id, bytes(view[:size]))
            view = view[size:]
            self._flush()
        self._h2.end_stream(stream_id)
        self._flush()

    def _reset(self, stream_id: int) -> None:
        try:
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        except h2.exceptions.H2Error:
            return  # already closed on the h2 side
        self._flush()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, error: TransportError) -> None:
        if self._failure is None:
            self._failure = error
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            if not stream.future.done():
                stream.future.set_exception(error)
        waiters, self._slot_waiters = list(self._slot_waiters), collections.deque()
        for waiter in [*waiters, *self._window_waiters]:
            if not waiter.done():
                waiter.set_exception(error)
        self._window_waiters = []
        if self._settings is not None:
            self._settings.set()  # requests waiting for the agent's settings see the failure
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _answer_all_raw(self, raw: bytes) -> None:
        """Every request in flight gets the raw HTTP/1 answer (connlimit's 429)."""
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line, _, rest = head.partition(b"\r\n")
        parts = status_line.split(b" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 502
        headers = {k.lower(): v for k, v in parse_headers(io.BytesIO(rest + b"\r\n\r\n")).items()}
        response = self._raw_response = Response(status, headers, body)
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            if not stream.future.done():
                stream.future.set_result(response)
        self._fail(TransportError(TransportFailure.RESET, f"raw HTTP/1 answer {status}"))


def _response(stream: _Stream) -> Response:
    status = 0
    headers: dict[str, str] = {}
    for name, value in stream.headers:
        if name == ":status":
            status = int(value)
        elif not name.startswith(":"):
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return Response(status, headers, bytes(stream.body))


def _code_name(code: object) -> str:
    try:
        return h2.errors.ErrorCodes(code).name  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return str(code)
