"""Failure drills on a running cluster under open-loop load through the real gateway.

Each drill runs ``rate`` requests a second for ``seconds`` (half POSTs with an
Idempotency-Key, half GETs, spread over a few users), fires its fault a little into the
run, and reports every failed request, every key that made more than one order, and
what the fault measured (e.g. the time to a new Raft leader). Shared by the secure
cluster's tests and ``make bench``.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import requests

from bench.loadgen import LoadReport, run_open_loop
from consul_discovery.connection import ConsulConnection
from consul_discovery.mesh.identity import CaRoots
from consul_discovery.mesh.service_identity import ServiceIdentity
from consul_discovery.mesh.tls import client_context
from services.client import PlatformClient
from services.cluster import control
from services.cluster.plan import ClusterPlan, InstancePlan
from tests.harness import secure_cluster
from tests.harness.binary import consul_binary


@dataclass(frozen=True, slots=True)
class DrillResult:
    """What one drill did to the load: requests, failures, duplicate orders, fault figures."""

    name: str
    requests: int
    failures: tuple[str, ...]
    duplicates: int
    p99_ms: float
    figures: dict[str, float] = field(default_factory=dict)


class GatewayLoad:
    """Mixed order traffic through the gateway; remembers each POST's Idempotency-Key."""

    def __init__(self, plan: ClusterPlan, users: int = 3) -> None:
        self.plan = plan
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=64))
        self.tokens: list[str] = []
        self.first_orders: list[int] = []
        for n in range(users):
            client = PlatformClient.via_gateway(plan.gateway_url)
            name = f"drill-{n}-{uuid.uuid4().hex[:6]}"
            client.register(name, "a long enough password")
            client.token = client.login(name, "a long enough password")
            self.tokens.append(client.token)
            self.first_orders.append(client.create_order([("seed", 1)])["id"])
        self.keys: dict[str, int] = {}  # key -> user index; written by load threads
        self.posted_skus: list[str] = []  # one SKU per POST (its own); load threads append

    def call(self, seq: int) -> tuple[bool, str]:
        """One request: even ``seq`` creates an order (new key), odd reads one."""
        who = seq % len(self.tokens)
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        url = f"{self.plan.gateway_url}/api/orders"
        if seq % 2 == 0:
            key = f"k-{seq}-{uuid.uuid4().hex[:10]}"
            self.keys[key] = who
            sku = f"sku-{seq}"
            self.posted_skus.append(sku)
            items = {"items": [{"sku": sku, "quantity": 1}]}
            response = self.session.post(
                url, json=items, headers={**headers, "Idempotency-Key": key}, timeout=10
            )
            ok = response.status_code == 201
        else:
            order = self.first_orders[who]
            response = self.session.get(f"{url}/{order}", headers=headers, timeout=10)
            ok = response.status_code == 200
        return ok, f"{response.status_code} {response.text[:200]}"

    def duplicates_and_missing(self) -> tuple[int, int]:
        """Keys that made more than one order, and keys that made none."""
        per_key: Counter[str] = Counter()
        for token in self.tokens:
            listing = self.session.get(
                f"{self.plan.gateway_url}/api/orders",
                params={"limit": 500},
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            listing.raise_for_status()
            for order in listing.json()["orders"]:
                if order.get("idempotency_key"):
                    per_key[order["idempotency_key"]] += 1
        duplicates = sum(1 for n in per_key.values() if n > 1)
        missing = sum(1 for key in self.keys if key not in per_key)
        return duplicates, missing


def run_drill(
    load: GatewayLoad,
    name: str,
    fault: Callable[[], dict[str, float]],
    rate: float,
    seconds: float,
    fault_after: float = 3.0,
) -> DrillResult:
    """Run ``load`` open loop; call ``fault`` after ``fault_after`` s; report the outcome.

    ``fault`` returns its own figures (e.g. seconds to a new leader); an exception in it
    fails the drill after the load ends.
    """
    figures: dict[str, float] = {}
    errors: list[BaseException] = []

    def fire() -> None:
        try:
            figures.update(fault())
        except BaseException as exc:
            errors.append(exc)

    timer = threading.Timer(fault_after, fire)
    timer.start()
    try:
        report: LoadReport = run_open_loop(load.call, rate=rate, duration=seconds)
    finally:
        timer.join(timeout=120)
    if timer.is_alive():
        raise TimeoutError(f"drill {name!r}: the fault did not finish within 120 s")
    if errors:
        raise RuntimeError(f"drill {name!r}: the fault failed: {errors[0]}") from errors[0]
    return _result(load, name, report, figures)


def _result(
    load: GatewayLoad, name: str, report: LoadReport, figures: dict[str, float]
) -> DrillResult:
    """What a drill's load saw: failures, duplicate orders (and POSTs that made none), p99."""
    duplicates, missing = load.duplicates_and_missing()
    failures = tuple(f"#{o.seq} at {o.intended:.1f}s: {o.detail}" for o in report.failures)
    if missing:
        failures += (f"{missing} successful-looking POSTs made no order",)
    latencies = sorted(o.latency for o in report.outcomes)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else 0.0
    return DrillResult(name, len(report.outcomes), failures, duplicates, p99 * 1e3, figures)


# ---- the faults ---------------------------------------------------------------------


def kill_leader(plan: ClusterPlan, election_timeout: float = 30.0) -> dict[str, float]:
    """kill -9 the Raft leader, keep it down until another server leads, then restart it.

    supervisord would restart the killed server at once, and a server back within the
    election timeout may win again; holding it down (as a lost host would be) makes the
    survivors elect one of themselves. Then a registration must go through.

    Holding it down is a stop right after the kill: supervisord may have restarted it in
    between, which ``control.stop_in_parallel`` handles (it stops it again), within the
    bound the server's own stop settings give (``stopping.parallel_stop_bound``).
    """
    secure_cluster.wait_for_voters(plan)  # every server votes: a kill leaves a quorum
    old = secure_cluster.leader(plan)
    if old is None:
        raise RuntimeError("no leader before the drill")
    pid = control.program_pid(plan, old.program)
    if pid is None:
        raise RuntimeError(f"{old.program} is not running")
    others = [a for a in plan.agents() if a.server and a != old]
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    control.stop_in_parallel(plan, [old.program])  # no instant restart
    new = None
    while new is None or new == old:
        if time.monotonic() - killed > election_timeout:
            raise TimeoutError(
                f"no new leader within {election_timeout}s after killing {old.program}"
            )
        time.sleep(0.1)
        new = secure_cluster.leader(plan, via=others[0]) or secure_cluster.leader(
            plan, via=others[1]
        )
    elected = time.monotonic() - killed
    register_probe(plan)
    registered = time.monotonic() - killed
    control.start_programs(plan, [old.program])
    return {"new_leader_s": elected, "registration_after_s": registered}


def register_probe(plan: ClusterPlan, timeout: float = 20.0) -> None:
    """Register a probe instance with a host's agent, see it in the catalog, remove it."""
    host = plan.client_hosts[0]
    conn = secure_cluster.connection(plan, "management", host=host)
    reader = secure_cluster.connection(plan, "operator", host=plan.client_hosts[-1])
    probe = {"ID": f"drill-probe-{uuid.uuid4().hex[:6]}", "Name": "drill-probe", "Port": 1}
    deadline = time.monotonic() + timeout
    with conn.session() as session, reader.session() as reads:
        while True:
            response = session.put(
                f"{conn.base_url}/v1/agent/service/register", json=probe, timeout=5
            )
            listed = reads.get(f"{reader.base_url}/v1/catalog/service/drill-probe", timeout=5)
            ids = {e["ServiceID"] for e in listed.json()} if listed.ok else set()
            if response.ok and probe["ID"] in ids:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"probe registration not in the catalog: {response.status_code}")
            time.sleep(0.2)
        session.put(f"{conn.base_url}/v1/agent/service/deregister/{probe['ID']}", timeout=5)


