"""Run an object's method in a forked child: how watches survive ``gunicorn --preload``.

A process that forks (gunicorn's master with ``--preload``, ``multiprocessing``'s fork
start method) gives its child a copy of memory but none of its threads: a watch created
before the fork would sit dead in the child and serve a frozen answer forever, and its
locks and pooled connections are the parent's. ``after_fork_in_child(method)`` calls a
bound method in every child forked after the call, as long as its object lives (held
weakly: registering never keeps a source alive), in registration order. The method must
not do network I/O; it swaps what the parent owns (locks, sessions, clients) for fresh
ones and restarts the object's threads, or marks the object so that its next use does.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.Lock()  # guards _callbacks (replaced in the child: see _in_child)
_callbacks: list[weakref.WeakMethod[Callable[[], Any]]] = []  # under _lock


def after_fork_in_child(method: Callable[[], Any]) -> None:
    """Call the bound ``method`` in each child process forked from now on."""
    with _lock:
        _callbacks[:] = [ref for ref in _callbacks if ref() is not None]
        _callbacks.append(weakref.WeakMethod(method))  # type: ignore[arg-type]


def _in_child() -> None:
    global _lock
    _lock = threading.Lock()  # the parent's may have been held by a thread that is gone
    for ref in list(_callbacks):
        method = ref()
        if method is None:
            continue
        try:
            method()
        except Exception:  # one owner's failure must not stop the others' restart
            log.exception("restarting %r after fork failed", method)


os.register_at_fork(after_in_child=_in_child)
