"""What the registry knows of uvicorn: the running ``Server``, where it listens, the
handlers that print its lines, and the drain put in front of its SIGTERM handler.

Used by ``consul_discovery.registry.asgi``; imports uvicorn only when asked whether it
is what serves this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from typing import Any

from consul_discovery.registry.errors import RegistryConfigError
from consul_discovery.registry.lifecycle import Lifecycle, Listener


def running_uvicorn_server() -> Any:
    """The ``uvicorn.Server`` serving this process, found through its SIGTERM handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    handler = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    try:
        from uvicorn import Server
    except ImportError:  # not installed: then uvicorn is not what serves us
        return None
    return server if isinstance(server, Server) else None


def handlers_of(logger: logging.Logger | None) -> list[logging.Handler]:
    """The handlers that print ``logger``'s lines (uvicorn puts them on "uvicorn")."""
    while logger is not None:
        if logger.handlers:
            return list(logger.handlers)
        if not logger.propagate:
            break
        logger = logger.parent
    return []


def configured_listener(server: Any) -> Listener:
    """What uvicorn is about to bind: ``--host``/``--port`` (nothing for --uds/--fd)."""
    config = server.config
    if config.uds:
        return Listener(None, (), f"uvicorn --uds {config.uds}", unix=True)
    if config.fd is not None:  # a socket handed over: what it is shows once bound
        return Listener(None, (), "uvicorn --fd")
    return Listener(config.host, (int(config.port),), "uvicorn --port")


def several_workers(server: Any) -> RegistryConfigError | None:
    """uvicorn ``--workers N`` (N > 1): every worker process would register, drain and
    deregister the one instance by itself; refused (gunicorn's master registers once)."""
    config = server.config
    workers = int(getattr(config, "workers", 1) or 1)
    if workers < 2 or getattr(config, "reload", False):  # --reload ignores --workers
        return None
    return RegistryConfigError(
        "uvicorn --workers",
        f"{workers}: each worker process would register, drain and deregister the one "
        "instance by itself (a restarted worker takes it out of Consul while the others "
        "serve): run gunicorn -c python:consul_discovery.registry.gunicorn_conf -k "
        f"uvicorn_worker.UvicornWorker --workers {workers}, whose master registers once",
    )


def bound_listener(server: Any) -> Listener:
    """Where uvicorn listens once bound (the real port, even for ``--port 0``)."""
    for listener in getattr(server, "servers", []):
        for sock in listener.sockets:
            name = sock.getsockname()
            if isinstance(name, tuple):
                return Listener(str(name[0]), (int(name[1]),), "uvicorn --port")
            if isinstance(name, str | bytes):  # AF_UNIX (--uds, or --fd of one)
                uds = server.config.uds
                option = f"uvicorn --uds {uds}" if uds else "uvicorn --fd"
                return Listener(None, (), option, unix=True)
    return configured_listener(server)


class SigtermDrain:
    """Stands between SIGTERM and uvicorn: drain first, then uvicorn's own handler.

    The signal handler only records the signal and starts a thread; that thread runs
    the lifecycle's drain (a second SIGTERM or a SIGINT cuts it short) and then calls
    uvicorn's handler on the event loop.
    """

    def __init__(self, lifecycle: Lifecycle, loop: asyncio.AbstractEventLoop) -> None:
        self._lifecycle = lifecycle
        self._loop = loop
        self._originals: dict[int, Any] = {}  # main thread only (install/uninstall)
        self._cut_short = threading.Event()  # set by a second signal
        self._draining = False  # main thread only (signal handlers run there)

    def install(self) -> None:
        """Put our handler in front of uvicorn's for SIGTERM and SIGINT."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._originals[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        """Give uvicorn its handlers back (it restores its own predecessors later)."""
        for sig, handler in self._originals.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, handler)
        self._originals.clear()

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._draining or signum != signal.SIGTERM:
            self._cut_short.set()
            self._hand_over(signum)
            return
        self._draining = True
        threading.Thread(
            target=self._lifecycle.drain_then,
            args=(lambda: self._hand_over(signum),),
            kwargs={"cut_short": self._cut_short},
            name="registry-drain",
            daemon=True,
        ).start()

    def _hand_over(self, signum: int) -> None:
        original = self._originals.get(signum)
        if callable(original):
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                self._loop.call_soon_threadsafe(original, signum, None)
