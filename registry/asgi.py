"""ASGI integration: ``/health`` plus self-registration under uvicorn, drain on SIGTERM.

FastAPI / Starlette::

    registry = ConsulRegistry()
    registry.add_check("db", db.ping)        # the same check functions as registry.flask
    app = FastAPI()
    registry.init_app(app)                   # GET /health, registration in the lifespan

Any other ASGI app: ``app = ConsulRegistry().wrap(app)`` (answers ``/health`` itself and
runs registration from the lifespan messages it passes through).

Where registration happens depends on how the app is served:

* ``uvicorn app:app``: the lifespan finds the running ``uvicorn.Server`` (its SIGTERM
  handler), registers once the listener is bound (the real port, even ``--port 0``),
  and replaces its SIGTERM handler with a drain: maintenance, keep serving for
  ``SERVICE_DRAIN_SECONDS`` (a second SIGTERM or a SIGINT cuts it short), then hand
  the signal to uvicorn, which stops accepting, finishes in-flight requests and runs
  the lifespan shutdown, which deregisters. uvicorn only runs the lifespan shutdown
  after it has closed its listener, so the drain must start from the signal.
* gunicorn with uvicorn workers (``-c python:consul_discovery.registry.gunicorn_conf -k
  uvicorn_worker.UvicornWorker``): nothing here; the master registers once and drains
  (workers are recognised as under consul_discovery.registry.flask does).
* anything else (tests, other servers): ``/health`` only; ``start_registrar`` yourself.

Check functions are the synchronous ones of ``consul_discovery.registry.health``;
``/health`` evaluates them in a worker thread so a slow check never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from consul_discovery.registry.config import Registration
from consul_discovery.registry.health import CheckFn, HealthChecks, HealthReport
from consul_discovery.registry.metrics import RegistrarMetrics
from consul_discovery.registry.registrar import Registrar
from consul_discovery.registry.servers import under_gunicorn

log = logging.getLogger("consul_discovery.registry")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: How often the lifespan looks whether uvicorn has bound its listener yet.
_BIND_POLL_SECONDS = 0.02


class ConsulRegistry:
    """ASGI counterpart of ``registry.flask.ConsulRegistry``: health route + lifecycle."""

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        health_path: str | None = None,
        **overrides: Any,
    ) -> None:
        self.checks = HealthChecks()
        self._environ = environ  # None means os.environ at start time
        env = os.environ if environ is None else environ
        self.health_path = health_path or env.get("SERVICE_HEALTH_PATH") or "/health"
        self._overrides = overrides  # Registration.from_env overrides, e.g. name=...
        self._lock = threading.Lock()
        self._registrar: Registrar | None = None  # guarded by _lock; one per registry
        self._metrics: RegistrarMetrics | None = None  # guarded by _lock; the registrar's gauges
        self._drain: _SigtermDrain | None = None  # set/cleared on the event loop only
        self._bind_task: asyncio.Task[None] | None = None  # event loop only

    @property
    def registrar(self) -> Registrar | None:
        """This registry's registrar, once it started one."""
        return self._registrar

    def add_check(self, name: str, fn: CheckFn) -> None:
        """Add a dependency check: ``fn`` returns None/True when fine, raises or False if not."""
        self.checks.add(name, fn)

    def health(self) -> HealthReport:
        """Evaluate every check now (blocking; ``/health`` runs it in a thread)."""
        return self.checks.evaluate()

    # -- wiring -------------------------------------------------------------------------

    def init_app(self, app: Any) -> None:
        """Add the health route to a Starlette/FastAPI app and chain its lifespan."""
        from starlette.requests import Request
        from starlette.responses import JSONResponse

        async def health_view(request: Request) -> JSONResponse:
            report = await asyncio.to_thread(self.health)
            return JSONResponse(report.to_json(), status_code=200 if report.passing else 503)

        app.router.add_route(self.health_path, health_view, methods=["GET"], name="health")
        inner = app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(app_: Any) -> AsyncIterator[Any]:
            async with self.lifespan(), inner(app_) as state:
                yield state

        app.router.lifespan_context = lifespan
        app.state.consul_registry = self

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """A plain ASGI app around ``app`` that serves ``/health`` and registers."""

        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "lifespan":
                await self._lifespan_protocol(app, scope, receive, send)
            elif (
                scope["type"] == "http"
                and scope["path"] == self.health_path
                and scope["method"] in ("GET", "HEAD")
            ):
                await self._send_health(scope, send)
            else:
                await app(scope, receive, send)

        return wrapped

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Register (under uvicorn) for the life of the block; deregister at its end."""
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        """Under uvicorn: register once the listener is bound and take over SIGTERM."""
        env = os.environ if self._environ is None else self._environ
        server = None if under_gunicorn(env) else _running_uvicorn_server()
        if server is not None and self._bind_task is None:
            self._bind_task = asyncio.create_task(self._register_when_bound(server))

    async def shutdown(self) -> None:
        """Give uvicorn its signal handlers back and deregister (after the drain)."""
        task, self._bind_task = self._bind_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._drain is not None:
            self._drain.uninstall()
            self._drain = None
        await asyncio.to_thread(self.stop_registrar)

    def start_registrar(self, bind: tuple[str, int] | None = None) -> Registrar:
        """Build the Registration from env and start this registry's single registrar."""
        with self._lock:
            if self._registrar is None:
                registration = Registration.from_env(self._environ, bind=bind, **self._overrides)
                self._registrar = Registrar(registration, health=self.health).start()
                self._metrics = RegistrarMetrics(self._registrar).start()
                atexit.register(self.stop_registrar)  # a forced exit skips the lifespan
            return self._registrar

    def stop_registrar(self) -> None:
        """Deregister and forget the registrar (no-op without one)."""
        with self._lock:
            registrar, self._registrar = self._registrar, None
            metrics, self._metrics = self._metrics, None
        if registrar is not None:
            registrar.stop()
        if metrics is not None:
            metrics.publish()  # the final state (deregistered) for a last scrape
            metrics.stop()

    # -- internals ----------------------------------------------------------------------

    async def _register_when_bound(self, server: Any) -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(_BIND_POLL_SECONDS)
        bind = _bound_address(server)
        registrar = self.start_registrar(bind=bind)
        self._drain = _SigtermDrain(registrar, asyncio.get_running_loop())
        self._drain.install()

    async def _send_health(self, scope: Scope, send: Send) -> None:
        report = await asyncio.to_thread(self.health)
        body = json.dumps(report.to_json()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200 if report.passing else 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        if scope["method"] == "HEAD":
            body = b""
        await send({"type": "http.response.body", "body": body})

    async def _lifespan_protocol(
        self, app: ASGIApp, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Our startup after the inner app's, our shutdown before it reports done."""
        sent_any = False

        async def relay(message: Message) -> None:
            nonlocal sent_any
            sent_any = True
            if message["type"] == "lifespan.startup.complete":
                await self.startup()
            elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.shutdown()
            await send(message)

        try:
            await app(scope, receive, relay)
        except Exception:
            if sent_any:
                raise
            # The inner app does not speak lifespan: speak it for both of us.
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await relay({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await relay({"type": "lifespan.shutdown.complete"})
                    return


def _running_uvicorn_server() -> Any:
    """The ``uvicorn.Server`` serving this process, found through its SIGTERM handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    handler = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    try:
        from uvicorn import Server
    except ImportError:  # pragma: no cover - uvicorn is a dependency
        return None
    return server if isinstance(server, Server) else None


def _bound_address(server: Any) -> tuple[str, int] | None:
    for listener in getattr(server, "servers", []):
        for sock in listener.sockets:
            name = sock.getsockname()
            if isinstance(name, tuple):
                return str(name[0]), int(name[1])
    config = server.config
    return (config.host, config.port) if config.port else None


class _SigtermDrain:
    """Stands between SIGTERM and uvicorn: drain first, then uvicorn's own handler.

    The signal handler only records the signal and starts a thread; that thread puts
    the instance in maintenance, waits the drain delay (a second SIGTERM or a SIGINT
    cuts it short) and then calls uvicorn's handler on the event loop.
    """

    def __init__(self, registrar: Registrar, loop: asyncio.AbstractEventLoop) -> None:
        self._registrar = registrar
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
            target=self._drain_then_hand_over, args=(signum,), name="registry-drain", daemon=True
        ).start()

    def _drain_then_hand_over(self, signum: int) -> None:
        delay = self._registrar.registration.drain_seconds
        log.info("registry: SIGTERM: draining for %.1fs before stopping", delay)
        self._registrar.begin_drain()
        if self._cut_short.wait(delay):
            log.info("registry: drain cut short by a second signal")
        self._hand_over(signum)

    def _hand_over(self, signum: int) -> None:
        original = self._originals.get(signum)
        if callable(original):
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                self._loop.call_soon_threadsafe(original, signum, None)
