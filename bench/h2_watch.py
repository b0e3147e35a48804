"""Prototypes measured by ``conn_budget``: HTTP/2 long polls and a per-process relay.

``H2Source`` is the discovery client's own watch (``ServiceWatch``: the WatchState rules,
entries turned into values by ``health_entries``) with its blocking queries sent as
streams of one HTTP/2 connection (``H2Protocol``, on the ``h2`` state machine): every
watch of the process shares one TCP connection to the agent's HTTPS API. It is a bench
prototype of what part 2 builds into the sources, not a library class (no token, no
ACL-filter or unknown-service check, no prompt close of in-flight polls).

``Relay`` is the prototype of "one watch per process shared by its workers": the
process's one source pushes each new instance set, as a JSON line, down a socket per
worker (a ``socketpair``; a gunicorn master would hand workers a Unix socket), and each
worker's reader thread decodes it. The cost measured is the real IPC: a syscall and a
JSON encode per worker, a wake-up and a decode in each.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx

from consul_discovery.client.health_entries import build_resolution, instances_from_entries
from consul_discovery.client.instance import Instance, Resolution
from consul_discovery.client.watch import ServiceWatch
from consul_discovery.connection.blocking import WatchTiming

Listener = Callable[[Resolution], None]


class H2Protocol(asyncio.Protocol):
    """A minimal HTTP/2 client connection: GETs as streams, one reader (prototype).

    Every frame the agent sends is handled in ``data_received`` on the event loop and
    completes its stream's future at once. httpcore (httpx' HTTP/2) instead lets the
    request that holds its read lock block in a socket read while another stream's
    answer waits behind it: measured here, a long poll's answer arrived seconds late or
    only when the wait ended, sync (threads) and asyncio alike.
    """

    def __init__(self, authority: str) -> None:
        self._authority = authority
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.transport: asyncio.Transport | None = None  # loop thread only
        self._streams: dict[int, tuple[asyncio.Future[Any], list[Any], bytearray]] = {}
        self.closed = False  # loop thread only

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the connection preface."""
        self.transport = transport  # type: ignore[assignment]
        self._h2.initiate_connection()
        self._flush()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    async def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """One GET on a new stream: (status, headers, body)."""
        if self.closed:
            raise ConnectionError("HTTP/2 connection closed")
        sid = self._h2.get_next_available_stream_id()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._streams[sid] = (future, [], bytearray())
        headers = [(":method", "GET"), (":scheme", "https"), (":authority", self._authority)]
        self._h2.send_headers(sid, [*headers, (":path", path)], end_stream=True)
        self._flush()
        try:
            return await future
        finally:
            if self._streams.pop(sid, None) is not None and not self.closed:
                self._h2.reset_stream(sid)  # abandoned (timeout/cancel): tell the agent
                self._flush()

    def data_received(self, data: bytes) -> None:
        """Dispatch every event to its stream."""
        for event in self._h2.receive_data(data):
            stream = self._streams.get(getattr(event, "stream_id", 0) or 0)
            if isinstance(event, h2.events.ResponseReceived) and stream:
                stream[1].extend(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if stream:
                    stream[2].extend(event.data)
            elif isinstance(event, h2.events.StreamEnded) and stream:
                sid = event.stream_id
                del self._streams[sid]
                headers = dict(stream[1])
                status = int(headers.pop(":status"))
                if not stream[0].done():
                    stream[0].set_result((status, headers, bytes(stream[2])))
            elif isinstance(event, h2.events.StreamReset) and stream:
                del self._streams[event.stream_id]
                stream[0].set_exception(ConnectionError(f"stream reset: {event.error_code}"))
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.connection_lost(ConnectionError(f"GOAWAY {event.error_code}"))
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail every stream in flight."""
        self.closed = True
        for future, _, _ in self._streams.values():
            if not future.done():
                future.set_exception(exc or ConnectionError("HTTP/2 connection closed"))
        self._streams.clear()


class H2Source:
    """The process's watches, every long poll a stream of one HTTP/2 connection (prototype).

    The watch rules are the library's ``ServiceWatch`` on a thread per service, as in
    ``ConsulSource``; each fetch is a coroutine on one event-loop thread that owns the
    connection (``H2Protocol``), reconnecting when it was lost.
    """

    def __init__(self, base_url: str, ca_file: str, *, wait: float = 30.0) -> None:
        url = httpx.URL(base_url)
        self._host, self._port = url.host, url.port or 443
        self._context = ssl.create_default_context(cafile=ca_file)
        self._context.set_alpn_protocols(["h2"])
        self._timing = WatchTiming(wait=wait)
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self._protocol: H2Protocol | None = None  # loop thread only
        self._connect_lock = asyncio.Lock()  # loop thread only
        self._lock = threading.Lock()
        self._watches: dict[str, ServiceWatch] = {}  # any thread, under _lock
        self._listeners: dict[str, list[Listener]] = {}  # any thread, under _lock
        self._stop = threading.Event()

    async def _get(self, path: str, timeout: float) -> tuple[int, dict[str, str], bytes]:
        async with self._connect_lock:  # one connection, however many watches ask at once
            if self._protocol is None or self._protocol.closed:
                authority = f"{self._host}:{self._port}"
                _, self._protocol = await self._loop.create_connection(
                    lambda: H2Protocol(authority), self._host, self._port, ssl=self._context
                )
            protocol = self._protocol
        return await asyncio.wait_for(protocol.get(path), timeout)

    def _fetch(
        self, service: str, index: int, wait: float
    ) -> tuple[int | None, Sequence[Instance]]:
        query = f"wait={max(1, round(wait * 1000))}ms" + (f"&index={index}" if index else "")
        timeout = 10 + wait * 17 / 16
        status, headers, body = asyncio.run_coroutine_threadsafe(
            self._get(f"/v1/health/service/{service}?{query}", timeout), self._loop
        ).result(timeout + 1)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:100]!r}")
        raw = headers.get("x-consul-index", "")
        return (int(raw) if raw.isdigit() else None), instances_from_entries(json.loads(body))

    def resolve(self, service: str, timeout: float = 5.0) -> Resolution:
        """Start the service's watch (first call) and wait for its first answer."""
        with self._lock:
            watch = self._watches.get(service)
            if watch is None:
                watch = self._watches[service] = self._start(service)
        watch.wait_first(timeout)
        if watch.resolution is None:
            raise RuntimeError(f"{service}: {watch.first_error!r}")
        return watch.resolution

    def _start(self, service: str) -> ServiceWatch:
        def build(registered: Sequence[Instance], index: int, now: float) -> Resolution:
            return build_resolution(service, registered, index, now, 0.0)

        watch = ServiceWatch(
            service,
            lambda index, wait: self._fetch(service, index, wait),
            build,
            lambda res: self._notify(service, res),
            timing=self._timing,
            clock=time.monotonic,
            rng=random.Random(),
        )
        threading.Thread(target=watch.run, args=(self._stop,), daemon=True).start()
        return watch

    def subscribe(self, service: str, listener: Listener) -> None:
        """Call ``listener`` with each new Resolution (once now if already resolved)."""
        with self._lock:
            self._listeners.setdefault(service, []).append(listener)
            watch = self._watches.get(service)
        if watch is not None and watch.resolution is not None:
            listener(watch.resolution)

    def _notify(self, service: str, resolution: Resolution) -> None:
        with self._lock:
            listeners = list(self._listeners.get(service, ()))
        for listener in listeners:
            listener(resolution)

    def watch_stats(self, service: str) -> dict[str, int]:
        """Requests and errors of the service's watch."""
        with self._lock:
            watch = self._watches.get(service)
        return {"requests": watch.requests, "errors": watch.errors} if watch else {}

    def close(self) -> None:
        """Stop the watch loops and close the connection (in-flight polls fail at once)."""
        self._stop.set()

        def shut() -> None:
            if self._protocol is not None and self._protocol.transport is not None:
                self._protocol.transport.close()
            self._loop.call_later(0.2, self._loop.stop)

        self._loop.call_soon_threadsafe(shut)


class Relay:
    """Fan one process's instance sets out to ``workers`` reader threads over sockets."""

    def __init__(
        self, workers: int, on_set: Callable[[int, str, frozenset[str], float], None]
    ) -> None:
        self._pairs = [socket.socketpair() for _ in range(workers)]
        self._send_lock = threading.Lock()  # one writer at a time per socket
        self._on_set = on_set
        for worker, (_, theirs) in enumerate(self._pairs):
            threading.Thread(target=self._read, args=(worker, theirs), daemon=True).start()

    def publish(self, resolution: Resolution) -> None:
        """Source listener: send the set (service, instance ids) to every worker."""
        ids = [i.id for i in resolution.instances]
        line = json.dumps({"service": resolution.service, "ids": ids, "t": time.monotonic()})
        data = (line + "\n").encode()
        with self._send_lock:
            for ours, _ in self._pairs:
                ours.sendall(data)

    def _read(self, worker: int, sock: socket.socket) -> None:
        with sock.makefile("r", encoding="utf-8") as lines:
            for line in lines:
                message = json.loads(line)
                self._on_set(worker, message["service"], frozenset(message["ids"]), message["t"])