def restart_client_agent(plan: ClusterPlan, index: int, timeout: float = 40.0) -> dict[str, float]:
    """Restart one host's client agent; its instances must stay or come back passing."""
    agent = [a for a in plan.agents() if not a.server][index]
    started = time.monotonic()
    control.supervisorctl(plan, "restart", agent.program)
    on_host = [i for i in plan.instances() if i.host == agent.host]
    control.wait_passing(plan, on_host, timeout)
    return {"back_passing_s": time.monotonic() - started}


def kill_instance(plan: ClusterPlan, program: str) -> dict[str, float]:
    """kill -9 one instance's whole process group (gunicorn master and workers)."""
    pid = control.program_pid(plan, program)
    if pid is None:
        raise RuntimeError(f"{program} is not running")
    os.killpg(pid, signal.SIGKILL)
    return {}


def rolling_restart(plan: ClusterPlan, service: str) -> dict[str, float]:
    """Restart every instance of ``service`` in turn (drain, stop, start, passing)."""
    started = time.monotonic()
    control.rolling_restart(plan, service, log=lambda _line: None)
    return {"restart_s": time.monotonic() - started}


# ---- drills whose fault takes as long as it takes (mesh) ----------------------------


def run_drill_through(
    load: GatewayLoad,
    name: str,
    fault: Callable[[], dict[str, float]],
    rate: float,
    max_seconds: float,
    fault_after: float = 3.0,
    tail: float = 2.0,
) -> DrillResult:
    """Like ``run_drill``, but the load runs until ``tail`` s after ``fault`` returns.

    For faults of unknown length (a CA rotation: the agent renews each leaf within a
    30 s jitter window): the load covers the whole window, then stops. Bounded by
    ``max_seconds`` of load; a fault still running when the load ends fails the drill
    loudly (the window was not covered). Figures add ``fault_end_s`` and ``load_end_s``
    (seconds from the load's start).
    """
    figures: dict[str, float] = {}
    errors: list[BaseException] = []
    stop = threading.Event()
    started = time.perf_counter()
    ended: list[float] = []  # the fault's end, seconds from ``started``; the fault thread's

    def fire() -> None:
        try:
            figures.update(fault())
        except BaseException as exc:
            errors.append(exc)
        finally:
            ended.append(time.perf_counter() - started)
        time.sleep(tail)
        stop.set()

    timer = threading.Timer(fault_after, fire)
    timer.start()
    try:
        report = run_open_loop(load.call, rate=rate, duration=max_seconds, stop=stop)
    finally:
        stop.set()  # fire's tail does not matter any more
        timer.join(timeout=120)
    if timer.is_alive():
        raise TimeoutError(f"drill {name!r}: the fault did not finish within 120 s")
    if errors:
        raise RuntimeError(f"drill {name!r}: the fault failed: {errors[0]}") from errors[0]
    load_end = max((o.intended for o in report.outcomes), default=0.0)
    if not ended or load_end < ended[0]:
        raise AssertionError(
            f"drill {name!r}: the load ({max_seconds}s at most) ended at {load_end:.1f}s, "
            f"before the fault did ({ended}); raise max_seconds"
        )
    figures.update(fault_end_s=ended[0], load_end_s=load_end)
    return _result(load, name, report, figures)


