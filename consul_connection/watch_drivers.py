"""The two drivers of a ``WatchState``: an asyncio task, and a thread (blocking send).

The discovery sources drive every watch as a ``WatchTask`` (the threaded
``ConsulSource`` on its process loop, ``consul_connection.loop_thread``); ``WatchThread``
remains for watches whose owner does its I/O with a blocking ``send`` of its own (the
config client's KV watch).

Both do only the I/O around the rules of ``consul_connection.watch``: begin a poll, run
the resource's exchange with their ``send`` (``consul_connection.sending``), and hand the
outcome back; then sleep (``Event.wait`` / ``asyncio.sleep``) for what the rules said.
A poll cut short because its owner is closing the watch is *not* an outage: it reaches
no rule, is logged at debug at most, and marks nothing stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from consul_discovery.connection.exchange import (
    AsyncSend,
    Send,
    TransportError,
    TransportFailure,
    arun,
    run,
)
from consul_discovery.connection.watch import WatchState

log = logging.getLogger(__name__)


def poll_once(
    state: WatchState[Any, Any], send: Send, closing: Callable[[], bool] = lambda: False
) -> float | None:
    """One poll with a blocking ``send``; seconds to wait before the next (None: stop).

    ``closing()`` true when the poll fails means its owner cut it short: stop quietly.
    """
    poll = state.begin()
    try:
        answer = run(state.resource.exchange(poll), send)
    except TransportError as exc:
        if closing() or exc.kind is TransportFailure.CLOSED:
            log.debug("watch of %s closed during a poll", state.resource.name)
            return None
        return state.on_transport_error(exc)
    except Exception as exc:  # any failure: the loop must survive it
        if closing():
            log.debug("watch of %s closed during a poll: %r", state.resource.name, exc)
            return None
        return state.on_error(exc)
    return state.on_answer(answer)


async def apoll_once(state: WatchState[Any, Any], send: AsyncSend) -> float | None:
    """One poll with an awaitable ``send`` (cancellation propagates: that is closing)."""
    poll = state.begin()
    try:
        answer = await arun(state.resource.exchange(poll), send)
    except TransportError as exc:
        if exc.kind is TransportFailure.CLOSED:
            return None
        return state.on_transport_error(exc)
    except Exception as exc:  # any failure but cancellation: the loop must survive it
        return state.on_error(exc)
    return state.on_answer(answer)


class WatchThread:
    """Drives one WatchState on its own daemon thread around a blocking ``send``.

    ``stop`` ends the loop (the owner also interrupts the poll in flight, e.g.
    ``SessionSender.interrupt``); ``finished`` is true when the watch stopped itself
    (``unresolved_ttl``). ``sleep`` is injectable (default: wait on the stop event).
    """

    def __init__(
        self,
        state: WatchState[Any, Any],
        send: Send,
        *,
        name: str,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.state = state
        self.name = name
        self._send = send  # replaced by restart_in_child only
        self._sleep = sleep
        self._stop = threading.Event()  # set by any thread, read by the driver thread
        self._thread: threading.Thread | None = None  # the owner's thread starts/replaces it
        self._ended = False  # written by the driver thread when the watch stops itself

    @property
    def finished(self) -> bool:
        """True when the watch stopped itself (its owner starts a new one if asked)."""
        return self._ended

    @property
    def alive(self) -> bool:
        """True while the driver thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> WatchThread:
        """Start the driver thread (no I/O on the caller's thread)."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the loop to end after the poll in flight (interrupt that poll to be prompt)."""
        self._stop.set()

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the driver thread (not from the thread itself)."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, timeout))

    def restart_in_child(self, send: Send) -> None:
        """In a forked child (no thread of the parent's survives): go on with ``send``."""
        self._send = send
        self.state.after_fork()
        if self._stop.is_set() or self._ended:
            return
        self._stop = threading.Event()
        self.start()

    def _run(self) -> None:
        stop = self._stop
        pause = self._sleep or stop.wait
        while not stop.is_set():
            delay = poll_once(self.state, self._send, stop.is_set)
            if delay is None:
                self._ended = not stop.is_set()
                return
            if delay > 0:
                pause(delay)


class WatchTask:
    """Drives one WatchState as an asyncio task around an awaitable ``send``.

    ``start()`` creates the task on the running loop; ``start_on(loop)`` schedules its
    creation there from any thread (a threaded client's watches on its process loop).
    ``aclose`` cancels it (a blocking query in flight is abandoned at once: its HTTP/2
    stream is reset, its HTTP/1.1 connection closed). ``pause`` replaces
    ``asyncio.sleep`` between polls (e.g. an injected blocking sleep run on a thread);
    ``on_outcome(state)`` is called on the loop after every poll (a relay pushes what
    changed from there).
    """

    def __init__(
        self,
        state: WatchState[Any, Any],
        send: AsyncSend,
        *,
        name: str,
        pause: Callable[[float], Awaitable[object]] | None = None,
        on_outcome: Callable[[WatchState[Any, Any]], None] | None = None,
    ) -> None:
        self.state = state
        self.name = name
        self._send = send
        self._pause = pause or asyncio.sleep
        self._on_outcome = on_outcome
        self._first = asyncio.Event()  # set on the loop after the first outcome
        self._task: asyncio.Task[None] | None = None  # created on the loop
        self._ended = False  # the watch stopped itself
        self._cancelled = False  # aclose() came first: the task is never created

    @property
    def finished(self) -> bool:
        """True when the watch stopped itself, or its task ended with its event loop
        (its owner starts a new one if asked)."""
        return self._ended or (self._task is not None and self._task.done())

    @property
    def alive(self) -> bool:
        """True until the task ended (or was cancelled before it began)."""
        if self._cancelled:
            return False
        return self._task is None or not self._task.done()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The asyncio task (None before it is created)."""
        return self._task

    def start(self) -> WatchTask:
        """Create the task on the running loop."""
        self._create()
        return self

    def start_on(self, loop: asyncio.AbstractEventLoop) -> WatchTask:
        """Create the task on ``loop`` soon (from any thread; no I/O here)."""
        loop.call_soon_threadsafe(self._create)
        return self

    def _create(self) -> None:
        if self._cancelled or self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def wait_first(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the first outcome; False on timeout."""
        if self.state.first_done:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first.wait(), max(0.0, timeout))
        return self.state.first_done

    async def aclose(self) -> None:
        """Cancel the task and wait for it to end (on the task's loop)."""
        self._cancelled = True
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            delay = await apoll_once(self.state, self._send)
            if self.state.first_done:
                self._first.set()
            if self._on_outcome is not None:
                try:
                    self._on_outcome(self.state)
                except Exception:
                    log.exception("outcome listener of %s failed", self.name)
            if delay is None:
                self._ended = True
                self._first.set()
                return
            if delay > 0:
                await self._pause(delay)
