"""A worker's side of the relay: its source's watches answered by the gunicorn master.

``RelayLink`` is one ``ConsulSource``'s connection to its master's relay (the socket
``CONSUL_DISCOVERY_RELAY`` names); each target the source is asked for becomes a
``RelayedWatch`` instead of a watch of its own: the master watches the target once for
every worker and pushes each new Resolution, first error and counter change, which the
worker's ``RelayedState`` mirrors (``value``, ``first_error``, ``wait_first``, the stats)
exactly as a direct watch's ``WatchState`` would show them. Listeners are called on the
worker's loop thread, as a direct watch calls them.

When the relay cannot be reached, refuses this worker (another ACL token or agent), or
goes away (the master died or restarted), the link says so once and hands every target
back to its source (``on_gone``), which watches them itself from then on, starting from
the last Resolution relayed. A ``resolve`` waiting at that moment follows the new watch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from consul_discovery.client.instance import Resolution
from consul_discovery.client.relay_protocol import (
    RelayProtocolError,
    apply_refresh,
    decode_error,
    decode_resolution,
    encode_key,
    encode_resolution,
    line,
    parse,
    token_proof,
)
from consul_discovery.client.source import WatchKey
from consul_discovery.connection.loop_thread import LoopThread
from consul_discovery.connection.settings import ConsulConnection
from consul_discovery.connection.throttle import RateLimited
from consul_discovery.connection.watch import WatchState

log = logging.getLogger(__name__)

_TOUCH_EVERY = 1.0  # seconds: how often an unresolved target's "still wanted" is relayed
_HANDSHAKE_TIMEOUT = 10.0  # a master busy starting its app answers late; resolve waits meanwhile


class RelayedState:
    """A target's watch as the master relays it: the read side of a ``WatchState``.

    The link's reader (the loop thread) writes; any thread reads. After ``redirect``
    (the relay is gone) every read goes to the direct watch that replaced it.
    """

    def __init__(self, key: WatchKey, touch: Callable[..., None]) -> None:
        self.key = key
        # touch(key, pin=, stand_in=): asks the master again; pinned: for good, and the
        # master's watch remembers the stand-in callers hold (self-preservation)
        self._touch = touch
        self._pinned = False  # any thread (a bool store): pin() was called
        self._stand_in: Resolution | None = None  # any thread (one store): pin()'s stand-in
        self._value: Resolution | None = None  # loop thread writes, any thread reads
        self._first_error: BaseException | None = None  # loop thread writes
        self._first = threading.Event()  # set by the loop thread: first outcome, or redirect
        self._delegate: WatchState[Any, Resolution] | None = None  # set once, by the loop
        self._stats = (0, 0, 0, 0)  # loop thread writes: requests, errors, index, 429s
        self._touched = 0.0  # any thread (a float store): when "still wanted" was last sent

    @property
    def resource(self) -> Any:
        """The query behind the watch: the direct watch's after ``redirect``, else None
        (the master's watch asks Consul; which server answered it is not relayed)."""
        return getattr(self._delegate, "resource", None)

    def now(self) -> float:
        """The clock the relayed Resolutions' ``fetched_at`` was read on."""
        return self._delegate.now() if self._delegate is not None else time.monotonic()

    @property
    def value(self) -> Resolution | None:
        """The last relayed Resolution (None until the first)."""
        return self._delegate.value if self._delegate is not None else self._value

    @property
    def first_error(self) -> BaseException | None:
        """Why the target has no Resolution yet, as the master's watch said."""
        if self._delegate is not None:
            return self._delegate.first_error
        return self._first_error

    @property
    def first_done(self) -> bool:
        """True once the first outcome came."""
        if self._delegate is not None:
            return self._delegate.first_done
        return self._first.is_set()

    @property
    def requests(self) -> int:
        """The master's watch's polls started."""
        return self._delegate.requests if self._delegate is not None else self._stats[0]

    @property
    def errors(self) -> int:
        """The master's watch's failed polls."""
        return self._delegate.errors if self._delegate is not None else self._stats[1]

    @property
    def index(self) -> int:
        """The index the master's watch sends."""
        return self._delegate.index if self._delegate is not None else self._stats[2]

    @property
    def rate_limited(self) -> int:
        """The master's watch's polls answered 429."""
        return self._delegate.rate_limited if self._delegate is not None else self._stats[3]

    def wait_first(self, timeout: float) -> bool:
        """Block until the first outcome; False on timeout (follows a redirect)."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            delegate = self._delegate
            if delegate is not None:
                return delegate.wait_first(max(0.0, deadline - time.monotonic()))
            if not self._first.wait(max(0.0, deadline - time.monotonic())):
                return False
            if self._delegate is None:
                return True

    def touch(self) -> None:
        """A caller asked for it: an unresolved target says "still wanted" (at most 1/s)."""
        delegate = self._delegate
        if delegate is not None:
            delegate.touch()
            return
        now = time.monotonic()
        if self._value is None and now - self._touched >= _TOUCH_EVERY:
            self._touched = now
            self._touch(self.key)

    def pin(self, stand_in: Resolution | None = None) -> None:
        """Callers hold ``stand_in`` (a cold-start snapshot) and will not ask again: the
        master's watch must never stop for want of a caller (nor the direct one after a
        redirect), and it remembers the stand-in for self-preservation."""
        self._stand_in = stand_in
        self._pinned = True
        delegate = self._delegate
        if delegate is not None:
            delegate.pin(stand_in)
        else:
            self._touch(self.key, pin=True, stand_in=stand_in)

    def seed(self, value: Resolution) -> None:
        """Serve ``value`` (obtained before a fork) until the relay's first answer."""
        self._value = value
        self._first.set()

    def after_fork(self) -> None:
        """In a forked child: a fresh event (set if it was)."""
        done, self._first = self._first.is_set(), threading.Event()
        if done:
            self._first.set()

    def apply(self, message: dict[str, Any]) -> Resolution | None:
        """Take one relayed message (loop thread); the new Resolution to announce, if any."""
        stats = message.get("stats")
        if isinstance(stats, list) and len(stats) == 4:
            self._stats = tuple(int(s) for s in stats)  # type: ignore[assignment]
        fresh = None
        if "error" in message:
            error = decode_error(message["error"])
            self._first_error = error
            if not isinstance(error, RateLimited):  # a 429 keeps a first resolve waiting
                self._first.set()
        if "resolution" in message:
            fresh = decode_resolution(message["resolution"], self._value)
            self._value, self._first_error = fresh, None
            self._first.set()
        elif "refresh" in message and self._value is not None:
            old = self._value
            self._value = apply_refresh(old, message["refresh"])
            if (old.stale, old.error) != (self._value.stale, self._value.error):
                fresh = self._value  # marked stale, or answering again: listeners hear it
        return fresh

    def redirect(self, state: WatchState[Any, Resolution]) -> None:
        """From now on read ``state`` (a direct watch); wake whoever waits."""
        self._delegate = state
        if self._pinned:
            state.pin(self._stand_in)
        self._first.set()