def rotate_connect_ca(conn: ConsulConnection) -> str:
    """Rotate the Connect CA to a new private key (Consul cross-signs the new root).

    ``conn``'s token needs ``operator:write``. Returns the new active root's ID, once
    Consul's roots answer names it.
    """
    with conn.session() as session:
        old = _active_root(session, conn)
        with tempfile.TemporaryDirectory() as work:
            subprocess.run(
                [consul_binary(), "tls", "ca", "create", "-domain", "rotation"],
                cwd=work, check=True, capture_output=True, timeout=30,
            )  # fmt: skip
            key = (Path(work) / "rotation-agent-ca-key.pem").read_text()
        response = session.put(
            f"{conn.base_url}/v1/connect/ca/configuration",
            json={"Provider": "consul", "Config": {"LeafCertTTL": "72h", "PrivateKey": key}},
            timeout=10,
        )
        if not response.ok:
            raise RuntimeError(f"CA rotation refused: {response.status_code} {response.text}")
        new = _active_root(session, conn)
    if new == old:
        raise RuntimeError(f"the CA rotation left the active root unchanged ({old})")
    return new


def _active_root(session: requests.Session, conn: ConsulConnection) -> str:
    response = session.get(f"{conn.base_url}/v1/connect/ca/roots", timeout=5)
    response.raise_for_status()
    return str(response.json()["ActiveRootID"])


