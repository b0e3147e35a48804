"""One watch's reads across several Consul servers: what to ask whom next (no I/O).

``ServerReads`` puts ``servers.ServerList`` (shared by every watch of a process: which
server is current) and ``server_reads.CrossServerIndex`` (one per watch: which index
may be sent where) together, so a watch driver (a thread or a task, helper B's watch
engine) only asks ``plan()`` before each request and reports ``answered()`` or
``failed()`` after it::

    plan = reads.plan()                       # server, index, query parameters
    try:
        headers, body = fetch(plan.server, plan.index, plan.params)
    except ConsulUnreachable:
        failover = reads.failed(plan)         # next server, delay before asking it
    else:
        verdict = reads.answered(plan, headers)
        if verdict.action is Action.ASK_LEADER: ...   # discard body; plan() asks the leader
        else: apply(body, continuous=verdict.action is Action.APPLY)

After an ``ASK_LEADER`` verdict the next plan reads the same server without ``?stale``
(the server forwards it to the leader), as a plain read; a plan made before a switch
that comes back afterwards is judged against the server it was sent to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from consul_discovery.connection.server_reads import (
    Action,
    CrossServerIndex,
    Judgement,
    StalePolicy,
    read_meta,
)
from consul_discovery.connection.servers import Failover, ServerAddress, ServerList


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """One request to make: where, with which index, with which query parameters."""

    server: ServerAddress
    generation: int
    index: int
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def stale(self) -> bool:
        """True when the request asks for a stale read."""
        return "stale" in self.params


class ServerReads:
    """The reads of one watch over a process's ``ServerList`` (module docstring).

    Owned by the watch's driver; the ``ServerList`` may be shared by several watches
    that run on the same driver thread or event loop.
    """

    def __init__(self, servers: ServerList, policy: StalePolicy | None = None) -> None:
        self.servers = servers
        self.index = CrossServerIndex(policy)
        self._ask_leader = False  # driver only: the next read goes to the leader

    def plan(self) -> ReadPlan:
        """The next request: the current server, the index it may be sent, parameters."""
        generation = self.servers.generation
        leader = self._ask_leader
        index = 0 if leader else self.index.index_for(generation)
        params = self.index.policy.params(leader=leader)
        return ReadPlan(self.servers.current, generation, index, params)

    def answered(self, plan: ReadPlan, headers: Mapping[str, str]) -> Judgement:
        """The server of ``plan`` answered with ``headers``: the verdict on its body."""
        self.servers.succeeded(plan.server)
        verdict = self.index.judge(plan.generation, read_meta(headers), stale_read=plan.stale)
        self._ask_leader = verdict.action is Action.ASK_LEADER
        return verdict

    def failed(self, plan: ReadPlan) -> Failover:
        """The server of ``plan`` did not answer: fail over (or back off) and read plainly."""
        self.index.forget()
        self._ask_leader = False
        return self.servers.failed(plan.server)
