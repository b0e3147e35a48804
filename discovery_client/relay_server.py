"""The gunicorn master's side of the relay: each target watched once, pushed to every worker.

``RelayServer`` serves a Unix socket (``relay.sock``, mode 0600, in a private 0700
directory made for it, both removed by ``close``) on the master's event loop, next to
the master's own ``ConsulSource`` (HTTP/2 to a TLS agent: one connection for the whole
application). A worker's source connects, proves it holds the master's ACL token and
names the same agent (else it is refused and watches by itself: the relay serves one
token's view, the master's), then asks for targets; the master starts (or keeps alive)
one watch per target, whoever asks, and after every poll of it pushes to each
subscribed worker what changed (``relay_protocol``): a new Resolution, a refresh of an
unchanged one, a first error, the counters. A worker that stops reading (its socket
buffer past ``MAX_BUFFER``) is dropped; it then watches by itself.

Only the process that started the server closes it: a forked worker inherits the object
(and its ``atexit`` hook) but never removes its master's socket. A master killed with
SIGKILL cannot remove its directory; the next relay started by the same user removes
those whose master (the pid in the directory's name) is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consul_discovery.client.consul_source import ConsulSource
from consul_discovery.client.health_entries import same_membership
from consul_discovery.client.instance import Resolution
from consul_discovery.client.relay_protocol import (
    RelayProtocolError,
    decode_key,
    decode_resolution,
    encode_error,
    encode_resolution,
    line,
    parse,
    refresh_of,
    token_proof,
)
from consul_discovery.client.source import WatchKey
from consul_discovery.client.watch import HealthState

log = logging.getLogger(__name__)

MAX_BUFFER = 16 << 20  # bytes a worker may leave unread before it is dropped
_PREFIX = "consul-discovery-relay-"
_HANDSHAKE_TIMEOUT = 5.0


@dataclass
class _Pushed:
    """What the workers of one target were last sent (loop thread only)."""

    value: Resolution | None = None
    error: BaseException | None = None
    stats: tuple[int, int, int, int] | None = None


class _Worker:
    """One connected worker (loop thread only)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def send(self, watch_id: int, payload: bytes) -> bool:
        """Write one message for ``watch_id`` (``payload`` is a line starting with '{');
        False when the worker is gone or too far behind (then it is closed)."""
        if self.writer.is_closing():
            return False
        if self.writer.transport.get_write_buffer_size() > MAX_BUFFER:
            log.warning(
                "relay: dropping a worker that stopped reading (%d bytes unread)", MAX_BUFFER
            )
            self.writer.close()
            return False
        self.writer.write(b'{"id":%d,' % watch_id + payload[1:])
        return True


