"""Async client: httpx.AsyncClient through AsyncDiscoveryTransport, overhead and throughput.

Backends are minimal uvicorn processes (bench/asgi_backend.py) so that the client, not
the server, is what is measured. Two parts, each side by side in the same run:

* overhead: open loop at ``rate`` to one instance, ``httpx.AsyncClient`` straight to its
  address vs through the discovery transport (watch, pick, plan, trace headers), rounds
  alternating; latency from each request's intended send time.
* throughput per process: a fixed number of GETs over 3 instances, closed loop, as fast
  as they go: ``concurrency`` asyncio tasks through the transport vs ``threads`` threads
  through the threaded ``ServiceClient`` (requests), rounds alternating.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from bench.asgi_backend import uvicorn_backends
from bench.env import consul_agent
from bench.loadgen import LoadReport, run_open_loop_async
from bench.result import Chart, Result, at_least, at_most, summary
from consul_discovery.client import ServiceClient, ServiceConfig
from consul_discovery.client.httpx_pools import instance_limits
from consul_discovery.client.httpx_transport import AsyncDiscoveryTransport

SERVICE = "fastpoke"
TIMEOUT = httpx.Timeout(5.0)


@dataclass(frozen=True, slots=True)
class Params:
    """Overhead load shape and throughput sizes."""

    rate: float = 150.0
    seconds: float = 4.0
    rounds: int = 4  # overhead rounds per path, alternating
    calls: int = 6000  # throughput: GETs per path per round
    concurrency: tuple[int, ...] = (8, 64)  # asyncio tasks, one run each
    threads: int = 16  # ServiceClient threads
    throughput_rounds: int = 2


FULL = Params()
QUICK = Params(rate=100.0, seconds=1.0, rounds=1, calls=300, throughput_rounds=1)


def _answer(response: httpx.Response) -> tuple[bool, str]:
    if response.status_code != 200:
        return False, f"HTTP {response.status_code}"
    return True, str(response.json()["instance"])


async def _overhead(p: Params, address: str, direct_url: str) -> dict[str, list[LoadReport]]:
    direct = httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(limits=instance_limits()), timeout=TIMEOUT
    )
    ours = httpx.AsyncClient(transport=AsyncDiscoveryTransport(address), timeout=TIMEOUT)
    paths: dict[str, Callable[[int], Awaitable[tuple[bool, str]]]] = {}

    async def via_direct(_seq: int) -> tuple[bool, str]:
        return _answer(await direct.get(direct_url))

    async def via_ours(_seq: int) -> tuple[bool, str]:
        return _answer(await ours.get(f"http://{SERVICE}/"))

    paths = {"AsyncClient direct": via_direct, "AsyncClient + discovery transport": via_ours}
    reports: dict[str, list[LoadReport]] = {name: [] for name in paths}
    try:
        for call in paths.values():  # warm: resolved, connections open
            for seq in range(20):
                await call(seq)
        names = list(paths)
        for n in range(p.rounds):
            for name in names if n % 2 == 0 else reversed(names):
                reports[name].append(await run_open_loop_async(paths[name], p.rate, p.seconds))
    finally:
        await direct.aclose()
        await ours.aclose()
    return reports


async def _async_throughput(p: Params, address: str, tasks: int) -> tuple[float, list[float]]:
    config = {SERVICE: ServiceConfig("least_request")}
    transport = AsyncDiscoveryTransport(address, services=config)
    latencies: list[float] = []
    async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as http:
        for _ in range(50):
            await http.get(f"http://{SERVICE}/")

        async def worker(count: int) -> None:
            for _ in range(count):
                started = time.perf_counter()
                response = await http.get(f"http://{SERVICE}/")
                assert response.status_code == 200, response.status_code
                latencies.append(time.perf_counter() - started)

        share = p.calls // tasks
        started = time.perf_counter()
        await asyncio.gather(*(worker(share) for _ in range(tasks)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies


def _threaded_throughput(p: Params, address: str) -> tuple[float, list[float]]:
    config = {SERVICE: ServiceConfig("least_request")}
    latencies: list[float] = []
    with ServiceClient(address, services=config, pool_maxsize=p.threads) as client:
        for _ in range(50):
            client.get(SERVICE, "/").close()

        def worker(count: int) -> None:
            for _ in range(count):
                started = time.perf_counter()
                response = client.get(SERVICE, "/")
                assert response.status_code == 200, response.status_code
                latencies.append(time.perf_counter() - started)

        share = p.calls // p.threads
        started = time.perf_counter()
        with ThreadPoolExecutor(p.threads) as pool:
            list(pool.map(worker, [share] * p.threads))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies


def run(p: Params) -> Result:
    """Overhead on one instance, then throughput over three, in one agent."""
    with consul_agent() as agent:
        with uvicorn_backends(agent, SERVICE, 1):
            port = int(agent.client().health.service(SERVICE)[1][0]["Service"]["Port"])
            overhead = asyncio.run(_overhead(p, agent.address, f"http://127.0.0.1:{port}/"))
        agent.client().agent.service.deregister(f"{SERVICE}-0")
        with uvicorn_backends(agent, SERVICE, 3):
            threads = f"ServiceClient ({p.threads} threads)"
            names = [*(f"asyncio + transport ({n} tasks)" for n in p.concurrency), threads]
            runs: dict[str, list[tuple[float, list[float]]]] = {name: [] for name in names}
            for n in range(p.throughput_rounds):
                for name in names if n % 2 == 0 else reversed(names):
                    if name == threads:
                        runs[name].append(_threaded_throughput(p, agent.address))
                    else:
                        tasks = p.concurrency[names.index(name)]
                        load = _async_throughput(p, agent.address, tasks)
                        runs[name].append(asyncio.run(load))
    rows = []
    lat: dict[str, dict[str, float]] = {}
    for name, reports in overhead.items():
        outcomes = [o for r in reports for o in r.outcomes]
        s = summary([o.latency for o in outcomes if o.ok], scale=1e3)
        failed = sum(1 for o in outcomes if not o.ok)
        lat[name] = s
        rows.append({"part": "overhead", "path": name, "rps": p.rate, "p50_ms": s["p50"],
                     "p99_ms": s["p99"], "n": s["n"], "failed": failed})  # fmt: skip
    tput: dict[str, dict[str, float]] = {}
    for name, results in runs.items():
        rps = sorted(r for r, _ in results)[len(results) // 2]
        s = summary([x for _, xs in results for x in xs], scale=1e3)
        tput[name] = {"rps": rps, **s}
        rows.append({"part": "throughput", "path": name, "rps": rps, "p50_ms": s["p50"],
                     "p99_ms": s["p99"], "n": s["n"], "failed": 0})  # fmt: skip
    direct, ours = lat["AsyncClient direct"], lat["AsyncClient + discovery transport"]
    base = tput.pop(threads)
    best_name = max(tput, key=lambda k: tput[k]["rps"])  # the best asyncio concurrency
    best = tput[best_name]
    tput[threads] = base
    ratio = best["rps"] / base["rps"]
    return Result(
        name="async_client",
        title=(
            f"httpx.AsyncClient + discovery transport: overhead at {p.rate:g} req/s on one "
            f"uvicorn instance; throughput over 3 ({p.calls} GETs per run)"
        ),
        rows=rows,
        checks=[
            at_most("async transport p50 / direct p50", ours["p50"] / direct["p50"], 1.05, "×"),
            at_most("async transport p99 / direct p99", ours["p99"] / direct["p99"], 1.05, "×"),
            at_least(
                "asyncio transport req/s / threaded ServiceClient req/s",
                ratio,
                3.0,
                "×",
                note=best_name,
            ),
            at_most("asyncio p99 / threaded p99", best["p99"] / base["p99"], 1.0, "×", best_name),
        ],
        charts=[
            Chart(
                "Requests per second per process",
                "req/s",
                ("throughput",),
                {k: [v["rps"]] for k, v in tput.items()},
            ),
            Chart(
                "Overhead: latency at a fixed rate",
                "ms",
                ("p50", "p99"),
                {k: [v["p50"], v["p99"]] for k, v in lat.items()},
            ),
        ],
        params={"throughput_ratio": ratio, "best_asyncio": best_name},
    )
