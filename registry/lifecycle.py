"""One instance's registration life, whatever serves it: the core the server adapters share.

The Flask adapter (``app.run()``, ``flask run``), the gunicorn hooks (sync and uvicorn
workers: the master registers) and the ASGI adapter (uvicorn) differ only in how they
learn where they listen and how they pass SIGTERM on. Every step is here, once:

1. **Who registers** (``serving_role``): under gunicorn the master's hooks
   (``gunicorn_conf``) do, and the app-side adapters in the master (``--preload``) and in
   the workers stay quiet; gunicorn *without* those hooks registers nothing, which is
   said loudly (``warn_unhooked``) instead of silently.
2. **Check before serving** (``Lifecycle.check``): the settings and the listener are
   validated before the server binds, so a bad value stops startup under every server
   with one message, ``registry: bad configuration: <SETTING>: <problem>``
   (``startup_error``). An explicit ``SERVICE_PORT`` must be a port the server listens
   on (a port nothing listens on would be registered otherwise) unless
   ``SERVICE_PORT_FORWARDED=true`` says it is forwarded there (NAT, container ports).
3. **Start** (``Lifecycle.start``): the Registration from env and the bound socket, the
   Registrar, and its gauges (when prometheus_client is installed). A process without
   the app loaded (the gunicorn master) reports TTL health by probing its own ``/health``.
4. **Drain** (``Lifecycle.drain_then``): maintenance, keep serving ``drain_seconds``
   (cut short by a second signal), then the server's own graceful stop.
5. **Close** (``Lifecycle.close``): deregister and publish the final gauges. Only the
   process that started may close: a forked child (a gunicorn worker running the
   master's ``atexit`` handlers) never deregisters its parent's instance.

And the registry's log lines are made visible the way the server shows its own
(``show_log``), never twice.
"""

from __future__ import annotations

import atexit
import enum
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from consul_discovery.connection.addresses import http_url
from consul_discovery.registry.checks import TtlCheck
from consul_discovery.registry.config import Registration, health_path
from consul_discovery.registry.dns import undiscoverable_tags
from consul_discovery.registry.errors import RegistryConfigError
from consul_discovery.registry.health import HealthReport, http_probe
from consul_discovery.registry.registrar import Registrar

log = logging.getLogger("consul_discovery.registry")

#: Set by the gunicorn hooks in the master; workers inherit it and stay quiet.
MANAGED_BY_ENV = "REGISTRY_MANAGED_BY"
#: ``true``: SERVICE_PORT is forwarded to the listening port, do not compare them.
FORWARDED_ENV = "SERVICE_PORT_FORWARDED"
_HOOKS_MODULE = "consul_discovery.registry.gunicorn_conf"
_WILDCARDS = {"", "0.0.0.0", "::"}

HealthFn = Callable[[], HealthReport]


def startup_error(exc: RegistryConfigError) -> str:
    """The one line every server prints when a setting stops startup."""
    return f"registry: bad configuration: {exc}"


