"""Self-preservation with a fake clock: restarts are survived, real removals are not held.

First the pure rule (``SelfPreservation``), then the same rule inside the health watch
(``health_state`` polled like its driver does) with a scripted agent that goes away and
comes back empty.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.health_entries import build_resolution, instance_from_entry
from consul_discovery.client.instance import Instance, Resolution
from consul_discovery.client.preservation import DEFAULT_GRACE, SelfPreservation
from consul_discovery.client.source import WatchKey
from consul_discovery.client.target import Target
from consul_discovery.client.watch import HealthState, health_state
from consul_discovery.connection.blocking import WatchTiming
from consul_discovery.connection.exchange import Request, Response
from consul_discovery.connection.watch_drivers import poll_once
from tests.discovery_client.fake_consul import REFUSED, health_response
from tests.discovery_client.fakes import FakeClock


def inst(ident: str, health: str = "passing", maintenance: bool = False) -> Instance:
    return Instance(
        id=ident, service="svc", address="127.0.0.1", port=8000, health=health,
        maintenance=maintenance,
    )  # fmt: skip


ABC = [inst("a"), inst("b"), inst("c")]


def ids(instances: Sequence[Instance]) -> set[str]:
    return {i.id for i in instances if i.health != "critical"}


def test_default_grace_covers_a_reconcile_period_and_a_first_check():
    # Registrar default: reconcile every 5 s (half the 10 s check interval), then the
    # fresh registration is critical until its first check (up to 10 s).
    assert DEFAULT_GRACE >= 5 + 10
    assert ServiceConfig().vanish_grace == DEFAULT_GRACE
    with pytest.raises(ValueError, match="vanish_grace"):
        ServiceConfig(vanish_grace=-1)


def test_continuous_removals_are_believed_at_once():
    clock = FakeClock()
    rule = SelfPreservation(20.0, clock)
    rule.apply(ABC, continuous=False)  # the first answer: nothing known, nothing held
    believed, held = rule.apply([inst("a"), inst("b", "critical")], continuous=True)
    assert ids(believed) == {"a"} and held == ()
    assert rule.window_until is None


def test_a_snapshot_served_before_any_answer_is_held_when_consul_comes_back_empty():
    """Seen in the cold-start drill: a service restarted while Consul was down served its
    dependencies from the snapshot; the agent came back empty, and its first answer (no
    instances) replaced the snapshot: 503s until the registrars re-registered."""
    clock = FakeClock()
    rule = SelfPreservation(20.0, clock)
    rule.know(ABC)  # the snapshot the callers hold
    believed, held = rule.apply([inst("b")], continuous=False)  # first answer, after errors
    assert ids(believed) == {"a", "b", "c"} and held == ("a", "c")
    rule.know([inst("z")])  # once something is known, a later stand-in changes nothing
    clock.advance(21)
    believed, held = rule.apply([inst("b")], continuous=True)
    assert ids(believed) == {"b"} and held == ()


def test_restart_empty_holds_everything_until_it_is_back():
    clock = FakeClock()
    rule = SelfPreservation(20.0, clock)
    rule.apply(ABC, continuous=True)
    # The agent restarted empty: the first answer after the outage is suspect.
    clock.advance(1)
    believed, held = rule.apply([], continuous=False)
    assert ids(believed) == {"a", "b", "c"} and held == ("a", "b", "c")
    assert rule.window_until == clock.now + 20.0
    # Re-registered, but critical until the first check runs: still held.
    clock.advance(1)
    believed, held = rule.apply([inst("a", "critical"), inst("b")], continuous=True)
    assert ids(believed) == {"a", "b", "c"} and held == ("a", "c")
    # Passing again: released; once nothing is held, the window closes early.
    clock.advance(1)
    believed, held = rule.apply(ABC, continuous=True)
    assert ids(believed) == {"a", "b", "c"} and held == ()
    assert rule.window_until is None
    # From then on a removal is real again.
    believed, _ = rule.apply([inst("a"), inst("b")], continuous=True)
    assert ids(believed) == {"a", "b"}


def test_an_instance_that_never_comes_back_is_dropped_when_the_window_ends():
    clock = FakeClock()
    rule = SelfPreservation(20.0, clock)
    rule.apply(ABC, continuous=True)
    _, held = rule.apply([inst("a"), inst("b")], continuous=False)
    assert held == ("c",)
    clock.advance(19.9)
    _, held = rule.apply([inst("a"), inst("b")], continuous=True)
    assert held == ("c",)
    clock.advance(0.1)
    believed, held = rule.apply([inst("a"), inst("b")], continuous=True)
    assert ids(believed) == {"a", "b"} and held == () and rule.window_until is None


def test_maintenance_propagates_at_once_even_inside_a_window():
    clock = FakeClock()
    rule = SelfPreservation(20.0, clock)
    rule.apply(ABC, continuous=True)
    drained = inst("b", "critical", maintenance=True)
    believed, held = rule.apply([inst("a"), drained], continuous=False)
    assert held == ("c",)  # vanished: suspect
    assert ids(believed) == {"a", "c"}  # b is in maintenance: a deliberate removal


def test_grace_zero_believes_consul_at_once():
    rule = SelfPreservation(0.0, FakeClock())
    rule.apply(ABC, continuous=True)
    believed, held = rule.apply([], continuous=False)
    assert believed == () and held == ()


def test_critical_without_maintenance_inside_the_window_is_held():
    # After a restart a real failure is indistinguishable from "first check not run yet".
    clock = FakeClock()
    rule = SelfPreservation(20.0, clock)
    rule.apply(ABC, continuous=True)
    believed, held = rule.apply([inst("a"), inst("b"), inst("c", "critical")], continuous=False)
    assert held == ("c",) and ids(believed) == {"a", "b", "c"}


def test_panic_mode_never_brings_back_an_instance_in_maintenance():
    def entry(ident: str, *checks: tuple[str, str]):
        return {
            "Node": {"Node": "n1", "Address": "127.0.0.1"},
            "Service": {"ID": ident, "Service": "svc", "Port": 1},
            "Checks": [{"CheckID": cid, "Status": status} for cid, status in checks],
        }

    registered = [
        instance_from_entry(entry("up", ("service:up", "passing"))),
        instance_from_entry(entry("down", ("service:down", "critical"))),
        instance_from_entry(
            entry(
                "drained",
                ("service:drained", "passing"),
                ("_service_maintenance:drained", "critical"),
            )
        ),
        instance_from_entry(entry("node-maint", ("_node_maintenance", "critical"))),
    ]
    assert [i.maintenance for i in registered] == [False, False, True, True]
    res = build_resolution("svc", registered, 1, 0.0, panic_threshold=0.9)
    assert res.panic
    assert {i.id for i in res.instances} == {"up", "down"}


# -- the rule inside the watch loop ----------------------------------------------------


class Agent:
    """A scripted agent: answers ``instances`` at ``index``, or refuses while ``down``;
    records the blocking wait of each query (None: a plain read)."""

    def __init__(self) -> None:
        self.instances: list[Instance] = list(ABC)
        self.index = 100
        self.down = False
        self.waits: list[float | None] = []

    def __call__(self, request: Request) -> Response:
        wait = dict(request.params).get("wait")
        self.waits.append(float(wait.removesuffix("ms")) / 1000 if wait else None)
        if self.down:
            raise REFUSED
        return health_response(self.index, list(self.instances))


class Watch:
    """A health WatchState polled by hand, as its thread driver does."""

    def __init__(self, state: HealthState, agent: Agent) -> None:
        self.state, self.agent = state, agent

    def poll_once(self) -> float | None:
        return poll_once(self.state, self.agent)

    @property
    def resolution(self) -> Resolution | None:
        return self.state.value


def watch_of(agent: Agent, clock: FakeClock, grace: float = 20.0):
    seen: list[Resolution] = []
    state = health_state(
        WatchKey(Target("svc"), None, grace), "127.0.0.1:8500", seen.append,
        timing=WatchTiming(wait=30.0), clock=clock, rng=random.Random(1),
    )  # fmt: skip
    return Watch(state, agent), seen


def current(watch: Watch) -> set[str]:
    assert watch.resolution is not None
    return {i.id for i in watch.resolution.instances}


def test_watch_through_an_agent_restart_with_state_loss_never_shrinks():
    clock = FakeClock()
    agent = Agent()
    watch, seen = watch_of(agent, clock)
    watch.poll_once()
    assert current(watch) == {"a", "b", "c"}
    agent.down = True
    for _ in range(5):
        clock.advance(watch.poll_once() or 0)
    assert watch.resolution.stale and current(watch) == {"a", "b", "c"}
    # Back, empty, with a reset index.
    agent.down, agent.instances, agent.index = False, [], 3
    watch.poll_once()
    res = watch.resolution
    assert not res.stale and current(watch) == {"a", "b", "c"} and res.held == ("a", "b", "c")
    # While instances are held, a blocking wait ends when the window does.
    clock.advance(5)
    watch.poll_once()
    assert agent.waits[-1] == pytest.approx(15.0)
    # The registrars re-register; a fresh check is critical at first.
    agent.instances, agent.index = [inst("a"), inst("b", "critical"), inst("c")], 5
    watch.poll_once()
    assert current(watch) == {"a", "b", "c"} and watch.resolution.held == ("b",)
    agent.instances, agent.index = list(ABC), 6
    watch.poll_once()
    assert current(watch) == {"a", "b", "c"} and watch.resolution.held == ()
    assert all(len(r.instances) == 3 for r in seen)  # never a smaller set on the way
    # Trust is back: a deregistration on a continuous index is believed at once.
    agent.instances, agent.index = [inst("a"), inst("c")], 7
    watch.poll_once()
    assert current(watch) == {"a", "c"}
    assert agent.waits[-1] == 30.0


def test_watch_index_going_backwards_opens_a_window_too():
    clock = FakeClock()
    agent = Agent()
    watch, _ = watch_of(agent, clock)
    watch.poll_once()
    agent.instances, agent.index = [inst("a")], 4  # a restart between two polls
    watch.poll_once()
    assert current(watch) == {"a", "b", "c"} and watch.resolution.held == ("b", "c")
    clock.advance(21)
    watch.poll_once()
    assert current(watch) == {"a"} and watch.resolution.held == ()
