"""The one jittered backoff: equal and full jitter, capped, seeded, a tenacity wait."""

from __future__ import annotations

import random

import pytest
from tenacity import Retrying, stop_after_attempt

from consul_discovery.connection.backoff import JitterBackoff


def test_equal_jitter_stays_in_the_upper_half_of_a_capped_exponential_step():
    backoff = JitterBackoff(0.25, 5.0, rng=random.Random(1))
    assert [backoff.step(n) for n in (1, 2, 3, 5, 6, 100)] == [0.25, 0.5, 1.0, 4.0, 5.0, 5.0]
    for attempt in range(1, 40):
        step = backoff.step(attempt)
        assert step / 2 <= backoff.delay(attempt) <= step
    assert backoff.delay(3, 0.0) == 0.5 and backoff.delay(3, 0.999) == pytest.approx(0.9995)


def test_full_jitter_spans_zero_to_the_step():
    backoff = JitterBackoff(0.005, 0.25, jitter="full")
    assert backoff.delay(1, 0.0) == 0.0
    assert backoff.delay(2, 0.5) == pytest.approx(0.005)
    assert backoff.delay(20, 0.999) == pytest.approx(0.24975)


def test_seeded_waits_repeat_and_it_plugs_into_tenacity():
    first = JitterBackoff(rng=random.Random(7))
    again = JitterBackoff(rng=random.Random(7))
    assert [first.delay(n) for n in range(1, 8)] == [again.delay(n) for n in range(1, 8)]
    waits: list[float] = []
    for attempt in Retrying(
        wait=JitterBackoff(0.1, 0.4, rng=random.Random(2)), sleep=waits.append,
        stop=stop_after_attempt(4), reraise=True,
    ):  # fmt: skip
        with attempt:
            if attempt.retry_state.attempt_number < 4:
                raise ConnectionError("not yet")
    assert len(waits) == 3 and all(0.05 <= w <= 0.4 for w in waits)


@pytest.mark.parametrize("kwargs", [{"initial": 0}, {"initial": 2, "cap": 1}, {"jitter": "half"}])
def test_bad_settings_are_named(kwargs):
    with pytest.raises(ValueError, match=r"initial|jitter"):
        JitterBackoff(**kwargs)
