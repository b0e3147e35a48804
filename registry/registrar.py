"""``Registrar``: one instance's life in Consul: register, stay registered, drain, leave.

One background thread (``registry-<service id>``) does all the agent traffic, so
neither startup nor request handling ever waits for Consul:

* register (``replace-existing-checks``), retrying with capped exponential backoff and
  jitter (tenacity) while the agent is unreachable;
* reconcile: every half check interval ask the agent whether it still knows the
  instance, and re-register at once if not (agent restarted without its data);
* TTL mode: every TTL/3 run the service's health function and report its verdict; a
  404 from the agent means it forgot us, so re-register.

``drain`` puts the instance in maintenance (it leaves the passing set) and waits the
propagation delay; ``close`` deregisters and closes the client's HTTP session (when the
registrar made the client; ``stop`` is its deprecated old name). All public methods are
thread-safe.

Locks and the network: ``_lock`` guards state only and is never held across an agent
call, so a SIGTERM's ``begin_drain``/``close`` never waits for a register stuck on a slow
agent; a call whose state changed while it was in flight is followed up (a register
that lands after a drain is put back in maintenance, one after a stop is deregistered).
The fork guard (``no_fork``) covers the worker's agent calls only, never the TTL
self-probe, and not the SIGTERM path (it runs on the thread that forks).

A 400 or 403 from the agent (a bad field, a missing ACL permission, an unknown token) is
not an outage: it raises/logs ``ConsulRejected`` naming the call and the field or, in the
words every client here uses (``consul_connection.refusals``), the 403's reason, once,
and the worker stops instead of retrying forever (``Registrar.error`` keeps it). An
unreachable agent is logged once when it goes and once when it is back (OutageLog), in
words that say why (``describe_transport_error``: refused, timed out, "does not speak
TLS", an untrusted certificate), never as a raw urllib3 traceback line.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
import warnings
from collections.abc import Callable

import consul
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception_type

from consul_discovery.registry.agent_errors import AGENT_ERRORS as _AGENT_ERRORS
from consul_discovery.registry.agent_errors import agent_error, consul_client
from consul_discovery.registry.backoff import CappedJitterBackoff
from consul_discovery.registry.checks import TtlCheck
from consul_discovery.registry.config import Registration
from consul_discovery.registry.errors import ConsulRejected, ConsulUnavailable, InstanceUnknown
from consul_discovery.registry.forksafe import no_fork
from consul_discovery.registry.health import HealthReport
from consul_discovery.registry.outage import OutageLog

log = logging.getLogger("consul_discovery.registry")

HealthFn = Callable[[], HealthReport]


class State(enum.Enum):
    """Where the instance is in its life."""

    NEW = "new"
    REGISTERING = "registering"
    REGISTERED = "registered"
    DRAINING = "draining"
    STOPPED = "stopped"


class Registrar:
    """Keeps one ``Registration`` correctly registered with the local Consul agent."""

    def __init__(
        self,
        registration: Registration,
        *,
        health: HealthFn | None = None,
        client: consul.Consul | None = None,
        rng: random.Random | None = None,
        max_backoff: float = 3.0,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if isinstance(registration.check, TtlCheck) and health is None:
            raise ValueError("a TTL check needs the service's health function (health=...)")
        self.registration = registration
        self._health = health
        self._owns_client = client is None
        self._client = client or consul_client(registration.consul)
        if client is None and registration.consul.servers:
            log.info(
                "registry: %s registers with the agent at %s, the first of %d Consul "
                "addresses (a registration lives on one agent; the others serve reads)",
                registration.service_id,
                registration.consul.base_url,
                len(registration.consul.servers),
            )
        self._backoff = CappedJitterBackoff(cap=max_backoff, rng=rng)
        self._sleep = sleep  # used only by drain(); injectable for tests
        self._lock = threading.RLock()  # guards state; never held across an agent call
        self._outage = OutageLog(log, f"registry: Consul agent ({registration.service_id})")
        #: Why the worker gave up (a 400/403 from the agent); set once by the worker.
        self.error: ConsulRejected | None = None
        self._state = State.NEW  # guarded by _lock; written by the worker thread and callers
        self._known = False  # guarded by _lock; does the agent hold our registration?
        self._stopping = threading.Event()  # set once by close()
        self._leave_registered = False  # set by close(deregister=False), before _stopping
        self._registered = threading.Event()  # set on each successful registration
        self._thread: threading.Thread | None = None  # set once by start()
        self.registrations = 0  # count of successful register calls; worker thread only
        self.consul_errors = 0  # failed agent calls; worker thread only (read by metrics)
        self.last_error_at: float | None = None  # Unix time of the last one; worker thread

    # -- public API -------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current lifecycle state."""
        with self._lock:
            return self._state

    def start(self) -> Registrar:
        """Begin registering in the background; returns immediately."""
        with self._lock:
            if self._thread is not None:
                return self
            self._state = State.REGISTERING
            self._thread = threading.Thread(
                target=self._run, name=f"registry-{self.registration.service_id}", daemon=True
            )
            self._thread.start()
        return self

    def wait_registered(self, timeout: float | None = None) -> bool:
        """Block until the first successful registration (True) or ``timeout`` (False)."""
        return self._registered.wait(timeout)

    @property
    def ever_registered(self) -> bool:
        """True once a register call has taken (the agent may hold the instance)."""
        with self._lock:
            return self.registrations > 0

    def begin_drain(self, reason: str = "draining before shutdown") -> None:
        """Put the instance in maintenance so consumers stop picking it; returns at once.

        An instance never registered (the agent refused it, or was never reached) is
        in no one's passing set: registering stops and nothing is drained.
        """
        with self._lock:
            if self._state in (State.DRAINING, State.STOPPED):
                return
            self._state = State.DRAINING
            registered = self.registrations > 0
        if not registered:  # a register landing after this puts itself in maintenance
            log.info(
                "registry: %s was never registered: nothing to drain", self.registration.service_id
            )
            return
        self._maintenance(reason)

    def _maintenance(self, reason: str) -> None:
        rid = self.registration.service_id
        try:
            # No fork guard on the SIGTERM path: it runs on the thread that forks (the
            # gunicorn master's), and waiting for the worker's unit would make a drain
            # wait for a register stuck on a slow agent.
            known = self._client.agent.service.maintenance(
                rid, "true", reason=reason, token=self.registration.consul.token
            )
        except _AGENT_ERRORS as exc:
            log.warning("registry: %s", self._agent_error(f"maintenance of {rid}", exc))
            return
        if known:  # py-consul answers False for a 404: the agent does not know the instance
            log.info("registry: %s in maintenance (%s)", rid, reason)
        else:
            log.warning("registry: %s not put in maintenance: the agent does not know it", rid)

    def drain(self, delay: float | None = None) -> None:
        """Maintenance, then wait ``delay`` (default: the registration's drain_seconds);
        no wait for an instance never registered."""
        self.begin_drain()
        if self.ever_registered:
            self._sleep(self.registration.drain_seconds if delay is None else delay)

    def close(self, timeout: float = 5.0, *, deregister: bool = True) -> None:
        """Stop the background thread, deregister the instance (best effort; not with
        ``deregister=False``: another process serves it on), close."""
        self._leave_registered = not deregister
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._lock:
            if self._state is State.STOPPED:
                return
            self._state = State.STOPPED
        if deregister:
            self._deregister()
        if self._owns_client:
            self._client.http.session.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Deprecated name of ``close``."""
        warnings.warn(
            "Registrar.stop() is deprecated; use close()", DeprecationWarning, stacklevel=2
        )
        self.close(timeout)

    def _agent_error(self, call: str, exc: BaseException) -> ConsulRejected | ConsulUnavailable:
        err = agent_error(call, exc, self.registration.consul)
        if isinstance(err, ConsulRejected) and err.status == 403 and self.registrations:
            # The token registered this instance before: a 403 now is an agent that cannot
            # resolve it yet (restarted, its servers electing), or a policy an operator is
            # changing. Retried with backoff and logged, never given up on while serving.
            return ConsulUnavailable(f"{err} (the same token was accepted before: retrying)")
        return err

    def _deregister(self) -> None:
        rid = self.registration.service_id
        for attempt in (1, 2):
            try:
                known = self._client.agent.service.deregister(
                    rid, token=self.registration.consul.token
                )
                if known:  # False for a 404: the agent does not know the instance
                    log.info("registry: deregistered %s", rid)
                else:
                    log.info("registry: %s was not registered (the agent does not know it)", rid)
                return
            except _AGENT_ERRORS as exc:
                err = self._agent_error(f"deregister {rid}", exc)
                log.warning("registry: %s (try %d)", err, attempt)
                if isinstance(err, ConsulRejected):
                    return

    # -- the worker thread ------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._work()
        except ConsulRejected as exc:
            self.error = exc
            log.error("registry: giving up on %s: %s", self.registration.service_id, exc)

    def _work(self) -> None:
        check = self.registration.check
        period = check.heartbeat if isinstance(check, TtlCheck) else check.interval / 2
        failed = 0  # consecutive failed heartbeats/reconciles
        while not self._stopping.is_set():
            with self._lock:
                if self._state is not State.REGISTERED and self._state is not State.REGISTERING:
                    return  # draining or stopped: leave the agent alone
                known = self._known
            if not known:
                self._register_until_done()
                continue
            try:
                self._reconcile()
                self._outage.ok()
                failed = 0
            except InstanceUnknown:
                log.warning(
                    "registry: agent forgot %s; re-registering", self.registration.service_id
                )
                with self._lock:
                    self._known = False
                continue
            except ConsulUnavailable as exc:
                self._note_error()
                self._outage.failed(exc)
                # Retry soon (backoff), not a whole period later: a TTL check must not
                # expire over one refused heartbeat (a 429 episode, a blip).
                failed += 1
                self._stopping.wait(min(period, self._backoff.delay(failed)))
                continue
            self._stopping.wait(period)

    def _note_error(self) -> None:
        self.consul_errors += 1
        self.last_error_at = time.time()

    def _register_failed(self, rs: RetryCallState) -> None:
        self._note_error()
        self._outage.failed(rs.outcome.exception() if rs.outcome else "?")

    def _register_until_done(self) -> None:
        retrying = Retrying(
            wait=self._backoff,
            stop=lambda _state: self._stopping.is_set() or self.state is State.DRAINING,
            sleep=self._stopping.wait,
            retry=retry_if_exception_type(ConsulUnavailable),
            before_sleep=self._register_failed,
        )
        try:
            for attempt in retrying:
                with attempt:
                    registered = self._register_once()
        except RetryError:
            return
        if registered is None:
            return  # a drain or stop came first: no call made, so nothing is "back"
        self._outage.ok()
        if registered:
            self._after_register()

    def _register_once(self) -> bool | None:
        """One register call; True if it took (and the instance is still to be served),
        None if the instance is no longer to be registered (no call made)."""
        reg = self.registration
        with self._lock:
            if self._state is not State.REGISTERED and self._state is not State.REGISTERING:
                return None
            body = reg.service_definition()
        try:
            with no_fork():
                self._client.agent.service.register(
                    reg.name,
                    service_id=reg.service_id,
                    address=reg.address,
                    port=reg.port,
                    tags=list(reg.tags),
                    meta=dict(reg.meta),
                    weights=body["Weights"],
                    check=body["Checks"][0],
                    connect=body.get("Connect"),
                    tagged_addresses=body.get("TaggedAddresses"),
                    locality=body.get("Locality"),
                    replace_existing_checks=True,
                    token=reg.consul.token,
                )
        except _AGENT_ERRORS as exc:
            raise self._agent_error(f"register {reg.service_id}", exc) from exc
        with self._lock:
            state = self._state
            if state is State.REGISTERING or state is State.REGISTERED:
                self._known = True
                self._state = State.REGISTERED
                self.registrations += 1
        if state is State.DRAINING:  # a drain began while the register was in flight
            self._maintenance("draining before shutdown")
            return False
        if state is State.STOPPED:  # close() deregistered before this register landed
            if not self._leave_registered:
                self._deregister()
            return False
        log.info("registry: registered %s at %s:%d", reg.service_id, reg.address, reg.port)
        return True

    def _after_register(self) -> None:
        if isinstance(self.registration.check, TtlCheck):
            try:
                self._heartbeat()  # report real health at once, not after a full TTL
            except (InstanceUnknown, ConsulUnavailable) as exc:
                log.warning("registry: first heartbeat failed: %s", exc)
        self._registered.set()

    def _reconcile(self) -> None:
        if isinstance(self.registration.check, TtlCheck):
            self._heartbeat()
            return
        reg = self.registration
        with self._lock:
            if self._state is not State.REGISTERED:
                return
        try:
            with no_fork():
                found = self._client.agent.services(
                    filter_expr=f'ID == "{reg.service_id}"', token=reg.consul.token
                )
        except _AGENT_ERRORS as exc:
            raise self._agent_error("list services", exc) from exc
        if not found:
            raise InstanceUnknown(reg.service_id)

    def _heartbeat(self) -> None:
        assert self._health is not None
        report = self._health()  # no lock, no fork guard: the probe may take a while
        reg = self.registration
        with self._lock:
            if self._state is not State.REGISTERED:
                return
        update = (
            self._client.agent.check.ttl_pass
            if report.passing
            else self._client.agent.check.ttl_fail
        )
        try:
            with no_fork():
                ok = update(reg.check_id, notes=report.output(), token=reg.consul.token)
        except _AGENT_ERRORS as exc:
            raise self._agent_error(f"TTL update {reg.check_id}", exc) from exc
        if not ok:  # py-consul answers False for 404: the agent does not know the check
            raise InstanceUnknown(reg.check_id)
