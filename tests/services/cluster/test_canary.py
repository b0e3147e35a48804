"""The canary's config entries and its verdict (pure; the e2e test runs it on a cluster)."""

from __future__ import annotations

import pytest

from services.cluster.canary import CanaryError, Served, check, entries, splitter


def test_entries_are_written_defaults_first_and_subsets_filter_on_the_version() -> None:
    kinds = [e["Kind"] for e in entries(10)]
    assert kinds == ["service-defaults", "service-resolver", "service-splitter", "service-router"]
    resolver = entries(10)[1]
    assert resolver["DefaultSubset"] == "v1"
    assert resolver["Subsets"]["v2"] == {"Filter": 'Service.Meta.version == "2.0.0"'}
    assert splitter(10)["Splits"] == [
        {"Weight": 90.0, "ServiceSubset": "v1"},
        {"Weight": 10, "ServiceSubset": "v2"},
    ]


def figures(**over: Served) -> dict[str, Served]:
    base = {
        "header": Served(0, 50),
        "90/10": Served(180, 20),
        "0/100": Served(0, 200),
        "100/0": Served(200, 0),
    }
    return {**base, **over}


def test_a_canary_that_routed_as_written_passes() -> None:
    check(figures())
    assert str(Served(180, 20)) == "v1 180, v2 20 (v2 10.0%)"


@pytest.mark.parametrize(
    ("step", "served", "message"),
    [
        ("header", Served(1, 49), "X-Canary: 1 reached v1"),
        ("90/10", Served(120, 80), "90/10 sent 40.0% to v2"),
        ("0/100", Served(3, 197), "a full split leaked"),
        ("100/0", Served(199, 1), "a full split leaked"),
    ],
)
def test_a_canary_that_leaked_fails_naming_the_step(
    step: str, served: Served, message: str
) -> None:
    with pytest.raises(CanaryError, match=message):
        check(figures(**{step: served}))
