"""Intention decisions held to Consul's own: the agent's authorize endpoint for L4.

For every rule kind the test writes the intentions, asks the agent directly
(``POST /v1/agent/connect/authorize``, what Consul's built-in proxy asks too) and
compares it with our decision, through the agent (cached) and from the intentions alone
(what we decide when the agent cannot answer), under both default policies. L7 rules
are decided in-process (the agent says "deny" for them; tests/mesh/test_l7.py holds the
matching to Consul's documented rules).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from consul_discovery.mesh import Authorizer, RequestView, SpiffeId
from consul_discovery.mesh.authorizer import _local_result
from tests.harness.agent import ConsulAgent
from tests.harness.connect import delete_intentions, set_protocol, write_intentions
from tests.mesh.conftest import FAST, connection

DEST = "orders"
GET_ROOT = RequestView("GET", "/")

L7 = [{"Action": "allow", "HTTP": {"PathPrefix": "/public", "Methods": ["GET"]}}]

DENY_API_ALLOW_REST = [{"Name": "api", "Action": "deny"}, {"Name": "*", "Action": "allow"}]

# (rule kind, intentions on DEST, intentions on "*", caller)
RULES: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]], str]] = [
    ("exact allow", [{"Name": "api", "Action": "allow"}], [], "api"),
    ("exact deny", [{"Name": "api", "Action": "deny"}], [], "api"),
    ("wildcard source allow", [{"Name": "*", "Action": "allow"}], [], "api"),
    ("wildcard source deny", [{"Name": "*", "Action": "deny"}], [], "api"),
    ("exact beats wildcard", DENY_API_ALLOW_REST, [], "api"),
    ("wildcard for the others", DENY_API_ALLOW_REST, [], "web"),
    ("another source only", [{"Name": "web", "Action": "allow"}], [], "api"),
    ("no intention: default", [], [], "api"),
    ("wildcard destination", [], [{"Name": "api", "Action": "deny"}], "api"),
    ("exact destination beats wildcard destination", [{"Name": "api", "Action": "allow"}],
     [{"Name": "api", "Action": "deny"}], "api"),
    ("wildcard to wildcard", [], [{"Name": "*", "Action": "allow"}], "api"),
    ("L7 intention", [{"Name": "api", "Permissions": L7}], [], "api"),
]  # fmt: skip


@pytest.fixture(params=["allow", "deny"], scope="module")
def policy_agent(request: pytest.FixtureRequest) -> ConsulAgent:
    """The module's agents: default intention policy allow (ACLs off) and deny."""
    agent: ConsulAgent = request.getfixturevalue(
        "agent" if request.param == "allow" else "deny_agent"
    )
    set_protocol(agent.url, DEST, "http")  # L7 permissions need an http service
    return agent


@pytest.fixture
def authorizer(policy_agent: ConsulAgent) -> Iterator[Authorizer]:
    auth = Authorizer(DEST, connection(policy_agent), timing=FAST).start().wait_ready()
    try:
        yield auth
    finally:
        auth.close()


def _source(agent: ConsulAgent, name: str) -> SpiffeId:
    roots = requests.get(f"{agent.url}/v1/agent/connect/ca/roots", timeout=5).json()
    return SpiffeId(roots["TrustDomain"], "default", "dc1", name)


def _agent_says(agent: ConsulAgent, source: SpiffeId) -> tuple[bool, str]:
    body = requests.post(
        f"{agent.url}/v1/agent/connect/authorize",
        json={"Target": DEST, "ClientCertURI": source.uri},
        timeout=5,
    ).json()
    return bool(body["Authorized"]), str(body["Reason"])


def _apply(agent: ConsulAgent, auth: Authorizer, on_dest: list[Any], on_any: list[Any]) -> None:
    for destination, sources in ((DEST, on_dest), ("*", on_any)):
        if sources:
            write_intentions(agent.url, destination, sources)
        else:
            with contextlib.suppress(requests.HTTPError):
                delete_intentions(agent.url, destination)
    # Caught up once the watch holds what the agent's cache answers now.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        answer = requests.get(
            f"{agent.url}/v1/connect/intentions/match",
            params={"by": "destination", "name": DEST, "cached": ""},
            timeout=5,
        )
        wanted = len(answer.json()[DEST] or [])
        current = auth.intentions
        if (
            current is not None
            and wanted == len(on_dest) + len(on_any)
            and len(current.intentions) == wanted
            and current.index == int(answer.headers["X-Consul-Index"])
        ):
            return
        time.sleep(0.01)
    raise AssertionError("the intentions watch did not catch up with the agent")


