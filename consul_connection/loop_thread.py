"""One private asyncio event loop per process, on its own daemon thread.

Every watch of a threaded client is a task on this loop (``ConsulSource``), and every
request to an agent from it shares one connection (HTTP/2) or one keep-alive pool
(HTTP/1.1): one thread wakes when Consul answers, instead of one of a hundred watch
threads contending for the GIL. ``process_loop()`` starts it on first use and again in a
forked child (a fork copies no thread: the parent's loop is dead there, and its sockets
are the parent's, so nothing of it is touched).

Whatever runs on the loop must not block it: listeners called from a watch (a
balancer's update) are short, and blocking functions a caller injects (a test's
``send`` or ``sleep``) run on an executor thread. ``LoopThread.run`` refuses to be
called from the loop's own thread (it would wait for itself).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running forever on a daemon thread named ``name``."""

    def __init__(self, name: str = "consul-discovery-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.set_exception_handler(_log_loop_error)
        self._started.set()
        self.loop.run_forever()

    @property
    def in_loop_thread(self) -> bool:
        """True when called from the loop's own thread."""
        return threading.get_ident() == self._thread.ident

    @property
    def alive(self) -> bool:
        """True while the loop's thread runs (in the process that started it)."""
        return self.pid == os.getpid() and self._thread.is_alive()

    def call(self, function: Callable[..., object], *args: Any) -> None:
        """Run ``function(*args)`` on the loop soon (from any thread, the loop's own too)."""
        self.loop.call_soon_threadsafe(function, *args)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; its result as a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the loop and wait up to ``timeout`` for its result.

        Raises TimeoutError (the coroutine is cancelled) when it takes longer, and
        RuntimeError when called from the loop's thread (it would wait for itself).
        """
        if self.in_loop_thread:
            coro.close()
            raise RuntimeError(
                "a blocking Consul call was made on the discovery event loop's thread (from "
                "a listener?): it would wait for itself; call it from another thread"
            )
        future = self.submit(coro)
        try:
            return future.result(max(0.0, timeout))
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no result within {timeout}s") from None


_lock = threading.Lock()
_lock_pid = os.getpid()
_process_loop: LoopThread | None = None  # under _lock; replaced in a forked child


def process_loop() -> LoopThread:
    """This process's loop thread, started on first use (and anew in a forked child)."""
    global _lock, _lock_pid, _process_loop
    if _lock_pid != os.getpid():  # a forked child: the parent's lock may be held for ever
        _lock, _lock_pid = threading.Lock(), os.getpid()
    with _lock:
        current = _process_loop
        if current is None or not current.alive:
            current = _process_loop = LoopThread()
        return current


_exiting = False  # set at interpreter exit: pending watches are dropped, not lost


def _at_exit() -> None:
    global _exiting
    _exiting = True


atexit.register(_at_exit)


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Exceptions nobody awaited (a task that died): logged, never fatal to the loop.

    At interpreter exit the loop's thread just stops (a daemon), and its watches' tasks
    are garbage: "destroyed but pending" is then the expected end, said at debug only.
    """
    exc = context.get("exception")
    level = logging.DEBUG if _exiting else logging.ERROR
    log.log(level, "discovery event loop: %s", context.get("message"), exc_info=exc)
