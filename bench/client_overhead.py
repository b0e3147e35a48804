"""2. Client overhead: keep-alive GETs to one real instance, requests.Session vs ServiceClient.

Both paths use one pooled ``requests.Session`` (trust_env off, same pool size) against
the same gunicorn backend (no delay). This machine's speed drifts (a shared VM: the same
call can take twice as long a second later), so the two paths are measured side by side:

* Latency: open loop at a fixed rate well below capacity (bench/loadgen.py, measured
  from each request's intended send time), the two paths taking turns on one schedule
  (even sends one path, odd sends the other; which is first alternates by round), so
  both see the same moments of the machine.
* Throughput: closed loop, a few threads calling as fast as they go, one path at a
  time (sharing the threads would hide a path's cost in the other's waits): the two
  paths take turns by windows of 0.1 s in ABBA order within one continuous run
  (bench/closed_loop.py), and the figure is the median of the pairs' ratios, with a
  bootstrap 95% interval. (Whole runs of each path in turn, as before stop 31, swung
  ±20% run to run on this VM: 16 pairs could not tell 0.96 from 1.0.)

Also measured: the discovery layer's own CPU per call, for each transport, over the raw
client with a canned in-memory transport (no socket, no server): ``requests.Session``
with a canned adapter vs ``ServiceClient`` on it, ``httpx.Client`` with an
``httpx.MockTransport`` vs ``DiscoveryTransport`` over it, and the same for
``httpx.AsyncClient`` and ``AsyncDiscoveryTransport``. The two paths of a pair alternate
in batches of 50 calls, and the figure is the median, over pairs of batches, of the
difference of their mean times per call (drift on a shared machine moves both alike).
ServiceClient prepares a plain call faster than ``Session.get`` (it skips requests'
generic merges when they change nothing: consul_discovery.client.prepare), so for
requests the target applies to a second pair, whose raw side prepares its call the same
way (``Session.send``): the discovery layer's own cost, not hidden by that saving.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import requests
from requests.adapters import BaseAdapter, HTTPAdapter

from bench.closed_loop import alternating_windows
from bench.env import consul_agent, start_backends
from bench.loadgen import run_open_loop
from bench.result import (
    Chart,
    Result,
    at_least,
    at_most,
    median_interval,
    percentile,
    summary,
)
from consul_discovery.client import AsyncDiscoveryTransport, DiscoveryTransport, ServiceClient
from consul_discovery.client.prepare import prepare_request

SERVICE = "overhead"
POOL = 32


@dataclass(frozen=True, slots=True)
class Params:
    """Latency rounds (the shared open-loop schedule's rate and seconds), closed-loop
    pairs of windows (seconds per window, threads), and the calls of the CPU-per-call
    pairs."""

    rounds: int = 4
    rate: float = 150.0  # requests/s of the shared schedule: half of them per path
    seconds: float = 7.0
    throughput_pairs: int = 200  # ABBA: each pair is one window of each path
    throughput_window: float = 0.1  # seconds
    threads: int = 4
    no_io_calls: int = 4000  # per path, in alternating batches of BATCH


FULL = Params()
QUICK = Params(
    rounds=1, rate=50.0, seconds=1.0, throughput_pairs=4, throughput_window=0.05, threads=2,
    no_io_calls=100,
)  # fmt: skip


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


BATCH = 50  # calls per batch: each pair of paths alternates batch by batch


def _warm(get: Callable[[], Any]) -> None:
    for _ in range(200):
        get()


def _batch(get: Callable[[], Any]) -> list[float]:
    """Seconds per call of ``get``, ``BATCH`` calls one after another."""
    samples = []
    for _ in range(BATCH):
        t0 = time.perf_counter()
        get()
        samples.append(time.perf_counter() - t0)
    return samples


async def _batch_async(get: Callable[[], Awaitable[Any]]) -> list[float]:
    samples = []
    for _ in range(BATCH):
        t0 = time.perf_counter()
        await get()
        samples.append(time.perf_counter() - t0)
    return samples


@dataclass
class Paired:
    """Per-call times of a raw path and of the same through discovery, measured in
    alternating batches, and per pair of batches the difference of their mean times."""

    raw: list[float]
    ours: list[float]
    differences: list[float]

    @property
    def overhead(self) -> float:
        """The discovery layer's cost per call (seconds): the median difference.

        Batches of the two paths alternate, so a machine that slows down or speeds up
        (a shared one) moves both sides of each difference alike.
        """
        return statistics.median(self.differences)


def paired(raw: Callable[[], Any], ours: Callable[[], Any], calls: int) -> Paired:
    """``calls`` calls of each path, in alternating batches."""
    _warm(raw)
    _warm(ours)
    found = Paired([], [], [])
    for n in range(max(1, calls // BATCH)):
        first, second = (raw, ours) if n % 2 == 0 else (ours, raw)
        a, b = _batch(first), _batch(second)
        r, o = (a, b) if first is raw else (b, a)
        found.raw += r
        found.ours += o
        found.differences.append(statistics.fmean(o) - statistics.fmean(r))
    return found


async def paired_async(
    raw: Callable[[], Awaitable[Any]], ours: Callable[[], Awaitable[Any]], calls: int
) -> Paired:
    """``paired`` on the running event loop."""
    for get in (raw, ours):
        for _ in range(200):
            await get()
    found = Paired([], [], [])
    for n in range(max(1, calls // BATCH)):
        first, second = (raw, ours) if n % 2 == 0 else (ours, raw)
        a, b = await _batch_async(first), await _batch_async(second)
        r, o = (a, b) if first is raw else (b, a)
        found.raw += r
        found.ours += o
        found.differences.append(statistics.fmean(o) - statistics.fmean(r))
    return found


def _canned(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b'{"instance": "canned"}')


def cpu_per_call(
    p: Params, address: str, url: str, timeout: tuple[float, float]
) -> dict[str, Paired]:
    """Each raw client against the same through discovery, canned transports, per label."""
    service_url = f"http://{SERVICE}/"
    found: dict[str, Paired] = {}
    with (
        direct_session(CannedAdapter()) as canned,
        ServiceClient(address, timeout=timeout, session=canned) as client,
    ):
        found["requests"] = paired(
            lambda: canned.get(url, timeout=timeout),
            lambda: client.get(SERVICE, "/"),
            p.no_io_calls,
        )
        # ServiceClient prepares a plain call faster than Session.get does
        # (consul_discovery.client.prepare), which hides the discovery layer's own cost
        # in the pair above: this pair prepares the raw call the same way.
        found[ALIKE] = paired(
            lambda: canned.send(
                prepare_request(canned, requests.Request("GET", url)), timeout=timeout
            ),
            lambda: client.get(SERVICE, "/"),
            p.no_io_calls,
        )
    mock = httpx.MockTransport(_canned)
    with (
        httpx.Client(transport=mock) as raw,
        httpx.Client(transport=DiscoveryTransport(consul_addr=address, inner=mock)) as ours,
    ):
        found["httpx sync"] = paired(
            lambda: raw.get(url), lambda: ours.get(service_url), p.no_io_calls
        )

    async def run_async() -> Paired:
        transport = AsyncDiscoveryTransport(address, inner=mock)
        async with (
            httpx.AsyncClient(transport=mock) as raw,
            httpx.AsyncClient(transport=transport) as ours,
        ):
            return await paired_async(
                lambda: raw.get(url), lambda: ours.get(service_url), p.no_io_calls
            )

    found["httpx async"] = asyncio.run(run_async())
    return found


ALIKE = "requests, prepared alike"  # the requests pair without the preparation's difference

# label -> (raw path, the same through discovery): the rows of the CPU-per-call table
CPU_PAIRS = {
    "requests": ("requests.Session", "ServiceClient"),
    ALIKE: ("Session.send, prepared as ServiceClient prepares", "ServiceClient"),
    "httpx sync": ("httpx.Client", "httpx.Client + DiscoveryTransport"),
    "httpx async": ("httpx.AsyncClient", "httpx.AsyncClient + AsyncDiscoveryTransport"),
}


def run(p: Params) -> Result:
    """Alternate the two paths for ``rounds`` rounds; pool latencies, median throughputs."""
    latencies: dict[str, list[float]] = {"requests.Session": [], "ServiceClient": []}
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
            for n in range(p.rounds):  # the paths take turns on one open-loop schedule
                order = list(paths) if n % 2 == 0 else list(reversed(paths))
                gets = [paths[name] for name in order]
                report = run_open_loop(
                    lambda seq, gets=gets: _ok(gets[seq % 2]()), p.rate, p.seconds
                )
                for outcome in report.outcomes:
                    name = order[outcome.seq % 2]
                    if outcome.ok:
                        latencies[name].append(outcome.latency)
                    else:
                        failures[name] += 1
            windows = alternating_windows(
                [lambda get=get: get().raise_for_status() for get in paths.values()],
                threads=p.threads,
                window=p.throughput_window,
                pairs=p.throughput_pairs,
            )
        no_io = cpu_per_call(p, agent.address, url, timeout)
    rows, stats = [], {}
    for name in latencies:
        s = summary(latencies[name], scale=1e3)
        stats[name] = (s, windows.rate(list(paths).index(name)))  # path n: windows' n
        rows.append(
            {
                "path": name,
                "p50_ms": s["p50"],
                "p99_ms": s["p99"],
                "n": s["n"],
                "failed": failures[name],
                "throughput_rps": stats[name][1],
                "no_io_p50_us": percentile(_side(no_io["requests"], name), 50) * 1e6,
                "no_io_p99_us": percentile(_side(no_io["requests"], name), 99) * 1e6,
            }
        )
    direct, ours = stats["requests.Session"][0], stats["ServiceClient"][0]
    p50_ratio, p99_ratio = ours["p50"] / direct["p50"], ours["p99"] / direct["p99"]
    # Each pair measured both paths back to back: the median of the pairs' ratios is
    # what a shared machine's drift moves least.
    ratios = windows.ratios()
    rps_ratio = statistics.median(ratios)
    low, high = median_interval(ratios)
    rows.append(
        {
            "path": "ratio ours/direct",
            "p50_ms": p50_ratio,
            "p99_ms": p99_ratio,
            "throughput_rps": rps_ratio,
        }
    )
    overhead: dict[str, float] = {}
    for label, (raw, ours_name) in CPU_PAIRS.items():
        pair = no_io[label]
        overhead[label] = pair.overhead * 1e6
        if label not in ("requests", ALIKE):  # the requests pair's are on its latency rows
            for name, samples in ((raw, pair.raw), (ours_name, pair.ours)):
                rows.append({"path": name, "no_io_p50_us": percentile(samples, 50) * 1e6,
                             "no_io_p99_us": percentile(samples, 99) * 1e6})  # fmt: skip
        rows.append({"path": f"discovery CPU per call, {label}", "no_io_p50_us": overhead[label]})
    return Result(
        name="client_overhead",
        title="Client overhead: one instance, keep-alive GETs",
        rows=rows,
        checks=[
            at_most("latency p50 ours/direct", p50_ratio, 1.02, "×"),
            at_most("latency p99 ours/direct", p99_ratio, 1.05, "×"),
            at_least(
                "throughput ours/direct",
                rps_ratio,
                0.98,
                "×",
                f"95% interval {low:.3f}-{high:.3f} over {len(ratios)} pairs of windows",
            ),
            *(  # requests: over the raw call prepared alike (the layer's own cost)
                at_most(f"discovery CPU per call over the raw client, {label}", value, 10, " µs")
                for label, value in overhead.items()
                if label != "requests"
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


def _side(pair: Paired, name: str) -> list[float]:
    return pair.raw if name == CPU_PAIRS["requests"][0] else pair.ours


def _ok(response: requests.Response) -> tuple[bool, str]:
    ok = response.status_code == 200
    response.close()
    return ok, "" if ok else str(response.status_code)
