"""2. Client overhead: keep-alive GETs to one real instance, requests.Session vs ServiceClient.

Both paths use one pooled ``requests.Session`` (trust_env off, same pool size) against
the same gunicorn backend (no delay). Latency: open-loop at a fixed rate well below
capacity (bench/loadgen.py, measured from each request's intended send time).
Throughput: closed loop, a fixed number of GETs from a few threads, as fast as they go.
The two paths alternate, round after round, so drift on a shared machine hits both.

Also measured: the discovery layer's own CPU per call, for each transport, over the raw
client with a canned in-memory transport (no socket, no server): ``requests.Session``
with a canned adapter vs ``ServiceClient`` on it, ``httpx.Client`` with an
``httpx.MockTransport`` vs ``DiscoveryTransport`` over it, and the same for
``httpx.AsyncClient`` and ``AsyncDiscoveryTransport``. Each call is timed alone, the
paths alternate in rounds, and the figure is the difference of the medians.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import requests
from requests.adapters import BaseAdapter, HTTPAdapter

from bench.env import consul_agent, start_backends
from bench.loadgen import run_open_loop
from bench.result import Chart, Result, at_least, at_most, percentile, summary
from consul_discovery.client import AsyncDiscoveryTransport, DiscoveryTransport, ServiceClient

SERVICE = "overhead"
POOL = 32


@dataclass(frozen=True, slots=True)
class Params:
    """Rounds, open-loop rate and duration, closed-loop request count and threads."""

    rounds: int = 4
    rate: float = 150.0
    seconds: float = 3.5
    throughput_requests: int = 1500
    threads: int = 4
    no_io_calls: int = 4000  # split over the rounds


FULL = Params()
QUICK = Params(rounds=1, rate=50.0, seconds=0.5, throughput_requests=60, threads=2, no_io_calls=50)


class CannedAdapter(BaseAdapter):
    """A transport answering every request with the same 200, without any I/O."""

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        """The canned response."""
        response = requests.Response()
        response.status_code = 200
        response._content = b'{"instance": "canned"}'
        response.headers["Content-Type"] = "application/json"
        response.request, response.url = request, request.url or ""
        return response

    def close(self) -> None:
        """Nothing to close."""


def direct_session(adapter: BaseAdapter | None = None) -> requests.Session:
    """A Session set up as ServiceClient sets up its own (or with ``adapter`` mounted)."""
    session = requests.Session()
    session.trust_env = False
    if adapter is None:
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=POOL, max_retries=0)
    session.mount("http://", adapter)
    return session


def no_io_cost(get: Callable[[], Any], calls: int) -> list[float]:
    """Seconds per call of ``get`` one after another (after a warm-up)."""
    for _ in range(min(200, calls)):
        get()
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        get()
        samples.append(time.perf_counter() - t0)
    return samples


async def no_io_cost_async(get: Callable[[], Awaitable[Any]], calls: int) -> list[float]:
    """``no_io_cost`` on the running event loop."""
    for _ in range(min(200, calls)):
        await get()
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        await get()
        samples.append(time.perf_counter() - t0)
    return samples


def _canned(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b'{"instance": "canned"}')


def _alternate(paths: dict[str, Callable[[], Any]], p: Params) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for n in range(p.rounds):
        for name in paths if n % 2 == 0 else reversed(paths):
            samples[name] += no_io_cost(paths[name], p.no_io_calls // p.rounds)
    return samples


def cpu_per_call(
    p: Params, address: str, url: str, timeout: tuple[float, float]
) -> dict[str, list[float]]:
    """Per-call times of each raw client and the same through discovery, canned transports."""
    service_url = f"http://{SERVICE}/"
    with (
        direct_session(CannedAdapter()) as canned,
        ServiceClient(address, timeout=timeout, session=canned) as client,
    ):
        samples = _alternate(
            {
                "requests.Session": lambda: canned.get(url, timeout=timeout),
                "ServiceClient": lambda: client.get(SERVICE, "/"),
            },
            p,
        )
    mock = httpx.MockTransport(_canned)
    with (
        httpx.Client(transport=mock) as raw,
        httpx.Client(transport=DiscoveryTransport(consul_addr=address, inner=mock)) as ours,
    ):
        samples |= _alternate(
            {
                "httpx.Client": lambda: raw.get(url),
                "httpx.Client + DiscoveryTransport": lambda: ours.get(service_url),
            },
            p,
        )

    async def run_async() -> dict[str, list[float]]:
        transport = AsyncDiscoveryTransport(address, inner=mock)
        async with (
            httpx.AsyncClient(transport=mock) as raw,
            httpx.AsyncClient(transport=transport) as ours,
        ):
            paths = {
                "httpx.AsyncClient": lambda: raw.get(url),
                "httpx.AsyncClient + AsyncDiscoveryTransport": lambda: ours.get(service_url),
            }
            found: dict[str, list[float]] = {name: [] for name in paths}
            for n in range(p.rounds):
                for name in paths if n % 2 == 0 else reversed(paths):
                    found[name] += await no_io_cost_async(paths[name], p.no_io_calls // p.rounds)
            return found

    return samples | asyncio.run(run_async())


# (raw path, the same through discovery): the rows of the CPU-per-call table
CPU_PAIRS = (
    ("requests", "requests.Session", "ServiceClient"),
    ("httpx sync", "httpx.Client", "httpx.Client + DiscoveryTransport"),
    ("httpx async", "httpx.AsyncClient", "httpx.AsyncClient + AsyncDiscoveryTransport"),
)


def throughput(get: Callable[[], requests.Response], total: int, threads: int) -> float:
    """Completed GETs per second, ``total`` of them split over ``threads`` closed loops."""
    per_thread = total // threads
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            for _ in range(per_thread):
                get().raise_for_status()
        except BaseException as exc:  # reported after join
            errors.append(exc)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"throughput run failed: {errors[0]!r}") from errors[0]
    return per_thread * threads / elapsed


def run(p: Params) -> Result:
    """Alternate the two paths for ``rounds`` rounds; pool latencies, median throughputs."""
    latencies: dict[str, list[float]] = {"requests.Session": [], "ServiceClient": []}
    rates: dict[str, list[float]] = {"requests.Session": [], "ServiceClient": []}
    failures = dict.fromkeys(latencies, 0)
    with consul_agent() as agent, start_backends(agent, SERVICE, 1) as backends:
        url = backends[0].url + "/"
        timeout = (1.0, 5.0)
        with (
            direct_session() as session,
            ServiceClient(agent.address, timeout=timeout, pool_maxsize=POOL) as client,
        ):
            paths = {
                "requests.Session": lambda: session.get(url, timeout=timeout),
                "ServiceClient": lambda: client.get(SERVICE, "/"),
            }
            for get in paths.values():  # warm up: connections, resolution, code paths
                for _ in range(30):
                    get().raise_for_status()
            for n in range(p.rounds):
                order = list(paths) if n % 2 == 0 else list(reversed(paths))
                for name in order:
                    get = paths[name]
                    report = run_open_loop(lambda _seq, get=get: _ok(get()), p.rate, p.seconds)
                    latencies[name] += [o.latency for o in report.outcomes if o.ok]
                    failures[name] += len(report.failures)
                for name in order:
                    rates[name].append(throughput(paths[name], p.throughput_requests, p.threads))
        no_io = cpu_per_call(p, agent.address, url, timeout)
    rows, stats = [], {}
    for name in latencies:
        s = summary(latencies[name], scale=1e3)
        stats[name] = (s, statistics.median(rates[name]))
        rows.append(
            {
                "path": name,
                "p50_ms": s["p50"],
                "p99_ms": s["p99"],
                "n": s["n"],
                "failed": failures[name],
                "throughput_rps": stats[name][1],
                "no_io_p50_us": percentile(no_io[name], 50) * 1e6,
                "no_io_p99_us": percentile(no_io[name], 99) * 1e6,
            }
        )
    (direct, direct_rps), (ours, ours_rps) = stats["requests.Session"], stats["ServiceClient"]
    p50_ratio, p99_ratio = ours["p50"] / direct["p50"], ours["p99"] / direct["p99"]
    rps_ratio = ours_rps / direct_rps
    rows.append(
        {
            "path": "ratio ours/direct",
            "p50_ms": p50_ratio,
            "p99_ms": p99_ratio,
            "throughput_rps": rps_ratio,
        }
    )
    overhead: dict[str, float] = {}
    for label, raw, ours_name in CPU_PAIRS:
        raw_p50 = percentile(no_io[raw], 50) * 1e6
        ours_p50 = percentile(no_io[ours_name], 50) * 1e6
        overhead[label] = ours_p50 - raw_p50
        for name, p50 in ((raw, raw_p50), (ours_name, ours_p50)):
            if name in latencies:
                continue  # the requests pair's figures are on its latency rows
            rows.append({"path": name, "no_io_p50_us": p50,
                         "no_io_p99_us": percentile(no_io[name], 99) * 1e6})  # fmt: skip
        rows.append({"path": f"discovery CPU per call, {label}", "no_io_p50_us": overhead[label]})
    return Result(
        name="client_overhead",
        title="Client overhead: one instance, keep-alive GETs",
        rows=rows,
        checks=[
            at_most("latency p50 ours/direct", p50_ratio, 1.02, "×"),
            at_most("latency p99 ours/direct", p99_ratio, 1.05, "×"),
            at_least("throughput ours/direct", rps_ratio, 0.98, "×"),
            *(
                at_most(f"discovery CPU per call over the raw client, {label}", value, 10, " µs")
                for label, value in overhead.items()
            ),
        ],
        charts=[
            Chart(
                "Latency (open loop)",
                "ms",
                ("p50", "p99"),
                {k: [v[0]["p50"], v[0]["p99"]] for k, v in stats.items()},
            ),
            Chart(
                "Throughput (closed loop)",
                "requests/s",
                ("throughput",),
                {k: [v[1]] for k, v in stats.items()},
            ),
            Chart(
                "Discovery CPU per call over the raw client (canned transport)",
                "µs",
                ("overhead",),
                {label: [value] for label, value in overhead.items()},
            ),
        ],
    )


def _ok(response: requests.Response) -> tuple[bool, str]:
    ok = response.status_code == 200
    response.close()
    return ok, "" if ok else str(response.status_code)