class RelayedWatch:
    """A table entry for a relayed target (what ``WatchTable`` drives)."""

    def __init__(self, state: RelayedState) -> None:
        self.state = state

    @property
    def finished(self) -> bool:
        """Never: the master keeps (or restarts) the watch while a worker asks."""
        return False

    @property
    def alive(self) -> bool:
        """Nothing of ours runs for it."""
        return False

    async def aclose(self) -> None:
        """Nothing to stop here (the link's close ends the subscription)."""


class RelayLink:
    """One source's connection to the master's relay (loop thread; see the module).

    ``on_resolution(key, resolution)`` announces a new Resolution (to the source's
    listeners); ``on_gone(reason, warn)`` hands every target back to the source.
    """

    def __init__(
        self,
        path: str,
        connection: ConsulConnection,
        loop: LoopThread,
        *,
        on_resolution: Callable[[WatchKey, Resolution], None],
        on_gone: Callable[[str, bool], None],
        on_chain: Callable[[str, str], None] | None = None,
    ) -> None:
        self.path = path
        self._connection = connection
        self._loop = loop
        self._on_resolution = on_resolution
        self._on_gone = on_gone
        self._on_chain = on_chain  # (service, chain body), on the loop thread
        self._chain_ids: dict[int, str] = {}  # loop thread only: chain watch id -> service
        self.usable = True  # written by the loop thread (and close), read by any thread
        self._next_id = 0  # under _lock
        self._lock = threading.Lock()  # guards _ids and _next_id (callers' threads)
        self._ids: dict[WatchKey, int] = {}  # under _lock
        self._states: dict[int, RelayedState] = {}  # loop thread only
        self._writer: asyncio.StreamWriter | None = None  # loop thread only
        self._connecting: asyncio.Task[bool] | None = None  # loop thread only
        self._reader: asyncio.Task[None] | None = None  # loop thread only
        self.master_pid: int | None = None  # loop thread writes: the relay's process

    def watch(self, key: WatchKey) -> RelayedWatch:
        """A relayed watch of ``key`` (no I/O here: the ask is sent from the loop)."""
        state = RelayedState(key, self.touch)
        with self._lock:
            self._next_id += 1
            watch_id = self._ids[key] = self._next_id
        self._loop.call(self._ask, watch_id, key, state)
        return RelayedWatch(state)

    def watch_chain(self, service: str) -> None:
        """Follow ``service``'s discovery chain through the master (no I/O here): each new
        chain's body goes to ``on_chain``."""
        with self._lock:
            self._next_id += 1
            watch_id = self._next_id
        self._loop.call(self._ask_chain, watch_id, service)

    def touch(self, key: WatchKey, pin: bool = False, stand_in: Resolution | None = None) -> None:
        """Say again that ``key`` is wanted (keeps an unresolved watch alive; ``pin``: for
        good, whether or not anyone asks again, with the ``stand_in`` its callers hold)."""
        with self._lock:
            watch_id = self._ids.get(key)
        if watch_id is not None:
            self._loop.call(self._ask, watch_id, key, None, pin, stand_in)

    def close(self) -> None:
        """Stop using the relay, without handing anything back (the source is closing)."""
        self.usable = False
        self._loop.call(self._shut)

    # -- loop thread -------------------------------------------------------------------

    def _ask(
        self,
        watch_id: int,
        key: WatchKey,
        state: RelayedState | None,
        pin: bool = False,
        stand_in: Resolution | None = None,
    ) -> None:
        if state is not None:
            self._states[watch_id] = state
        if not self.usable:
            self._on_gone("", False)  # a target asked for while the link went: hand it back
            return
        message: dict[str, Any] = {"watch": watch_id, "key": encode_key(key)}
        if pin:
            message["pin"] = True
            if stand_in is not None:
                message["stand_in"] = encode_resolution(stand_in)
        ask = line(message)
        asyncio.get_running_loop().create_task(self._send(ask))

    def _ask_chain(self, watch_id: int, service: str) -> None:
        self._chain_ids[watch_id] = service
        if not self.usable:
            return  # the source, told the relay is gone, follows its chains itself
        ask = line({"chain_watch": watch_id, "service": service})
        asyncio.get_running_loop().create_task(self._send(ask))

    async def _send(self, data: bytes) -> None:
        if not await self._connected():
            return
        assert self._writer is not None
        self._writer.write(data)

    async def _connected(self) -> bool:
        if self._writer is not None and not self._writer.is_closing():
            return True
        if not self.usable:
            return False
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> bool:
        try:
            async with asyncio.timeout(_HANDSHAKE_TIMEOUT):
                reader, writer = await asyncio.open_unix_connection(self.path, limit=1 << 24)
                hello = parse(await reader.readline())
                self.master_pid = int(hello.get("pid", 0)) or None
                proof = token_proof(str(hello["salt"]), self._connection.token)
                writer.write(line({"auth": proof, "address": self._connection.base_url}))
                answer = parse(await reader.readline())
        except (OSError, TimeoutError, KeyError, ValueError, RelayProtocolError) as exc:
            self._gone(f"cannot reach the relay at {self.path}: {exc!r}", warn=True)
            return False
        if not answer.get("ok"):
            writer.close()
            why = answer.get("refused", "refused")
            self._gone(f"the gunicorn master's relay refused this worker: {why}", warn=False)
            return False
        self._writer = writer
        self._reader = asyncio.get_running_loop().create_task(self._read(reader))
        return True

    async def _read(self, reader: asyncio.StreamReader) -> None:
        why = "the relay closed the connection (the gunicorn master exited or restarted)"
        try:
            while raw := await reader.readline():
                message = parse(raw)
                if "chain" in message:
                    service = self._chain_ids.get(int(message.get("id", 0)))
                    if service is not None and self._on_chain is not None:
                        self._on_chain(service, str(message["chain"]))
                    continue
                state = self._states.get(int(message.get("id", 0)))
                if state is None:
                    continue
                fresh = state.apply(message)
                if fresh is not None:
                    self._on_resolution(state.key, fresh)
        except (OSError, ValueError, RelayProtocolError) as exc:
            why = f"the relay connection failed: {exc!r}"
        except asyncio.CancelledError:
            return
        self._gone(why, warn=True)

    def _gone(self, reason: str, *, warn: bool) -> None:
        if not self.usable:
            return
        self.usable = False
        self._shut()
        self._on_gone(reason, warn)

    def _shut(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()


def relay_path(environ: dict[str, str] | None = None) -> str | None:
    """The relay socket the gunicorn master advertises, if any (and it exists)."""
    from consul_discovery.client.relay_protocol import RELAY_ENV

    path = (os.environ if environ is None else environ).get(RELAY_ENV, "").strip()
    return path or None
