"""The core's Routes from a chain (no I/O): made once per chain, switched back when the
chain goes, never for a service whose own config picks its instances."""

from __future__ import annotations

import random
from typing import Any

from requests.structures import CaseInsensitiveDict

from consul_discovery.client.chain import compile_chain, parse_chain, plain_router
from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.core import DiscoveryCore
from consul_discovery.client.route import RequestView
from consul_discovery.client.target import Target
from tests.discovery_client.chain.chains import canary_chain
from tests.discovery_client.fakes import FakeClock, instance, resolution


class ChainSource:
    """Records subscriptions, chain listeners and primed targets."""

    def __init__(self) -> None:
        self.chain_listeners: dict[str, Any] = {}
        self.primed: list[Target] = []
        self.held: dict[Any, list[Any]] = {}  # target -> listeners not yet answered

    def subscribe(self, key: Any, listener: Any) -> None:
        """Nothing is delivered until ``answer``."""
        self.held.setdefault(key, []).append(listener)

    def unsubscribe(self, key: Any, listener: Any) -> None:
        self.held[key].remove(listener)

    def answer(self, service: str) -> None:
        """The first Resolution of ``service`` arrives."""
        for listener in list(self.held.get(Target(service), ())):
            listener(resolution(instance(1)))

    def watch_chain(self, service: str, listener: Any) -> None:
        self.chain_listeners[service] = listener

    def prime(self, target: Target) -> None:
        self.primed.append(target)


def view(path: str, **headers: str) -> RequestView:
    names = {k.replace("_", "-"): v for k, v in headers.items()}
    return RequestView("GET", path, CaseInsensitiveDict(names))


def test_a_chain_gives_precomputed_routes_and_its_removal_the_plain_route():
    source = ChainSource()
    core = DiscoveryCore(source, clock=FakeClock())
    plain = core.route("web", view("/"))
    assert core.route("web", view("/other")) is plain and core.chain("web") is None
    assert source.chain_listeners == {}  # asked only once Consul answered for the service
    source.answer("web")
    source.answer("web")
    assert list(source.chain_listeners) == ["web"]
    router = compile_chain(parse_chain(canary_chain()), random=random.Random(3).random)
    source.chain_listeners["web"](router)
    assert core.chain("web") is router
    canary = core.route("web", view("/x", x_canary="1"))
    assert canary is core.route("web", view("/y", x_canary="1"))  # made once, reused
    (v2,) = canary.states
    assert v2.target == Target("web", filter='Service.Meta.version == "2"', only_passing=True)
    assert canary.retry.deadline == 2.0  # the route's request timeout
    api = core.route("web", view("/api/orders"))
    assert api.changes is not None and api.changes.path("/api/orders?x=1") == "/orders?x=1"
    assert api.retry.max_attempts == 3 and 503 in api.retry.retry_statuses
    # Every target's watch was started before a call needs it; without a request, plain.
    assert {t.filter for t in source.primed} == {
        'Service.Meta.version == "1"',
        'Service.Meta.version == "2"',
    }
    assert core.route("web") is plain
    # The entries deleted: Consul's default chain, a plain router: the plain Route again.
    source.chain_listeners["web"](plain_router("web"))
    assert core.route("web", view("/x", x_canary="1")) is plain and core.chain("web") is None


def test_a_service_whose_config_picks_its_instances_watches_no_chain():
    source = ChainSource()
    core = DiscoveryCore(source, services={"pinned": ServiceConfig(tag="blue")})
    core.route("pinned", view("/"))
    core.route("free", view("/"))
    source.answer("pinned")
    source.answer("free")
    assert list(source.chain_listeners) == ["free"]


def test_a_connect_service_s_chain_targets_are_reached_through_the_mesh_too():
    """A ServiceConfig(connect=True) service with a chain (subsets, splits): every target
    of its chain is a Connect target (before: plain HTTP to mTLS instances, each reset)."""

    class NoIdentityYet:  # a ServiceIdentity whose leaf has not come: nothing is dialled
        class client_tls:
            generation = 0

            @staticmethod
            def subscribe(_listener: Any) -> None:
                pass

    source = ChainSource()
    core = DiscoveryCore(
        source,
        services={"web": ServiceConfig(connect=True)},
        clock=FakeClock(),
        identity=NoIdentityYet(),
    )
    target = core.route("web", view("/")).primary.target
    assert target.connect
    for listener in list(source.held[target]):  # Consul's first answer for it
        listener(resolution(instance(1)))
    router = compile_chain(parse_chain(canary_chain()), random=random.Random(3).random)
    source.chain_listeners["web"](router)
    canary = core.route("web", view("/x", x_canary="1"))
    assert [s.target.connect for s in canary.states] == [True]
    assert all(t.connect for t in source.primed) and source.primed


class AnswersWithItsChain(ChainSource):
    """Consul's first answer for a service comes with its chain: by the time ``resolve``
    returns, the chain is installed (a slow caller thread, a fast chain watch)."""

    def resolve(self, target: Target, timeout: float = 5.0) -> Any:
        if target == Target("web"):
            self.answer("web")
            router = compile_chain(parse_chain(canary_chain()), random=random.Random(3).random)
            self.chain_listeners["web"](router)
            return resolution(instance(1))
        return resolution(instance(2))  # the canary subset's target


def test_a_first_call_whose_chain_came_while_it_waited_is_routed_by_the_chain():
    """A call routed before its first wait kept that Route: the plain one, although the
    chain (the canary's subset) was installed while it waited (once in CI: a new client's
    first call went to an instance the resolver leaves out)."""
    from consul_discovery.client.call import SHELL
    from consul_discovery.client.drivers import SyncDriver

    source = AnswersWithItsChain()
    core = DiscoveryCore(source, clock=FakeClock())
    sent = []

    class Answer:
        status_code, headers = 200, CaseInsensitiveDict()

    def send(endpoint: Any, plan: Any) -> Answer:
        sent.append((endpoint.instance.id, plan.route.states[0].target.filter))
        return Answer()

    SyncDriver(core, source.resolve).call("web", view("/x", x_canary="1"), SHELL, send, True)
    assert sent == [("i2", 'Service.Meta.version == "2"')]
