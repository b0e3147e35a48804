"""Closed-loop throughput of two paths side by side: they take turns by short windows.

A few threads call as fast as they go for the whole run, and time is cut into windows
of ``window`` seconds; in each window every thread calls the same path, in ABBA order
(A B, B A, A B, ...). A window's figure is the number of calls started in it, and each
pair of windows (one per path, next to each other) gives one ratio.

Why not whole runs of each path in turn: on this shared VM the same code's throughput
swings ±20% from one short run to the next (threads starting and finishing apart, the
GIL's hand-offs, a neighbour's burst). Windows of one continuous loop leave out the
start and the stragglers at the end, and a hundred pairs a few seconds long see the same
moments of the machine for both paths. A call that straddles a window's end delays the
next window's first call on that thread; ABBA puts each path on each side of a change
equally often, so that evens out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

LEAD = 0.02  # seconds between starting the threads and the first window


@dataclass(frozen=True, slots=True)
class WindowedRun:
    """Calls started per window, as (path 0, path 1) per pair of windows."""

    window: float
    counts: tuple[tuple[int, int], ...]

    def ratios(self) -> list[float]:
        """Per pair of windows: path 1's calls over path 0's."""
        return [second / first for first, second in self.counts if first]

    def rate(self, path: int) -> float:
        """Calls per second of ``path`` over all its windows."""
        total = sum(pair[path] for pair in self.counts)
        return total / (len(self.counts) * self.window) if self.counts else 0.0


def abba(pairs: int) -> list[int]:
    """The path of each window: 0 1, 1 0, 0 1, ... (``pairs`` pairs)."""
    return [path for n in range(pairs) for path in ((0, 1) if n % 2 == 0 else (1, 0))]


def alternating_windows(
    paths: Sequence[Callable[[], object]],
    *,
    threads: int,
    window: float,
    pairs: int,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], object] = time.sleep,
) -> WindowedRun:
    """Run ``threads`` closed loops over ``pairs`` ABBA pairs of ``window`` seconds.

    ``paths`` are two callables; each raises when its call failed, which ends the run
    (RuntimeError, the first failure chained).
    """
    if len(paths) != 2:
        raise ValueError(f"need two paths, got {len(paths)}")
    if threads < 1 or window <= 0 or pairs < 1:
        raise ValueError(f"need threads >= 1, window > 0, pairs >= 1; got {threads=} "
                         f"{window=} {pairs=}")  # fmt: skip
    order = abba(pairs)
    counts = [0] * len(order)
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []
    start = clock() + LEAD
    end = start + len(order) * window

    def loop() -> None:
        mine = [0] * len(order)
        try:
            while not stop.is_set():
                now = clock()
                if now >= end:
                    break
                if now < start:
                    sleep(start - now)
                    continue
                at = int((now - start) / window)
                paths[order[at]]()
                mine[at] += 1
        except BaseException as exc:  # reported after join; the others stop too
            errors.append(exc)
            stop.set()
        with lock:
            for at, n in enumerate(mine):
                counts[at] += n

    workers = [threading.Thread(target=loop, name=f"closed-loop-{n}") for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise RuntimeError(f"closed-loop run failed: {errors[0]!r}") from errors[0]
    per_pair = []
    for n in range(pairs):
        a, b = counts[2 * n], counts[2 * n + 1]
        per_pair.append((a, b) if order[2 * n] == 0 else (b, a))
    return WindowedRun(window, tuple(per_pair))
