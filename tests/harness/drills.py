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
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from bench.loadgen import LoadReport, run_open_loop
from services.client import PlatformClient
from services.cluster import control
from services.cluster.plan import ClusterPlan
from tests.harness import secure_cluster


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

    def call(self, seq: int) -> tuple[bool, str]:
        """One request: even ``seq`` creates an order (new key), odd reads one."""
        who = seq % len(self.tokens)
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        url = f"{self.plan.gateway_url}/api/orders"
        if seq % 2 == 0:
            key = f"k-{seq}-{uuid.uuid4().hex[:10]}"
            self.keys[key] = who
            items = {"items": [{"sku": f"sku-{seq}", "quantity": 1}]}
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