@pytest.mark.parametrize(("kind", "on_dest", "on_any", "caller"), RULES, ids=[r[0] for r in RULES])
def test_l4_decisions_are_consuls_own(
    policy_agent: ConsulAgent, authorizer: Authorizer, kind: str, on_dest: list[Any],
    on_any: list[Any], caller: str,
) -> None:  # fmt: skip
    _apply(policy_agent, authorizer, on_dest, on_any)
    source = _source(policy_agent, caller)
    consul_allowed, reason = _agent_says(policy_agent, source)
    snapshot = authorizer._snapshot
    assert snapshot is not None
    local = _local_result(snapshot, source)  # our precedence, without the agent
    if kind == "L7 intention":
        assert not consul_allowed and reason.startswith("Matched L7")
        assert local.l7 and not local.authorized
        assert authorizer.decide(source, RequestView("GET", "/public/x")).allowed
        fallthrough = authorizer.decide(source, RequestView("POST", "/public/x"))
        assert fallthrough.layer == "L7"
        assert fallthrough.allowed is _default_allow(policy_agent)
        return
    decision = authorizer.decide(source, GET_ROOT)
    assert decision.allowed is consul_allowed, (decision, reason)
    assert local.authorized is consul_allowed, (local, reason)


def _default_allow(agent: ConsulAgent) -> bool:
    probe = SpiffeId("x.consul", "no-such-namespace", "dc1", "probe")
    return _agent_says(agent, probe)[0]


def test_the_default_policy_is_the_agents(
    policy_agent: ConsulAgent, authorizer: Authorizer
) -> None:
    _apply(policy_agent, authorizer, [], [])
    expected = _default_allow(policy_agent)
    assert authorizer.decide(_source(policy_agent, "newcomer"), GET_ROOT).allowed is expected
    assert authorizer._snapshot is not None and authorizer._snapshot.default_allow is expected


def test_one_agent_call_per_caller_then_the_cache(agent: ConsulAgent) -> None:
    with_auth = Authorizer(DEST, connection(agent), timing=FAST).start().wait_ready()
    try:
        _apply(agent, with_auth, [{"Name": "api", "Action": "allow"}], [])
        source = _source(agent, "api")
        calls = with_auth.authorize_calls
        for _ in range(500):
            assert with_auth.decide(source, GET_ROOT).allowed
        assert with_auth.authorize_calls == calls + 1
    finally:
        with_auth.close()


def test_the_cached_decision_costs_under_5_microseconds(agent: ConsulAgent) -> None:
    auth = Authorizer(DEST, connection(agent), timing=FAST).start().wait_ready()
    try:
        _apply(agent, auth, [{"Name": "api", "Action": "allow"}], [])
        source = _source(agent, "api")
        assert auth.decide(source, GET_ROOT).allowed  # the one agent call
        # A fresh, equal identity each time, as a new connection would bring.
        same = SpiffeId(source.trust_domain, "default", "dc1", "api")
        rounds = []
        for _ in range(7):
            started = time.perf_counter()
            for _ in range(20000):
                auth.cached(same, GET_ROOT)
            rounds.append((time.perf_counter() - started) / 20000 * 1e6)
        best, median = min(rounds), statistics.median(rounds)
        print(f"cached decision: best {best:.2f} us, median {median:.2f} us per call")
        assert best <= 5.0, rounds
    finally:
        auth.close()


def test_a_changed_intention_is_enforced_within_a_second(agent: ConsulAgent) -> None:
    auth = Authorizer(DEST, connection(agent), timing=FAST).start().wait_ready()
    try:
        source = _source(agent, "api")
        _apply(agent, auth, [{"Name": "api", "Action": "allow"}], [])
        assert auth.decide(source, GET_ROOT).allowed
        delays = []
        for flip in range(6):
            action = "deny" if flip % 2 == 0 else "allow"
            started = time.monotonic()
            write_intentions(agent.url, DEST, [{"Name": "api", "Action": action}])
            while auth.decide(source, GET_ROOT).allowed is not (action == "allow"):
                assert time.monotonic() - started < 1.0, f"flip {flip} not enforced in 1 s"
                time.sleep(0.001)
            delays.append(time.monotonic() - started)
        print(f"intention change -> enforced: {[round(d * 1000) for d in delays]} ms")
    finally:
        auth.close()


def test_decisions_in_force_survive_the_agent_going_away(agent: ConsulAgent) -> None:
    auth = Authorizer(DEST, connection(agent), timing=FAST).start().wait_ready()
    try:
        _apply(
            agent, auth, [{"Name": "api", "Action": "allow"}, {"Name": "*", "Action": "deny"}], []
        )
        known = _source(agent, "api")
        assert auth.decide(known, GET_ROOT).allowed
        agent.stop()
        try:
            assert auth.decide(known, GET_ROOT).allowed  # cached
            stranger = auth.decide(_source_offline(known, "stranger"), GET_ROOT)
            assert not stranger.allowed and "locally" in stranger.reason  # the * deny, locally
        finally:
            agent.start()
    finally:
        auth.close()


def _source_offline(like: SpiffeId, name: str) -> SpiffeId:
    return SpiffeId(like.trust_domain, "default", "dc1", name)
