"""2. Client overhead: keep-alive GETs to one real instance, requests.Session vs ServiceClient.

Both paths use one pooled ``requests.Session`` (trust_env off, same pool size) against
the same gunicorn backend (no delay). Latency: open-loop at a fixed rate well below
capacity (bench/loadgen.py, measured from each request's intended send time).
Throughput: closed loop, a fixed number of GETs from a few threads, as fast as they go.
The two paths alternate, round after round, so drift on a shared machine hits both.
Also measured: each path's own CPU cost per call with a canned in-memory transport
mounted on its Session (no socket, no server), which is the overhead itself.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests
from requests.adapters import BaseAdapter, HTTPAdapter

from bench.env import consul_agent, start_backends
from bench.loadgen import run_open_loop
from bench.result import Chart, Result, at_least, at_most, percentile, summary
from consul_discovery.client import ServiceClient

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


def no_io_cost(get: Callable[[], requests.Response], calls: int) -> list[float]:
    """Seconds per call of ``get`` one after another (after a warm-up)."""
    for _ in range(min(200, calls)):
        get()
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        get()
        samples.append(time.perf_counter() - t0)
    return samples


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
        with (
            direct_session(CannedAdapter()) as canned,
            ServiceClient(agent.address, timeout=timeout, session=canned) as client,
        ):
            no_io_paths = {
                "requests.Session": lambda: canned.get(url, timeout=timeout),
                "ServiceClient": lambda: client.get(SERVICE, "/"),
            }
            no_io: dict[str, list[float]] = {name: [] for name in no_io_paths}
            for n in range(p.rounds):
                for name in no_io_paths if n % 2 == 0 else reversed(no_io_paths):
                    no_io[name] += no_io_cost(no_io_paths[name], p.no_io_calls // p.rounds)
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
    return Result(
        name="client_overhead",
        title="Client overhead: one instance, keep-alive GETs",
        rows=rows,
        checks=[
            at_most("latency p50 ours/direct", p50_ratio, 1.05, "×"),
            at_most("latency p99 ours/direct", p99_ratio, 1.05, "×"),
            at_least("throughput ours/direct", rps_ratio, 0.95, "×"),
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
        ],
    )


def _ok(response: requests.Response) -> tuple[bool, str]:
    ok = response.status_code == 200
    response.close()
    return ok, "" if ok else str(response.status_code)
