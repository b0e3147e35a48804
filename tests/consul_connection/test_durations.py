"""The one rule for a duration written as text (consul_discovery.connection.durations)."""

from __future__ import annotations

import pytest

from consul_discovery.connection.durations import duration_seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("250us", 250e-6),
     ("2.5", 2.5), (" 7 ", 7.0), ("0", 0.0), (3, 3.0), (0.25, 0.25)],
)  # fmt: skip
def test_durations_read_as_consul_spells_them(text: object, seconds: float) -> None:
    assert duration_seconds(text) == pytest.approx(seconds)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "problem"),
    [("soon", "'soon' is not a duration (e.g. '10s', '1m30s', '500ms', or a number of seconds)"),
     ("10x", "'10x' is not a duration"), ("10s5", "'10s5' is not a duration"),
     ("", "'' is not a duration"), ("nan", "'nan' is not a finite duration"),
     ("inf", "'inf' is not a finite duration"), (float("inf"), "inf is not a finite duration"),
     ("-1", "'-1' is negative"), (True, "True is not a duration"),
     (None, "None is not a duration")],
)  # fmt: skip
def test_what_is_not_a_duration_is_named(text: object, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        duration_seconds(text)  # type: ignore[arg-type]
    assert str(info.value).startswith(problem)


def test_positive_refuses_zero_only_when_asked() -> None:
    assert duration_seconds("0s") == 0.0
    with pytest.raises(ValueError, match=r"^'0s' is not more than 0 seconds$"):
        duration_seconds("0s", positive=True)
    assert duration_seconds("1ms", positive=True) == 0.001