def health_route(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> str:
    """The health route's path for an adapter about to add it (``config.health_path``).

    A bad one stops startup here, before the web framework sees it (its own refusal
    would be a traceback): ``SystemExit`` with the one line, whatever the server.
    """
    try:
        return health_path(os.environ if environ is None else environ, overrides)
    except RegistryConfigError as exc:
        raise SystemExit(startup_error(exc)) from None


class Role(enum.Enum):
    """Which process registers the instance."""

    GUNICORN = "gunicorn"  # the master's hooks register; app-side adapters stay quiet
    GUNICORN_UNHOOKED = "gunicorn-unhooked"  # gunicorn without the hooks: nobody registers
    STANDALONE = "standalone"  # this process serves, so it registers


def serving_role(environ: Mapping[str, str] | None = None) -> Role:
    """Who registers this process's instance (see ``Role``)."""
    env = os.environ if environ is None else environ
    if env.get(MANAGED_BY_ENV) == "gunicorn":
        return Role.GUNICORN
    if "gunicorn.arbiter" in sys.modules:
        # Under --preload the app is built before on_starting marks the environment;
        # the hooks' module is imported by then if gunicorn was given it.
        return Role.GUNICORN if _HOOKS_MODULE in sys.modules else Role.GUNICORN_UNHOOKED
    return Role.STANDALONE


_unhooked_warned = threading.Event()  # set once per process by warn_unhooked


def warn_unhooked() -> None:
    """Say (once per process) that gunicorn runs without the hooks, so nothing registers."""
    if _unhooked_warned.is_set():
        return
    _unhooked_warned.set()
    log.error(
        "registry: gunicorn runs without consul_discovery.registry.gunicorn_conf's hooks, "
        "so nothing registers this instance with Consul: run gunicorn -c "
        "python:consul_discovery.registry.gunicorn_conf, or import on_starting, "
        "when_ready, child_exit and on_exit from it into your gunicorn config"
    )


def show_log(handlers: Iterable[logging.Handler] = ()) -> None:
    """Make the library's INFO lines (registry, watches, server routing) visible if
    nothing would show them.

    When no handler would take them (none on the ``consul_discovery`` logger or its
    ancestors: uvicorn and gunicorn configure only their own loggers), they go through
    ``handlers`` (the server's own, so they look like its lines) or, given none, to
    stderr. Logging the application configured is left alone, so no line is ever
    printed twice.
    """
    library = logging.getLogger("consul_discovery")
    if library.hasHandlers():
        return
    chosen = list(handlers)
    if not chosen:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(message)s"))
        chosen = [stream]
    for handler in chosen:
        library.addHandler(handler)
    if library.level == logging.NOTSET:
        library.setLevel(logging.INFO)


@dataclass(frozen=True)
class Listener:
    """Where the server listens (or is about to), and the option that set it."""

    host: str | None = None
    ports: tuple[int, ...] = ()  # TCP ports; 0 is a free port not bound yet; () unknown
    option: str = "the server"  # how the user chose it, for messages: "uvicorn --port"
    unix: bool = False  # it listens on a unix socket only (uvicorn --uds, gunicorn -b unix:)

    @property
    def bind(self) -> tuple[str, int] | None:
        """``(host, port)`` for ``Registration.from_env``: the first bound TCP port."""
        port = next((p for p in self.ports if p), None)
        return None if port is None else (self.host or "", port)


class Lifecycle:
    """One instance's registration in one process: check, start, drain, close.

    ``health`` is the app's health function (TTL mode); without one (a process that
    has no app loaded), TTL health is a GET of the instance's own ``/health``.
    """

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        health: HealthFn | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._environ = environ  # None: os.environ when asked
        self._overrides = dict(overrides or {})
        self._health = health
        self._clock = clock
        self._lock = threading.Lock()  # start/close only; never held across an agent call
        self._registrar: Registrar | None = None  # guarded by _lock
        self._metrics: Any = None  # guarded by _lock; RegistrarMetrics when available
        self._pid: int | None = None  # guarded by _lock; the process that started

    @property
    def environ(self) -> Mapping[str, str]:
        """The environment settings are read from."""
        return os.environ if self._environ is None else self._environ

    @property
    def registrar(self) -> Registrar | None:
        """The running registrar, once ``start`` made one (in this process)."""
        return self._registrar if self._pid == os.getpid() else None

    def check(self, listener: Listener | None = None) -> Registration:
        """Validate the settings against ``listener`` before the server binds.

        A port not known yet (0, or none) is stood in for, so only what is known is
        checked; raises ``RegistryConfigError`` naming the setting.
        """
        bind = listener.bind if listener is not None else None
        if bind is None and listener is not None:
            bind = (listener.host or "", 1)  # the real port comes with the bound socket
        registration = Registration.from_env(self.environ, bind=bind, **self._overrides)
        _forwarded(self.environ)  # a bad value is reported whether or not it is needed
        if listener is not None:
            self._check_port(listener)
        return registration

    def start(self, listener: Listener | None = None) -> Registrar:
        """Build the Registration for the bound ``listener`` and start registering (once)."""
        with self._lock:
            if self._registrar is not None and self._pid == os.getpid():
                return self._registrar
            if listener is not None:
                self._check_port(listener)
            bind = listener.bind if listener is not None else None
            registration = Registration.from_env(self.environ, bind=bind, **self._overrides)
            health = self._health or self._self_probe(registration, listener)
            registrar = Registrar(registration, health=health).start()
            self._registrar, self._pid = registrar, os.getpid()
            self._metrics = _start_metrics(registrar)
        atexit.register(self.close)  # a forced exit skips the server's own stop path
        tags = undiscoverable_tags(registration.tags)
        if tags:
            log.info("registry: tag(s) %s cannot be looked up through Consul DNS", tags)
        return registrar

    def begin_drain(self) -> None:
        """Maintenance on, at once (no-op before start)."""
        registrar = self.registrar
        if registrar is not None:
            registrar.begin_drain()

    def drain_then(
        self,
        hand_over: Callable[[], object],
        *,
        cut_short: threading.Event | None = None,
        tick: Callable[[], object] | None = None,
        poll: float = 0.1,
    ) -> None:
        """Maintenance, keep serving ``drain_seconds``, then ``hand_over()`` (the server's stop).

        ``cut_short`` set (a second signal) ends the wait early; ``tick`` runs every
        ``poll`` seconds meanwhile (the gunicorn master keeps its workers going).
        """
        registrar = self.registrar
        if registrar is None or not registrar.ever_registered:
            if registrar is not None:
                registrar.begin_drain()  # stops registering; says there is nothing to drain
            hand_over()
            return
        delay = registrar.registration.drain_seconds
        log.info("registry: SIGTERM: draining for %.1fs before stopping", delay)
        registrar.begin_drain()
        cut = cut_short or threading.Event()
        deadline = self._clock() + delay
        while (remaining := deadline - self._clock()) > 0:
            if cut.wait(min(remaining, poll)):
                log.info("registry: drain cut short by a second signal")
                break
            if tick is not None:
                tick()
        hand_over()

    def close(self, *, deregister: bool = True) -> None:
        """Deregister and publish the final gauges (only in the process that started);
        ``deregister=False`` stops registering but leaves the instance to another
        process that serves it on (a gunicorn binary upgrade's other master)."""
        with self._lock:
            if self._pid != os.getpid():
                return
            registrar, self._registrar = self._registrar, None
            metrics, self._metrics = self._metrics, None
        if registrar is not None:
            registrar.close(deregister=deregister)
        if metrics is not None:
            metrics.close()

    # -- internals ----------------------------------------------------------------------

    def _check_port(self, listener: Listener) -> None:
        env = self.environ
        keyword = self._overrides.get("port")  # named as given: the keyword, or the variable
        setting, unset = (
            ("port", "Drop port=") if keyword else ("SERVICE_PORT", "Unset SERVICE_PORT")
        )
        explicit = keyword or env.get("SERVICE_PORT", "").strip()
        if listener.unix:
            self._check_unix(listener, setting, explicit)
            return
        if not explicit or not listener.ports or _forwarded(env):
            return
        port = int(explicit)  # from_env has validated it
        if port in listener.ports:
            return
        listening = ", ".join("a free port (0)" if p == 0 else str(p) for p in listener.ports)
        raise RegistryConfigError(
            setting,
            f"{port}, but {listener.option} listens on {listening}: Consul would send "
            f"callers to a port nothing listens on. {unset} to register the "
            f"listening port, make the two agree, or set {FORWARDED_ENV}=true if {port} "
            "is forwarded to it (NAT, a container's port mapping)",
        )

    def _check_unix(self, listener: Listener, setting: str, explicit: object) -> None:
        """A unix socket is no address Consul's checks or callers can reach: only a TCP
        port a proxy forwards to it can be registered, and must be said to be."""
        if not explicit:
            raise RegistryConfigError(
                "SERVICE_PORT",
                f"required: {listener.option} listens on a unix socket, which Consul's "
                "checks and callers cannot reach: set SERVICE_PORT to the TCP port a "
                f"proxy forwards to it, and {FORWARDED_ENV}=true",
            )
        if not _forwarded(self.environ):
            raise RegistryConfigError(
                setting,
                f"{explicit}, but {listener.option} listens on a unix socket, not on a "
                f"TCP port: set {FORWARDED_ENV}=true if a proxy forwards {explicit} to it",
            )

    def _self_probe(self, reg: Registration, listener: Listener | None) -> HealthFn | None:
        if not isinstance(reg.check, TtlCheck):
            return None
        host = listener.host if listener is not None else None
        host = "127.0.0.1" if not host or host in _WILDCARDS else host
        port = listener.bind[1] if listener is not None and listener.bind else reg.port
        path = health_path(self.environ, self._overrides)
        url, session = http_url(host, port) + path, None
        if reg.connect_native:  # mTLS only: probe as the service itself
            from consul_discovery.mesh.clients import self_probe_session
            from consul_discovery.mesh.shared import lease_identity

            # The process's shared identity: forked workers go on with it (mesh/shared.py)
            identity = lease_identity(reg.name, reg.consul).identity
            session = self_probe_session(reg.name, identity)
            url = "https" + url.removeprefix("http")
        return http_probe(url, timeout=min(2.0, reg.check.heartbeat), session=session)


def start_shared_watches() -> Any:
    """Under gunicorn, in the master before its workers fork: the discovery relay, so that
    workers share one watch per target (``consul_discovery.client.relay``); None when
    turned off (``DISCOVERY_SHARED_WATCHES=false``) or it could not start (logged)."""
    from consul_discovery.client.relay import start_master_relay

    try:
        relay = start_master_relay()
    except Exception as exc:  # discovery still works: each worker watches by itself
        log.warning("registry: discovery relay not started (workers watch by themselves): %r", exc)
        return None
    if relay is not None:
        log.info("registry: discovery relay for the workers at %s", relay.path)
    return relay


def _forwarded(env: Mapping[str, str]) -> bool:
    raw = env.get(FORWARDED_ENV, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise RegistryConfigError(FORWARDED_ENV, f"{env[FORWARDED_ENV]!r} is not true or false")


def _start_metrics(registrar: Registrar) -> Any:
    """The registrar's gauges, published from a thread; None without prometheus_client."""
    try:
        from consul_discovery.registry.metrics import RegistrarMetrics
    except ImportError:  # the prometheus extra is not installed: no gauges to publish
        log.debug("registry: prometheus_client not installed; no registrar gauges")
        return None
    return RegistrarMetrics(registrar).start()
