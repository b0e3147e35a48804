"""The windowed closed loop (bench/closed_loop.py): order, attribution, failures."""

from __future__ import annotations

import statistics

import pytest

from bench.closed_loop import abba, alternating_windows
from bench.result import median_interval
from tests.discovery_client.fakes import FakeClock


def test_windows_take_turns_in_abba_order() -> None:
    assert abba(3) == [0, 1, 1, 0, 0, 1]


def test_each_window_counts_the_calls_of_its_own_path() -> None:
    time = FakeClock(start=0.0)
    called: list[int] = []

    def path(n: int, cost: float):
        def call() -> None:
            called.append(n)
            time.now += cost

        return call

    run = alternating_windows(
        [path(0, 0.002), path(1, 0.001)],
        threads=1,
        window=0.1,
        pairs=6,
        clock=time,
        sleep=time.sleep,
    )
    assert len(run.counts) == 6
    for slow, fast in run.counts:  # path 0 costs twice what path 1 does
        assert slow in (49, 50, 51) and fast in (99, 100, 101)
    assert statistics.median(run.ratios()) == pytest.approx(2.0, rel=0.05)
    assert run.rate(1) == pytest.approx(2 * run.rate(0), rel=0.05)
    assert sum(map(sum, run.counts)) == len(called)


def test_a_failing_call_ends_the_run_and_is_raised() -> None:
    def fails() -> None:
        raise ConnectionError("refused")

    with pytest.raises(RuntimeError, match="refused") as caught:
        alternating_windows([fails, fails], threads=2, window=0.01, pairs=2)
    assert isinstance(caught.value.__cause__, ConnectionError)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="two paths"):
        alternating_windows([lambda: None], threads=1, window=0.1, pairs=1)
    with pytest.raises(ValueError, match="window=0"):
        alternating_windows([lambda: None] * 2, threads=1, window=0, pairs=1)


def test_the_median_interval_holds_the_median_and_narrows_with_more_values() -> None:
    few = [0.9, 1.1, 1.0, 0.95, 1.05]
    many = few * 40
    low, high = median_interval(few)
    assert low <= statistics.median(few) <= high
    narrow = median_interval(many)
    assert narrow[1] - narrow[0] < high - low
    assert median_interval(many) == narrow  # seeded: the same figures every run