def served_by_root(caller: ServiceIdentity, inst: InstancePlan, roots: CaRoots) -> tuple[bool, str]:
    """Whether ``inst``'s mTLS listener serves a leaf that chains to ``roots`` alone.

    A TLS handshake as ``caller`` with a context trusting only ``roots``: it verifies iff
    the served leaf was signed by one of them. Returns (verified, the leaf's issuer CN or
    the verification error).
    """
    leaf = caller.leaf
    if leaf is None:
        raise RuntimeError(f"{caller!r} has no leaf")
    expected = caller.client_tls.expected(inst.service)
    context = client_context(leaf, roots, expected)
    try:
        with (
            socket.create_connection((inst.host, inst.port), timeout=5) as raw,
            context.wrap_socket(raw) as tls,
        ):
            issuer = dict(pair[0] for pair in (tls.getpeercert() or {}).get("issuer", ()))
            return True, str(issuer.get("commonName", "?"))
    except ssl.SSLCertVerificationError as exc:
        return False, exc.verify_message


def ca_rotation(
    plan: ClusterPlan, conn: ConsulConnection, caller: ServiceIdentity, timeout: float = 90.0
) -> dict[str, float]:
    """Rotate the Connect CA, then wait until every mesh instance serves a new leaf.

    The agent renews each leaf at a random moment of a 30 s window; a signing request
    the servers rate-limit waits for the next window, hence the 90 s default.

    "New" is checked on the wire (``served_by_root`` with only the new root trusted), for
    every instance of every mesh service. Figures: seconds from the rotation to the
    first and to the last instance serving a leaf of the new root.
    """
    started = time.monotonic()
    new_id = rotate_connect_ca(conn)
    with conn.session() as session:
        body = session.get(f"{conn.base_url}/v1/connect/ca/roots", timeout=5).json()
    roots = CaRoots.from_json(body)
    only_new = replace(roots, roots=tuple(r for r in roots.roots if r.id == new_id))
    pending = {i.instance_id: i for i in plan.instances() if plan.in_mesh(i.service)}
    first: float | None = None
    seen: dict[str, str] = {}
    while pending:
        for inst_id, inst in list(pending.items()):
            verified, detail = served_by_root(caller, inst, only_new)
            seen[inst_id] = detail
            if verified:
                del pending[inst_id]
                first = first if first is not None else time.monotonic() - started
        if not pending:
            break
        if time.monotonic() - started > timeout:
            raise TimeoutError(
                f"{sorted(pending)} still serve a leaf of the old root {timeout}s after the "
                f"rotation (last seen: {seen})"
            )
        time.sleep(0.5)
    return {"first_new_leaf_s": first or 0.0, "all_new_leaves_s": time.monotonic() - started}


# ---- intention flips ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlipTiming:
    """How long one intention change took to show through the gateway."""

    write_s: float  # the intention write's own round trip (polls run meanwhile)
    first_s: float  # write start -> intended send time of the first poll answered anew
    settled_s: float  # write start -> from here on, every poll answered anew
    others: tuple[str, ...]  # answers that were neither the old nor the new one


