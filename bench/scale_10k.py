"""Scale: 10,000 instances over 100 services, one client watching them all.

The instances live on 10 client agents ("hosts", 1,000 each, every one with a TTL
check, 1 h, passing) joined to one server (``-bootstrap-expect=1``, Raft on disk, not
``-dev``: a dev agent pretty-prints every answer, which doubles the body of a
100-instance answer and its parse). One server rather than the 3-server cluster because
this machine has 2 cores: three servers replicating every flip on the same cores would
measure the machine's contention, not the watch. Client agents rather than one agent
holding everything because one node with 10,000 services is pathological for Consul
(every change re-publishes the node's service list: registration measured ~7/s at
3,500 services on one node) and no real host carries that; and the watching client
reads through a client agent, as a service on a host does, so the query backend that
answers (``X-Consul-Query-Backend``, recorded per flip) is the client agent's.

Measured: the time from starting the agents to every instance in the catalog; the
client's memory (tracemalloc of Python allocations while resolving every service, and
RSS growth); Consul requests per service per blocking wait while idle (the watch's own
counter); check flip → new picker (a listener after the Balancer) with flips 0.1 s
apart; where that time goes, in the same run: a raw long poll of the flipped service
next to the client's watch times Consul's side (API call → response headers) and the
transfer of the body, the client's side is the rest of each flip (the agent's answer
→ the new picker), and the client's in-process stages on that very body
(``json.loads`` and orjson's, ``instances_from_entries`` and the watch's
``InstanceCache`` that keeps unchanged entries' Instances, ``build_resolution``,
``Balancer.update``); the client's threads (every watch is a task on one event loop);
and the agents' CPU (from /proc, server and hosts together) while idle and while
flipping.
"""

from __future__ import annotations

import gc
import json
import random
import shutil
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.env import rss_bytes
from bench.hosts import agents_cpu, hosts_cluster, services_configs, wait_synced
from bench.propagation import SetRecorder, timed
from bench.result import Chart, Result, at_most, summary
from consul_discovery.client import Balancer, ConsulSource, ServiceClient
from consul_discovery.client.health_entries import (
    InstanceCache,
    build_resolution,
    instances_from_entries,
)

try:
    import orjson
except ImportError:  # the speedups extra is not installed: its row is left out
    orjson = None


@dataclass(frozen=True, slots=True)
class Params:
    """Catalog size, blocking wait, idle periods, flips and the gap between them."""

    services: int = 100
    per_service: int = 100
    hosts: int = 10  # client agents holding the instances (the watcher's is the first)
    wait: float = 10.0
    idle_periods: int = 2
    flips: int = 40  # each one critical then passing again: 2 timed events
    gap: float = 0.1
    stage_rounds: int = 50


FULL = Params()
QUICK = Params(
    services=3, per_service=5, hosts=2, wait=1.0, idle_periods=1, flips=3, stage_rounds=5
)


class RawPoll:
    """One raw blocking query beside the client's watch: when headers and body arrived."""

    def __init__(self, url: str, index: int, wait: float) -> None:
        self.started = self.headers_at = self.body_at = 0.0  # perf_counter times
        self.backend = ""
        self.body = b""
        self._thread = threading.Thread(target=self._run, args=(url, index, wait), daemon=True)
        self._thread.start()

    def _run(self, url: str, index: int, wait: float) -> None:
        with requests.get(url, params={"index": index, "wait": f"{wait}s"}, stream=True) as r:
            self.headers_at = time.perf_counter()
            self.backend = r.headers.get("X-Consul-Query-Backend", "")
            self.body = r.content
            self.body_at = time.perf_counter()

    def join(self, timeout: float) -> None:
        """Wait for the answer."""
        self._thread.join(timeout)