class RelayServer:
    """Serve ``source``'s watches to workers over a Unix socket (see the module).

    ``directory`` is where the private directory is made (default: the system's temp).
    """

    def __init__(self, source: ConsulSource, *, directory: str | None = None) -> None:
        self.source = source
        _sweep(Path(directory or tempfile.gettempdir()))
        prefix = f"{_PREFIX}{os.getpid()}-"
        self._dir = Path(tempfile.mkdtemp(prefix=prefix, dir=directory))
        os.chmod(self._dir, 0o700)
        self.path = self._dir / "relay.sock"
        self._salt = secrets.token_hex(16)
        self._proof = token_proof(self._salt, source.connection.token)
        self._pid = os.getpid()
        self._server: asyncio.AbstractServer | None = None  # loop thread only
        self._subscribers: dict[WatchKey, dict[_Worker, int]] = {}  # loop thread only
        self._pushed: dict[WatchKey, _Pushed] = {}  # loop thread only
        self._chain_subscribers: dict[str, dict[_Worker, int]] = {}  # loop thread only
        self._workers: set[_Worker] = set()  # loop thread only
        self._closed = False  # the starting process only

    def start(self) -> RelayServer:
        """Listen (blocks until the socket is ready; not from the source's loop)."""
        self.source.observe(self._outcome)
        self.source.loop.run(self._listen(), 5.0)
        return self

    @property
    def workers(self) -> int:
        """Workers connected now."""
        return len(self._workers)

    def close(self) -> None:
        """Stop serving, drop the workers (they watch by themselves), remove the socket and
        its directory, close the master's source. Only in the process that started."""
        if self._closed or os.getpid() != self._pid:
            return
        self._closed = True
        with contextlib.suppress(TimeoutError, RuntimeError):
            self.source.loop.run(self._shut(), 2.0)
        shutil.rmtree(self._dir, ignore_errors=True)
        self.source.close()

    # -- loop thread ---------------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o600)

    async def _shut(self) -> None:
        if self._server is not None:
            self._server.close()
        for worker in list(self._workers):
            worker.writer.close()
        self._workers.clear()
        self._subscribers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        worker = _Worker(writer)
        try:
            if not await self._admit(reader, writer):
                return
            self._workers.add(worker)
            while raw := await reader.readline():
                message = parse(raw)
                if "watch" in message:
                    key = decode_key(message.get("key"))
                    pin = message.get("pin") is True
                    held = message.get("stand_in")
                    stand_in = decode_resolution(held, None) if pin and held else None
                    self._watch(worker, int(message["watch"]), key, pin, stand_in)
                elif "chain_watch" in message:
                    service = str(message.get("service") or "")
                    self._watch_chain(worker, int(message["chain_watch"]), service)
        except (OSError, TimeoutError, ValueError, RelayProtocolError) as exc:
            log.debug("relay: a worker's connection ended: %r", exc)
        finally:
            self._workers.discard(worker)
            for subscribers in self._subscribers.values():
                subscribers.pop(worker, None)
            for chain_subscribers in self._chain_subscribers.values():
                chain_subscribers.pop(worker, None)
            writer.close()

    async def _admit(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(line({"hello": 1, "pid": os.getpid(), "salt": self._salt}))
        async with asyncio.timeout(_HANDSHAKE_TIMEOUT):
            auth = parse(await reader.readline())
        why = None
        if not hmac.compare_digest(str(auth.get("auth", "")), self._proof):
            why = "another ACL token (the relay serves the master's token's view only)"
        elif auth.get("address") != self.source.connection.base_url:
            why = f"another Consul agent (the master watches {self.source.connection.base_url})"
        writer.write(line({"refused": why} if why else {"ok": True}))
        return why is None

    def _watch(
        self,
        worker: _Worker,
        watch_id: int,
        key: WatchKey,
        pin: bool = False,
        stand_in: Resolution | None = None,
    ) -> None:
        state = self.source.watch_key(key)  # starts the watch, or keeps it alive (no I/O)
        if pin and state is not None:
            # the worker serves a snapshot until this watch answers; the watch holds its
            # instances if Consul's first answer forgot them (self-preservation)
            state.pin(stand_in)
        self._subscribers.setdefault(key, {})[worker] = watch_id
        if state is not None and state.first_done:
            message = self._full(state)
            if message:
                worker.send(watch_id, line(message))

    def _watch_chain(self, worker: _Worker, watch_id: int, service: str) -> None:
        """A worker follows ``service``'s discovery chain: the master watches it once (its
        one config-entry watch, then the chain's own) and pushes each new chain's body."""
        if not service:
            return
        subscribers = self._chain_subscribers.get(service)
        if subscribers is None:
            subscribers = self._chain_subscribers[service] = {worker: watch_id}
            # Called at once if a chain is known (then every subscriber gets it), else on
            # the first; always on this loop.
            self.source.watch_chain(service, lambda _router: self._chain_changed(service))
            return
        subscribers[worker] = watch_id
        body = self.source.chain_body(service)
        if body is not None:
            worker.send(watch_id, line({"chain": body}))

    def _chain_changed(self, service: str) -> None:
        """A new chain of ``service``: its body to every worker that follows it."""
        body = self.source.chain_body(service)
        subscribers = self._chain_subscribers.get(service)
        if body is None or not subscribers:
            return
        payload = line({"chain": body})
        for worker, watch_id in list(subscribers.items()):
            if not worker.send(watch_id, payload):
                subscribers.pop(worker, None)

    def _outcome(self, key: WatchKey, state: HealthState) -> None:
        """After every poll of ``key``: push what changed to its workers."""
        subscribers = self._subscribers.get(key)
        if not subscribers:
            return
        pushed = self._pushed.setdefault(key, _Pushed())
        message: dict[str, Any] = {}
        value = state.value
        if value is not None and value is not pushed.value:
            if pushed.value is None or not same_membership(pushed.value, value):
                message["resolution"] = encode_resolution(value)
            elif refresh_of(value) != refresh_of(pushed.value):
                message["refresh"] = refresh_of(value)
            pushed.value = value
        error = state.first_error
        if value is None and error is not None and error is not pushed.error:
            message["error"] = encode_error(error)
            pushed.error = error
        stats = _stats(state)
        if stats != pushed.stats:
            message["stats"] = list(stats)
            pushed.stats = stats
        if not message:
            return
        payload = line(message)
        for worker, watch_id in list(subscribers.items()):
            if not worker.send(watch_id, payload):
                subscribers.pop(worker, None)

    def _full(self, state: HealthState) -> dict[str, Any]:
        message: dict[str, Any] = {"stats": list(_stats(state))}
        if state.value is not None:
            message["resolution"] = encode_resolution(state.value)
        elif state.first_error is not None:
            message["error"] = encode_error(state.first_error)
        return message


def _sweep(parent: Path) -> None:
    """Remove relay directories of ours whose master is gone (killed: no ``close``)."""
    try:
        candidates = list(parent.glob(f"{_PREFIX}*"))
    except OSError:
        return
    for path in candidates:
        pid_text = path.name[len(_PREFIX) :].split("-", 1)[0]
        try:
            if not pid_text.isdigit() or path.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


def _stats(state: HealthState) -> tuple[int, int, int, int]:
    return (state.requests, state.errors, state.index, state.rate_limited)
