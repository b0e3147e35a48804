"""Tally: lock-free adds from many threads, exact reads; InstanceLoad's counts built on it."""

from __future__ import annotations

import threading

from consul_discovery.client.budget import RetryBudget
from consul_discovery.client.load import InstanceLoad
from consul_discovery.client.tally import Tally

THREADS, EACH = 8, 20_000


def _hammer(work) -> None:
    start = threading.Barrier(THREADS)

    def run() -> None:
        start.wait()
        for _ in range(EACH):
            work()

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_adds_from_many_threads_are_all_counted_and_reads_do_not_count():
    tally = Tally()
    reads = []
    reader = threading.Thread(target=lambda: reads.extend(tally.value for _ in range(2000)))
    reader.start()
    _hammer(tally.add)
    reader.join()
    assert tally.value == THREADS * EACH
    assert tally.value == THREADS * EACH  # reading again changes nothing
    assert reads == sorted(reads)  # a read never sees fewer than an earlier one
    assert repr(tally) == f"Tally({THREADS * EACH})"


def test_in_flight_and_picks_are_exact_after_concurrent_attempts():
    load = InstanceLoad("i1", now=0.0)

    def attempt() -> None:
        load.begin(retry=False)
        load.finish(1.0, 0.001, failed=False)

    _hammer(attempt)
    assert load.in_flight == 0
    assert load.picks == THREADS * EACH
    assert load.consecutive_failures == 0


def test_failures_keep_an_exact_streak_and_a_success_ends_it():
    load = InstanceLoad("i1", now=0.0)
    for n in range(1, 4):
        load.begin(retry=n > 1)
        assert load.finish(1.0, None, failed=True) == n
    assert (load.failures, load.retries, load.consecutive_failures) == (3, 2, 3)
    load.begin(retry=True)
    assert load.finish(2.0, 0.002, failed=False) == 0
    assert (load.failures, load.retries, load.picks, load.in_flight) == (3, 3, 4, 0)


def test_budget_deposits_from_many_threads_are_all_counted_and_banked():
    total = THREADS * EACH
    budget = RetryBudget(ratio=1.0, min_per_second=0, burst=total, clock=lambda: 0.0)
    assert all(budget.try_withdraw() for _ in range(total))  # drained: balance 0
    assert not budget.try_withdraw()
    _hammer(budget.deposit)
    assert budget.deposits == total
    assert budget.balance == total  # every deposit banked, none lost
