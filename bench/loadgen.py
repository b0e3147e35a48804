"""An open-loop, fixed-rate load generator.

Requests are scheduled at fixed intended send times (rate × duration of them, bounded)
and handed to a thread pool; latency is measured from each request's *intended* send
time, so queueing inside the client shows up in the tail instead of being hidden as it is
by closed-loop tools (coordinated omission).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one request did: when it was due, how long it took from then, and its result."""

    seq: int
    intended: float
    latency: float
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class LoadReport:
    """Every outcome of one run (percentiles and charts: bench/result.py)."""

    outcomes: tuple[Outcome, ...]
    duration: float

    @property
    def failures(self) -> list[Outcome]:
        """The outcomes that failed."""
        return [o for o in self.outcomes if not o.ok]


def run_open_loop(
    call: Callable[[int], tuple[bool, str]],
    rate: float,
    duration: float,
    max_workers: int = 64,
    clock: Callable[[], float] = time.perf_counter,
    stop: threading.Event | None = None,
) -> LoadReport:
    """Call ``call(seq)`` ``rate`` times a second for ``duration`` seconds, open loop.

    ``call`` returns (ok, detail). The run is bounded: at most rate × duration requests,
    and it ends early when ``stop`` is set.
    """
    if rate <= 0 or duration <= 0:
        raise ValueError(f"rate and duration must be positive; got {rate=} {duration=}")
    total = int(rate * duration)
    interval = 1.0 / rate
    outcomes: list[Outcome | None] = [None] * total
    start = clock()

    def one(seq: int, intended: float) -> None:
        try:
            ok, detail = call(seq)
        except Exception as exc:  # a load generator records every failure, whatever it is
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        outcomes[seq] = Outcome(seq, intended - start, clock() - intended, ok, detail)

    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        for seq in range(total):
            if stop is not None and stop.is_set():
                break
            intended = start + seq * interval
            delay = intended - clock()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, seq, intended)
    done = tuple(o for o in outcomes if o is not None)
    return LoadReport(done, clock() - start)


async def run_open_loop_async(
    call: Callable[[int], Awaitable[tuple[bool, str]]],
    rate: float,
    duration: float,
    clock: Callable[[], float] = time.perf_counter,
) -> LoadReport:
    """``run_open_loop`` on the running event loop: one task per request, no threads.

    Each request starts as a task at its intended send time; latency is measured from
    that time, so a loop too busy to start it on time shows in the tail.
    """
    if rate <= 0 or duration <= 0:
        raise ValueError(f"rate and duration must be positive; got {rate=} {duration=}")
    total = int(rate * duration)
    outcomes: list[Outcome | None] = [None] * total
    start = clock()

    async def one(seq: int, intended: float) -> None:
        try:
            ok, detail = await call(seq)
        except Exception as exc:  # a load generator records every failure, whatever it is
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        outcomes[seq] = Outcome(seq, intended - start, clock() - intended, ok, detail)

    tasks = []
    for seq in range(total):
        intended = start + seq / rate
        delay = intended - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(seq, intended)))
    await asyncio.gather(*tasks)
    done = tuple(o for o in outcomes if o is not None)
    return LoadReport(done, clock() - start)
