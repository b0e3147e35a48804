"""Pure pieces of bench/: percentiles, table rendering, HAProxy config, checks."""

from __future__ import annotations

import math

from bench.haproxy import render_config
from bench.report import fmt, table
from bench.result import at_least, at_most, percentile, summary


def test_percentile_is_nearest_rank_and_nan_when_empty() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 51.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert math.isnan(percentile([], 50))


def test_summary_scales_every_figure() -> None:
    s = summary([0.001, 0.002, 0.003], scale=1e3)
    assert s == {"n": 3, "p50": 2.0, "p99": 3.0, "p999": 3.0}


def test_checks_say_whether_the_target_is_met() -> None:
    assert at_most("p99", 9.9, 10, " µs").met
    assert not at_most("p99", 10.1, 10, " µs").met
    assert at_least("ratio", 150, 100, "×").target == ">= 100×"
    assert not at_least("ratio", math.nan, 100).met


def test_table_aligns_numbers_right_and_text_left() -> None:
    text = table([{"policy": "rr", "p99": 1.23456}, {"policy": "peak_ewma", "p99": 1234.5}])
    lines = text.splitlines()
    assert lines[0].split() == ["policy", "p99"]
    assert lines[1] == "rr          1.23"
    assert lines[2] == "peak_ewma  1,234"
    assert fmt(0.000123) == "0.000123"


def test_haproxy_config_discovers_by_srv_on_the_agents_dns_port() -> None:
    config = render_config(
        dns_port=8600, listen_port=9000, service="echo", slots=3, balance="roundrobin"
    )
    assert "nameserver consul 127.0.0.1:8600" in config
    assert "bind 127.0.0.1:9000" in config
    assert "server-template srv 3 _echo._tcp.service.consul resolvers consul" in config
    assert "balance roundrobin" in config