def flip_once(hosts, source, recorder, name: str, sid: str, fail: bool, wait: float):
    """Flip ``sid``'s TTL check on its host agent: (seconds to the new picker, a raw poll
    on the watching process's agent beside it, one on the server).

    ``hosts`` = (the instance's host agent, the watcher's agent, the server).
    """
    host, agent, server = hosts
    checks = host.client().agent.check
    index = source.watch_stats(name).index
    raw = RawPoll(f"{agent.url}/v1/health/service/{name}", index, wait)
    at_server = RawPoll(f"{server.url}/v1/health/service/{name}", index, wait)
    time.sleep(0.005)  # the raw polls are parked before the flip
    action = checks.ttl_fail if fail else checks.ttl_pass
    raw.started = at_server.started = time.perf_counter()
    took = timed(
        recorder,
        lambda: action(f"service:{sid}"),
        (lambda s: sid not in s) if fail else (lambda s: sid in s),
        10.0,
    )
    raw.join(10.0)
    at_server.join(10.0)
    return took, raw, at_server


def stage_costs(service: str, body: bytes, rounds: int) -> dict[str, list[float]]:
    """Seconds per client stage on one real answer of ``service`` (the garbage collector
    paused while timing: with 10,000 Instances alive a collection costs milliseconds,
    which would land on whichever stage triggered it)."""
    gc.collect()
    gc.disable()
    try:
        return _stage_costs(service, body, rounds)
    finally:
        gc.enable()


