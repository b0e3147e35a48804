"""An agent whose authorize answer lags the intentions the watch delivered (no I/O).

Consul's authorize endpoint reads an agent cache entry of its own: right after a change
it can still answer from the intentions before it. The Authorizer asks again while the
answer disagrees with the intentions in force, and then decides from those intentions.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from consul_discovery.connection import ConsulConnection
from consul_discovery.mesh import authorizer as authorizer_module
from consul_discovery.mesh.authorizer import Authorizer, _Snapshot
from consul_discovery.mesh.consul_api import AuthorizeResult
from consul_discovery.mesh.intentions import IntentionSet
from consul_discovery.mesh.spiffe import SpiffeId

GATEWAY = SpiffeId("11111111-2222-3333-4444-555555555555.consul", "default", "dc1", "gateway")
DENIED = IntentionSet.from_json(
    "orders", [{"SourceName": "gateway", "Action": "deny", "Precedence": 9}], index=64
)
STALE = AuthorizeResult(True, "Matched L4 intention: gateway => orders (allow)")
FRESH = AuthorizeResult(False, "Matched L4 intention: gateway => orders (deny)")


class Scripted(Authorizer):
    """The agent's answers, one per call, in order (the last one repeats)."""

    def __init__(self, answers: list[AuthorizeResult]) -> None:
        super().__init__("orders", ConsulConnection.from_env({}, address="127.0.0.1:1"))
        self.answers = answers
        self.asked = 0

    def _next(self) -> AuthorizeResult:
        self.asked += 1
        return self.answers[min(self.asked, len(self.answers)) - 1]

    def _authorize(self, source: SpiffeId) -> AuthorizeResult:
        return self._next()

    async def _aauthorize(self, source: SpiffeId) -> AuthorizeResult:
        return self._next()


@pytest.fixture(autouse=True)
def no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(authorizer_module, "RECHECK_DELAYS", (0.0, 0.0, 0.0))


@pytest.mark.parametrize("path", ["loop", "request thread"])
def test_a_lagging_answer_is_asked_again_until_it_follows_the_intentions(path: str) -> None:
    authz = Scripted([STALE, STALE, FRESH])
    snapshot = _Snapshot(DENIED, default_allow=False)
    if path == "loop":
        entry = asyncio.run(authz._aask(snapshot, GATEWAY))
    else:
        entry = authz._ask(snapshot, GATEWAY)
    assert entry.decision is not None and not entry.decision.allowed  # the deny holds
    assert entry.result == FRESH and authz.asked == 3


@pytest.mark.parametrize("path", ["loop", "request thread"])
def test_an_answer_that_never_follows_is_overruled_by_the_intentions_and_said(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    authz = Scripted([STALE])
    snapshot = _Snapshot(DENIED, default_allow=False)
    with caplog.at_level(logging.WARNING, logger="consul_discovery.mesh"):
        if path == "loop":
            entry = asyncio.run(authz._aask(snapshot, GATEWAY))
        else:
            entry = authz._ask(snapshot, GATEWAY)
    assert entry.decision is not None and not entry.decision.allowed
    assert authz.asked == 1 + len(authorizer_module.RECHECK_DELAYS)
    assert "the agent still says allow for gateway -> orders" in caplog.text
    assert "index 64" in caplog.text


def test_an_answer_that_agrees_costs_one_call() -> None:
    authz = Scripted([FRESH])
    entry = asyncio.run(authz._aask(_Snapshot(DENIED, default_allow=False), GATEWAY))
    assert authz.asked == 1 and entry.result == FRESH
