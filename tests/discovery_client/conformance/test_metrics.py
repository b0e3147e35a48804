"""The metric series: every transport publishes the same series under the same names, in
its own registry (a collector over ``stats()``) and through ClientMetricsPublisher (the
process-wide, multiprocess-safe copy services serve on ``/metrics``)."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, generate_latest

from consul_discovery.client import ServiceConfig
from consul_discovery.client.metrics import INSTANCE_SERIES, SERIES, ClientMetricsPublisher
from tests.discovery_client.conformance.conftest import register

_SAMPLE = re.compile(r"^(discovery_client_\w+?)(?:_total)?\{([^}]*)\} (\S+)$", re.MULTILINE)


def _series(text: str) -> dict[str, dict[str, float]]:
    """name -> {labels: value} of every discovery_client sample in an exposition."""
    found: dict[str, dict[str, float]] = {}
    for name, labels, value in _SAMPLE.findall(text):
        if name.endswith("_created"):
            continue
        found.setdefault(name, {})[labels] = float(value)
    return found


def test_every_transport_publishes_the_same_series(agent, procs, make):
    register(agent, "metered", "metered-0", procs[0].port)
    register(agent, "metered", "metered-1", procs[1].port)
    caller = make(services={"metered": ServiceConfig(policy="round_robin")})
    for _ in range(4):
        assert caller.call("metered").status == 200
    expected = {f"discovery_client_{s.name}" for s in SERIES}

    own = _series(caller.metrics_text())
    registry = CollectorRegistry()
    ClientMetricsPublisher(caller.owner, registry=registry).publish()
    published = _series(generate_latest(registry).decode())

    for view in (own, published):
        assert set(view) == expected, sorted(set(view) ^ expected)
        assert view["discovery_client_calls"] == {'upstream="metered"': 4.0}
        assert view["discovery_client_attempts"] == {
            'instance_id="metered-0",upstream="metered"': 2.0,
            'instance_id="metered-1",upstream="metered"': 2.0,
        }
        assert view["discovery_client_instances"] == {'upstream="metered"': 2.0}
        assert view["discovery_client_cache_stale"] == {'upstream="metered"': 0.0}
        for series in INSTANCE_SERIES:
            assert len(view[f"discovery_client_{series.name}"]) == 2, series.name
