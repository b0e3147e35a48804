"""ASGI adapter: ``/health`` plus self-registration under uvicorn, drain on SIGTERM.

FastAPI / Starlette::

    registry = ConsulRegistry()
    registry.add_check("db", db.ping)        # the same check functions as registry.flask
    app = FastAPI()
    registry.init_app(app)                   # GET /health, registration in the lifespan

Any other ASGI app: ``app = ConsulRegistry().wrap(app)`` (answers ``/health`` itself and
runs registration from the lifespan messages it passes through). Nothing here imports
Flask; Starlette only inside ``init_app``.

Every step of the registration's life is ``consul_discovery.registry.lifecycle``'s;
this module only tells it how uvicorn serves:

* ``uvicorn app:app``: the lifespan startup finds the running ``uvicorn.Server``
  (through its SIGTERM handler), shows the registry's lines the way uvicorn shows its
  own, and checks the settings and that an explicit ``SERVICE_PORT`` is uvicorn's
  ``--port``. A bad one fails the startup (uvicorn exits before it binds) with
  ``registry: bad configuration: <SETTING>: ...`` as the lifespan's failure message,
  not an exception (Starlette would add a traceback), so uvicorn prints that line and
  its own "Application startup failed. Exiting.". A bad ``SERVICE_HEALTH_PATH`` is
  refused earlier still, by ``ConsulRegistry()``, before anything routes it. Once the
  listener is bound it
  registers (the real port, even ``--port 0``) and replaces uvicorn's SIGTERM handler
  with a drain: maintenance, keep serving for ``SERVICE_DRAIN_SECONDS`` (a second
  SIGTERM or a SIGINT cuts it short), then hand the signal to uvicorn, which stops
  accepting, finishes in-flight requests and runs the lifespan shutdown, which
  deregisters. uvicorn only runs the lifespan shutdown after it has closed its
  listener, so the drain must start from the signal.
* gunicorn with uvicorn workers (``-c python:consul_discovery.registry.gunicorn_conf -k
  uvicorn_worker.UvicornWorker``): nothing here; the master registers once and drains.
* anything else (tests, other servers): ``/health`` only; ``start_registrar`` yourself.

Check functions are those of ``consul_discovery.registry.health``, plain or ``async def``:
``/health`` evaluates the plain ones in a worker thread, so a slow one never blocks the
event loop, and awaits the async ones on the loop; the TTL heartbeat's thread has them
awaited on the app's loop too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from consul_discovery.registry.errors import RegistryConfigError
from consul_discovery.registry.health import (
    CheckFn,
    HealthChecks,
    HealthReport,
    close_unawaited,
)
from consul_discovery.registry.lifecycle import (
    Lifecycle,
    Listener,
    Role,
    health_route,
    serving_role,
    show_log,
    startup_error,
    warn_unhooked,
)
from consul_discovery.registry.registrar import Registrar
from consul_discovery.registry.uvicorn_server import (
    SigtermDrain,
    bound_listener,
    configured_listener,
    handlers_of,
    running_uvicorn_server,
    several_workers,
)

log = logging.getLogger("consul_discovery.registry")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: How often the lifespan looks whether uvicorn has bound its listener yet.
_BIND_POLL_SECONDS = 0.02
#: How long ``health()`` waits for an async check on the app's loop (then: critical).
ASYNC_CHECK_WAIT = 10.0


async def _awaiting(awaitable: Awaitable[object]) -> object:
    """``awaitable``'s result, as a coroutine (what run_coroutine_threadsafe takes)."""
    return await awaitable


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The loop running in this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _route_path(scope: Scope) -> str:
    """The request's path below the app's mount point: uvicorn ``--root-path /api`` puts
    ``/api`` in front of ``scope["path"]`` (as Starlette's routing strips it)."""
    path, root = scope["path"], scope.get("root_path") or ""
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path


