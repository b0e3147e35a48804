"""Consul's discovery chain, the same through every transport: a splitter's share, a
header route to a subset, and a failover to the other subset (real agent, gunicorn
backends; tests/discovery_client/chain has the rest: rewrites, header modifiers)."""

from __future__ import annotations

from collections import Counter

import requests

from tests.discovery_client.chain.consul_chain import write_entry
from tests.discovery_client.conformance.conftest import register

SERVICE = "chained"
CALLS = 400


def _entries(agent) -> None:
    write_entry(agent, {"Kind": "service-defaults", "Name": SERVICE, "Protocol": "http"})
    write_entry(agent, {
        "Kind": "service-resolver", "Name": SERVICE, "DefaultSubset": "v1",
        "Subsets": {"v1": {"Filter": 'Service.Meta.version == "1"'},
                    "v2": {"Filter": 'Service.Meta.version == "2"'}},
        "Failover": {"v1": {"ServiceSubset": "v2"}},
    })  # fmt: skip
    write_entry(agent, {"Kind": "service-splitter", "Name": SERVICE, "Splits": [
        {"Weight": 75, "ServiceSubset": "v1"}, {"Weight": 25, "ServiceSubset": "v2"}]})  # fmt: skip
    write_entry(agent, {"Kind": "service-router", "Name": SERVICE, "Routes": [{
        "Match": {"HTTP": {"Header": [{"Name": "x-canary", "Present": True}]}},
        "Destination": {"ServiceSubset": "v2"}}]})  # fmt: skip


def _ttl(agent, ident: str, verb: str) -> None:
    url = f"{agent.url}/v1/agent/check/{verb}/service:{ident}"
    requests.put(url, timeout=5).raise_for_status()


def test_a_chain_splits_routes_by_header_and_fails_over_to_a_subset(agent, procs, make):
    for n, proc in enumerate(procs):
        register(agent, SERVICE, f"{SERVICE}-{n}", proc.port, meta={"version": "12"[n // 2]})
    _entries(agent)  # proc-0, proc-1: v1; proc-2: v2
    caller = make()
    core = caller.owner.core

    def chained() -> bool:
        assert caller.call(SERVICE).status == 200
        return core.chain(SERVICE) is not None

    caller.until(chained, 10, "the chain to reach the client")
    seen = Counter(caller.call(SERVICE).instance for _ in range(CALLS))
    share = seen["proc-2"] / CALLS
    print(f"\n{caller.kind}: v2 share {share:.3f} of {CALLS} at 75/25")
    assert 0.17 <= share <= 0.33, seen
    canary = {caller.call(SERVICE, headers={"X-Canary": "yes"}).instance for _ in range(12)}
    assert canary == {"proc-2"}
    for ident in (f"{SERVICE}-0", f"{SERVICE}-1"):
        _ttl(agent, ident, "fail")
    try:
        v1 = next(s for s in core._states.states() if s.target.filter and '"1"' in s.target.filter)
        caller.until(lambda: not v1.balancer.resolution.instances, 10, "v1's subset to empty")
        answers = [caller.call(SERVICE) for _ in range(40)]
        assert {a.status for a in answers} == {200}
        assert {a.instance for a in answers} == {"proc-2"}
    finally:
        for ident in (f"{SERVICE}-0", f"{SERVICE}-1"):
            _ttl(agent, ident, "pass")
