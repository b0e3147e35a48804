"""``DISCOVERY_SHARED_WATCHES`` is read as strictly as the CONSUL_* booleans: a value that
is not true or false is named, never taken as "on" (no agent: the relay never starts)."""

from __future__ import annotations

import logging

import pytest

from consul_discovery.client.relay import (
    RELAY_ENV,
    SHARED_WATCHES_ENV,
    shared_watches_enabled,
    start_master_relay,
)
from consul_discovery.connection import ConsulConfigError


@pytest.mark.parametrize(
    ("raw", "enabled"),
    [("", True), ("true", True), ("1", True), ("on", True), ("false", False), ("0", False),
     ("no", False), (" OFF ", False)],
)  # fmt: skip
def test_shared_watches_reads_a_boolean(raw: str, enabled: bool):
    assert shared_watches_enabled({SHARED_WATCHES_ENV: raw}) is enabled


def test_shared_watches_names_a_value_that_is_not_a_boolean():
    with pytest.raises(ConsulConfigError, match="DISCOVERY_SHARED_WATCHES: 'maybe' is not a boo"):
        shared_watches_enabled({SHARED_WATCHES_ENV: "maybe"})


def test_a_master_with_a_bad_value_runs_no_relay_and_says_why(caplog):
    env = {SHARED_WATCHES_ENV: "maybe", RELAY_ENV: "/inherited/relay.sock"}
    with caplog.at_level(logging.WARNING, logger="consul_discovery.client.relay"):
        assert start_master_relay(env) is None
    assert RELAY_ENV not in env
    assert "DISCOVERY_SHARED_WATCHES: 'maybe' is not a boolean" in caplog.text