class ConsulRegistry:
    """ASGI counterpart of ``registry.flask.ConsulRegistry``: health route + lifecycle."""

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        health_path: str | None = None,
        **overrides: Any,
    ) -> None:
        self.checks = HealthChecks(asynchronous=True)
        self._loop: asyncio.AbstractEventLoop | None = None  # the app's, once it runs
        self._environ = environ  # None means os.environ at start time
        # health_path= is the route's and so the HTTP check's path; a bad one stops
        # startup here, before Starlette or wrap() routes it
        overrides = {**overrides, "health_path": health_path}
        self.health_path = health_route(environ, overrides)
        self._lifecycle = Lifecycle(environ=environ, overrides=overrides, health=self.health)
        self._drain: SigtermDrain | None = None  # set/cleared on the event loop only
        self._bind_task: asyncio.Task[None] | None = None  # event loop only

    @property
    def registrar(self) -> Registrar | None:
        """This registry's registrar, once it started one."""
        return self._lifecycle.registrar

    def add_check(self, name: str, fn: CheckFn) -> None:
        """Add a dependency check: ``fn`` (plain or ``async def``) returns None/True when
        fine, raises or returns False if not; TypeError if ``fn`` is not callable."""
        self.checks.add(name, fn)

    def health(self) -> HealthReport:
        """Evaluate every check now, blocking (the TTL heartbeat's thread): async checks
        run on the app's event loop (``_wait_for``). On the loop: ``await health_async()``."""
        return self.checks.evaluate(self._wait_for)

    async def health_async(self) -> HealthReport:
        """Evaluate every check now (what ``/health`` answers): plain checks in a worker
        thread, async ones awaited on this loop."""
        self._loop = asyncio.get_running_loop()
        return await self.checks.evaluate_async()

    def _wait_for(self, awaitable: Awaitable[object]) -> object:
        """An async check's result, from a thread other than the app's loop: awaited on
        that loop (its resources are bound to it), at most ``ASYNC_CHECK_WAIT`` seconds;
        before the app runs, on a loop of its own."""
        if _running_loop() is not None:  # blocking here would stall (or deadlock) it
            close_unawaited(awaitable)
            raise RuntimeError("health() blocks: on an event loop, await health_async()")
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return asyncio.run(_awaiting(awaitable))
        future = asyncio.run_coroutine_threadsafe(_awaiting(awaitable), loop)
        return future.result(ASYNC_CHECK_WAIT)

    # -- wiring -------------------------------------------------------------------------

    def init_app(self, app: Any) -> None:
        """Add the health route to a Starlette/FastAPI app, and registration around its
        lifespan.

        Registration runs in a middleware around the app's own lifespan, as ``wrap``'s
        does, not inside it: Starlette answers an exception in a lifespan with a
        traceback, so a bad setting would not be one line.
        """
        from starlette.requests import Request
        from starlette.responses import JSONResponse

        async def health_view(request: Request) -> JSONResponse:
            report = await self.health_async()
            return JSONResponse(report.to_json(), status_code=200 if report.passing else 503)

        app.router.add_route(self.health_path, health_view, methods=["GET"], name="health")
        app.add_middleware(_LifespanMiddleware, registry=self)
        app.state.consul_registry = self

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """A plain ASGI app around ``app`` that serves ``/health`` and registers."""

        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "lifespan":
                await self._lifespan_protocol(app, scope, receive, send)
            elif (
                scope["type"] == "http"
                and _route_path(scope) == self.health_path
                and scope["method"] in ("GET", "HEAD")
            ):
                await self._send_health(scope, send)
            else:
                await app(scope, receive, send)

        return wrapped

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Register (under uvicorn) for the life of the block; deregister at its end.

        For composing lifespans by hand (``init_app`` and ``wrap`` do not use it): a
        bad setting is logged as ``registry: bad configuration: ...`` and raised, so
        the server's startup fails (under Starlette, with its traceback).
        """
        try:
            await self.startup()
        except RegistryConfigError as exc:
            log.error(startup_error(exc))
            raise
        try:
            yield
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        """Under uvicorn: check the settings now, register once the listener is bound.

        Raises ``RegistryConfigError`` for a bad setting (before uvicorn binds).
        """
        self._loop = asyncio.get_running_loop()  # where async checks run (TTL heartbeat)
        role = serving_role(self._environ)
        if role is Role.GUNICORN_UNHOOKED:
            warn_unhooked()
        server = running_uvicorn_server() if role is Role.STANDALONE else None
        if server is None or self._bind_task is not None:
            return
        show_log(handlers_of(logging.getLogger("uvicorn.error")))
        refusal = several_workers(server)
        if refusal is not None:
            raise refusal
        self._lifecycle.check(configured_listener(server))
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
        listener = Listener(bind[0], (bind[1],), "uvicorn --port") if bind is not None else None
        return self._lifecycle.start(listener)

    def stop_registrar(self) -> None:
        """Deregister and forget the registrar (no-op without one)."""
        self._lifecycle.close()

    # -- internals ----------------------------------------------------------------------

    async def _register_when_bound(self, server: Any) -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(_BIND_POLL_SECONDS)
        try:
            self._lifecycle.start(bound_listener(server))
        except RegistryConfigError as exc:  # checked at startup: only a race gets here
            log.error(startup_error(exc))
            server.should_exit = True
            return
        if getattr(server.config, "reload", False):
            # uvicorn --reload restarts this process with a SIGTERM on every change: a
            # development server, not worth SERVICE_DRAIN_SECONDS per restart
            return
        self._drain = SigtermDrain(self._lifecycle, asyncio.get_running_loop())
        self._drain.install()

    async def _send_health(self, scope: Scope, send: Send) -> None:
        report = await self.health_async()
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
        """Our startup before the inner app's, our shutdown after it reports done.

        A bad setting answers ``lifespan.startup`` with ``startup.failed`` and the one
        line, before the inner app starts: an exception instead would be a traceback, or
        make uvicorn, in its default ``--lifespan auto``, decide lifespan is unsupported
        and serve anyway.
        """
        first = await receive()
        if first["type"] == "lifespan.startup":
            try:
                await self.startup()
            except RegistryConfigError as exc:
                await send({"type": "lifespan.startup.failed", "message": startup_error(exc)})
                return
        sent_any = False
        pending: list[Message] = [first]  # handed to the inner app before anything else

        async def inner_receive() -> Message:
            return pending.pop() if pending else await receive()

        async def relay(message: Message) -> None:
            nonlocal sent_any
            sent_any = True
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.shutdown()
            await send(message)

        try:
            await app(scope, inner_receive, relay)
        except Exception:
            if sent_any:
                raise
            await self._speak_lifespan(first, receive, relay)
            return
        if not sent_any:  # returned without a word (``if scope["type"] != "http": return``)
            await self._speak_lifespan(first, receive, relay)

    async def _speak_lifespan(self, first: Message, receive: Receive, relay: Send) -> None:
        """The inner app does not speak lifespan: speak it for both of us."""
        message = first
        while True:
            if message["type"] == "lifespan.startup":
                await relay({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await relay({"type": "lifespan.shutdown.complete"})
                return
            message = await receive()


class _LifespanMiddleware:
    """Starlette middleware of ``init_app``: the registry's lifespan around the app's."""

    def __init__(self, app: ASGIApp, registry: ConsulRegistry) -> None:
        self.app = app
        self._registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._registry._lifespan_protocol(self.app, scope, receive, send)
        else:
            await self.app(scope, receive, send)