def time_flip(
    write: Callable[[], None],
    poll: Callable[[], int],
    old: int,
    new: int,
    interval: float = 0.01,
    settle: int = 10,
    timeout: float = 5.0,
) -> FlipTiming:
    """Start ``write`` and, from the same moment, ``poll`` every ``interval`` s open loop
    until ``settle`` consecutive polls (by intended send time) answer ``new``.

    Polls start at fixed intended times whether or not earlier ones (or the write)
    returned, so a slow answer does not delay the measurement; times are from the
    write's start to a poll's intended send time. A poll's status that is neither
    ``old`` nor ``new`` (or an exception) is reported in ``others``. Fails after
    ``timeout`` s without settling.
    """
    answers: dict[int, tuple[float, int | str]] = {}  # seq -> (intended, status); poll threads

    def one(seq: int, intended: float) -> None:
        try:
            status: int | str = poll()
        except Exception as exc:  # every failure is reported, whatever it is
            status = f"{type(exc).__name__}: {exc}"
        answers[seq] = (intended, status)

    def settled_at() -> float | None:
        run: list[float] = []
        seq = 0
        while seq in answers:
            intended, status = answers[seq]
            run = [*run, intended] if status == new else []
            seq += 1
        return run[0] if len(run) >= settle else None

    start = time.perf_counter()
    wrote: list[float] = []  # the write's end, seconds from ``start``; the writer's
    write_errors: list[BaseException] = []

    def do_write() -> None:
        try:
            write()
        except BaseException as exc:
            write_errors.append(exc)
        finally:
            wrote.append(time.perf_counter() - start)

    # The polls do not wait for the write: they start with it, at their fixed times.
    writer = threading.Thread(target=do_write, name="intention-write")
    writer.start()
    settled: float | None = None
    with ThreadPoolExecutor(max_workers=16) as pool:
        seq = 0
        while settled is None:
            intended = start + seq * interval
            if intended - start > timeout:
                break
            delay = intended - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, seq, intended)
            seq += 1
            settled = settled_at()
    writer.join(timeout=30)
    if write_errors:
        raise RuntimeError(f"the write failed: {write_errors[0]}") from write_errors[0]
    if not wrote:
        raise TimeoutError("the write did not return within 30 s")
    settled = settled_at() if settled is None else settled
    done = [answers[s] for s in sorted(answers)]
    if settled is None:
        raise TimeoutError(
            f"the change to {new} did not settle within {timeout}s: "
            f"{[status for _, status in done][-20:]}"
        )
    first = min(intended for intended, status in done if status == new)
    others = tuple(str(status) for _, status in done if status not in (old, new))
    return FlipTiming(wrote[0], first - start, settled - start, others)


# ---- a client agent away (mesh) -------------------------------------------------------


def client_agent_away(
    plan: ClusterPlan,
    index: int,
    while_away: Callable[[], None],
    hold: float = 3.0,
    timeout: float = 40.0,
) -> dict[str, float]:
    """Restart one host's client agent with a checked gap: stop it, check its API is
    gone, run ``while_away`` (probes of what must hold without it), keep it down for at
    least ``hold`` s, start it; its instances must stay or come back passing.
    """
    agent = [a for a in plan.agents() if not a.server][index]
    started = time.monotonic()
    control.stop_in_parallel(plan, [agent.program])
    try:
        with socket.socket() as sock:
            sock.settimeout(2)
            if sock.connect_ex((agent.host, plan.consul.https)) == 0:
                raise RuntimeError(f"{agent.program} still accepts connections after its stop")
        while_away()
        remaining = hold - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)
    finally:
        control.start_programs(plan, [agent.program])
    down = time.monotonic() - started
    control.wait_passing(plan, [i for i in plan.instances() if i.host == agent.host], timeout)
    return {"agent_down_s": down, "back_passing_s": time.monotonic() - started}