def _stage_costs(service: str, body: bytes, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {
        "json": [], "orjson": [], "instances": [], "instances reused": [], "resolution": [],
        "update": [],
    }  # fmt: skip
    balancer = Balancer(service)
    cache = InstanceCache()
    cache.instances(json.loads(body))
    for _ in range(rounds):
        t0 = time.perf_counter()
        entries = json.loads(body)
        t1 = time.perf_counter()
        instances = instances_from_entries(entries)
        t2 = time.perf_counter()
        res = build_resolution(service, instances, 1, time.monotonic(), 0.0)
        t3 = time.perf_counter()
        balancer.update(res)
        t4 = time.perf_counter()
        cache.instances(entries)
        t5 = time.perf_counter()
        for name, a, b in (("json", t0, t1), ("instances", t1, t2)):
            out[name].append(b - a)
        out["resolution"].append(t3 - t2)
        out["update"].append(t4 - t3)
        out["instances reused"].append(t5 - t4)
        if orjson is not None:
            t6 = time.perf_counter()
            orjson.loads(body)
            out["orjson"].append(time.perf_counter() - t6)
    return {name: values for name, values in out.items() if values}


def run(p: Params) -> Result:
    """Register, resolve (memory), idle (requests, agent CPU), flip (latency, stages)."""
    names = [f"big-{n}" for n in range(p.services)]
    workdir = Path(tempfile.mkdtemp(prefix="scale-10k-"))
    try:
        configs, ids, owner = services_configs(names, p.per_service, p.hosts, workdir)
        t0 = time.perf_counter()
        with hosts_cluster(configs) as (server, clients):
            wait_synced(server, names, p.per_service, timeout=600)
            registered_s = time.perf_counter() - t0
            return measure(p, server, clients, names, ids, owner, registered_s)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def measure(p: Params, server, clients, names, ids, owner, registered_s: float) -> Result:
    """Everything after the catalog is full (see the module docstring)."""
    rng = random.Random(10_000)
    agent = clients[0]  # the watching process's local agent
    pids = [a.pid for a in (server, *clients) if a.pid is not None]
    gc.collect()
    rss0, threads0 = rss_bytes(), threading.active_count()
    tracemalloc.start()
    source = ConsulSource(agent.address, wait=p.wait)
    client = ServiceClient(source=source)
    try:
        t0 = time.perf_counter()
        for name in names:
            client.balancer(name)  # starts every watch at once, no I/O here
        for name in names:
            source.resolve(name, timeout=60)
        resolve_s = time.perf_counter() - t0
        traced, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        gc.collect()
        rss1, threads = rss_bytes(), threading.active_count() - threads0
        time.sleep(1.0)  # every watch parked in its blocking query
        before = {n: source.watch_stats(n).requests for n in names}
        cpu0, w0 = agents_cpu(pids), time.perf_counter()
        time.sleep(p.idle_periods * p.wait)
        idle_cpu = (agents_cpu(pids) - cpu0) / (time.perf_counter() - w0)
        idle = [(source.watch_stats(n).requests - before[n]) / p.idle_periods for n in names]
        recorders = {n: SetRecorder() for n in names}
        for n in names:
            source.subscribe(n, recorders[n])
        applied, consul_side, transfer, backends, ours = [], [], [], set(), []
        server_side: list[float] = []
        body, body_service = b"", names[0]
        cpu0, w0 = agents_cpu(pids), time.perf_counter()
        for _ in range(p.flips):
            name = rng.choice(names)
            sid = rng.choice(ids[name])
            for fail in (True, False):
                hosts = (clients[owner[sid]], agent, server)
                took, raw, at_server = flip_once(
                    hosts, source, recorders[name], name, sid, fail, p.wait
                )
                if at_server.headers_at:
                    server_side.append(at_server.headers_at - at_server.started)
                applied.append(took)
                if raw.headers_at:
                    consul_side.append(raw.headers_at - raw.started)
                    ours.append(max(0.0, took - (raw.headers_at - raw.started)))
                    transfer.append(raw.body_at - raw.headers_at)
                    backends.add(raw.backend or "none")
                    body, body_service = raw.body, name
                time.sleep(p.gap)
        flip_cpu = (agents_cpu(pids) - cpu0) / (time.perf_counter() - w0)
    finally:
        tracemalloc.stop()
        client.close()
        source.close()
    stages = stage_costs(body_service, body, p.stage_rounds)
    upd = summary(applied, scale=1e3)
    total = p.services * p.per_service
    consul = summary(consul_side, scale=1e3)
    figures: list[tuple[str, float, str]] = [
        (f"instances ({p.services} services × {p.per_service})", total, ""),
        ("agent start + first sync of every instance (TTL checks)", registered_s, "s"),
        ("resolve every service (first answers)", resolve_s, "s"),
        ("client memory, Python allocations", traced / 2**20, "MiB"),
        ("client memory, RSS growth", (rss1 - rss0) / 2**20, "MiB"),
        (f"client threads for {p.services} watches", threads, ""),
        (f"idle requests/service per {p.wait:g} s wait, max", max(idle), "req"),
        ("idle requests/service per wait, mean", sum(idle) / len(idle), "req"),
        (f"agents' CPU idle (server + {p.hosts} hosts)", idle_cpu * 100, "% of a core"),
        (f"agents' CPU flipping every {p.gap:g} s", flip_cpu * 100, "% of a core"),
        ("check flip → new picker, p50", upd["p50"], "ms"),
        ("check flip → new picker, p99", upd["p99"], "ms"),
        ("  Consul: API call → watcher's agent answers, p50", consul["p50"], "ms"),
        ("  Consul: API call → watcher's agent answers, p99", consul["p99"], "ms"),
        ("  of which the server's answer, p50", summary(server_side, 1e3)["p50"], "ms"),
        ("  of which the server's answer, p99", summary(server_side, 1e3)["p99"], "ms"),
        ("  body transfer, p50", summary(transfer, scale=1e3)["p50"], "ms"),
        ("  client: agent's answer → new picker, p50", summary(ours, 1e3)["p50"], "ms"),
        ("  client: agent's answer → new picker, p99", summary(ours, 1e3)["p99"], "ms"),
        (f"  body size ({p.per_service} instances)", len(body) / 1024, "KiB"),
    ]
    for stage, values in stages.items():
        s = summary(values, scale=1e3)
        figures.append((f"  client {stage}, p50 (p99)", s["p50"], f"ms ({s['p99']:.3g})"))
    rows = [{"metric": m, "value": v, "unit": u} for m, v, u in figures]
    return Result(
        name="scale_10k",
        title=f"Scale: {total:,} instances over {p.services} services, one client",
        rows=rows,
        checks=[
            at_most("idle requests per service per wait period", max(idle), 1.0),
            at_most("check flip → new picker p99 (flips 0.1 s apart)", upd["p99"], 50, " ms"),
        ],
        charts=[
            Chart(
                "Check flip → new picker, and Consul's part (CDF)",
                "ms",
                (),
                {
                    "flip → picker": [v * 1e3 for v in applied],
                    "flip → Consul's answer headers": [v * 1e3 for v in consul_side],
                },
                kind="cdf",
            )
        ],
        params={
            "query_backends": sorted(backends),
            "events_timed": len(applied),
            "client_side_p99_ms": summary(ours, 1e3)["p99"],
        },
        notes=[f"query backend of the health watches: {', '.join(sorted(backends))}"],
    )
