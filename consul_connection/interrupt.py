"""Cut the long polls of a requests Session short, so closing a watch is prompt.

A blocking query can sit in ``recv`` for the whole wait (30 s by default), and closing a
``requests.Session`` only closes its *idle* connections. ``PollInterrupter`` keeps a
weak set of the connections checked out of the session's urllib3 pools; ``interrupt``
shuts their sockets down (the blocked read fails at once) and refuses new checkouts.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import weakref
from typing import Any

import requests
from urllib3.exceptions import ClosedPoolError


class PollInterrupter:
    """Tracks the connections a Session has in use; ``interrupt`` ends them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_use: weakref.WeakSet[Any] = weakref.WeakSet()  # under _lock
        self._interrupted = False  # under _lock

    def install(self, session: requests.Session) -> None:
        """Track every pool that ``session``'s adapters create from now on."""
        for adapter in {id(a): a for a in session.adapters.values()}.values():
            manager = getattr(adapter, "poolmanager", None)
            if manager is None:
                continue
            manager.clear()  # pools made before us are not tracked: drop them
            manager.pool_classes_by_scheme = {
                scheme: self._tracked(cls) for scheme, cls in manager.pool_classes_by_scheme.items()
            }

    def interrupt(self) -> None:
        """Shut down every connection in use and refuse new ones (idempotent)."""
        with self._lock:
            self._interrupted = True
            connections = list(self._in_use)
        for conn in connections:
            sock = getattr(conn, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _checked_out(self, pool: Any, conn: Any) -> None:
        with self._lock:
            if self._interrupted:
                conn.close()
                raise ClosedPoolError(pool, "the Consul client is closed")
            self._in_use.add(conn)

    def _returned(self, conn: Any) -> None:
        with self._lock:
            self._in_use.discard(conn)

    def _tracked(self, base: type) -> type:
        tracker = self

        class TrackedPool(base):  # type: ignore[misc, valid-type]
            def _get_conn(self, timeout: float | None = None) -> Any:
                conn = super()._get_conn(timeout)
                tracker._checked_out(self, conn)
                return conn

            def _put_conn(self, conn: Any) -> None:
                if conn is not None:
                    tracker._returned(conn)
                super()._put_conn(conn)

        TrackedPool.__name__ = f"Tracked{base.__name__}"
        return TrackedPool
