"""What an answer from one of several Consul servers may be trusted with (no I/O).

Consul's consistency modes (``/v1/...?stale``, default, ``?consistent``):

- **default**: whichever server is asked forwards the read to the leader, so every
  server gives the leader's view; it fails (500 "No cluster leader") without a leader.
- **stale** (``?stale``): the server answers from its own state, even without a
  leader. Two headers say how old that state may be: ``X-Consul-LastContact``
  (milliseconds since it last heard from the leader; 0 on the leader) and
  ``X-Consul-KnownLeader`` (whether it knows one). Consul's own ``max_stale`` (DNS)
  rule: a stale answer older than the limit is asked again without ``stale``.

And the blocking index (``X-Consul-Index``) is a position in the Raft log as the
answering server has applied it. Within one datacenter the servers share that log, so
indexes are comparable, but a follower may be behind the index a client got from the
leader or another follower; and an index from a server whose state was restored from a
snapshot may be ahead of everything it has. So a watch that switched servers does not
carry its index over blindly (``CrossServerIndex``):

1. The first query to a server it switched to is a plain read (index 0): a blocking
   query with an index from another server's future would hang for the whole wait.
2. That first answer is compared with the last index the watch applied. At or above
   it: the data moved on; apply it, the view is continuous. Below it, from a stale read:
   a follower that lags, whose data is older than what the watch already has; do not
   apply it, ask again without ``stale`` (the leader's view). Below it from the leader
   (a default or consistent read): Consul's state really went back (a restore, a
   re-bootstrapped cluster); apply it as a reset, i.e. a discontinuous view that goes
   through self-preservation (``discovery_client/preservation.py``) like an agent that
   restarted empty.
3. A stale answer with no known leader, or one last in contact with the leader longer
   ago than ``max_stale``, is asked again without ``stale`` too.
4. An answer from the streaming backend (``X-Consul-Query-Backend: streaming``: every
   blocking health query with an index, on servers and client agents alike in Consul
   1.22) carries no staleness: its ``X-Consul-KnownLeader`` reads ``false`` and its
   ``X-Consul-LastContact`` 0 whatever the cluster's state (measured on the secure
   profile), so rule 3 applies only to ``blocking-query`` answers. The plain read that
   starts every watch on a server (rule 1) is served by ``blocking-query``, so a server
   is judged on its headers when a watch comes to it.

On the same server, ``consul_connection.blocking.next_index`` applies as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from consul_discovery.connection.blocking import next_index

INDEX_HEADER = "X-Consul-Index"
BACKEND_HEADER = "X-Consul-Query-Backend"
LAST_CONTACT_HEADER = "X-Consul-LastContact"
KNOWN_LEADER_HEADER = "X-Consul-KnownLeader"


@dataclass(frozen=True, slots=True)
class ReadMeta:
    """What Consul's headers say about one answer (None: the header was absent or bad)."""

    index: int | None
    last_contact: float | None  # seconds since the server heard from the leader
    known_leader: bool | None
    backend: str | None = None  # "blocking-query" or "streaming"

    @property
    def streaming(self) -> bool:
        """Served by the streaming backend (its staleness headers mean nothing)."""
        return self.backend == "streaming"


@dataclass(frozen=True, slots=True)
class LastRead:
    """What a watch's last answer said about where it came from: the server (None with
    a single address) and its headers' ``ReadMeta``."""

    server: str | None
    meta: ReadMeta


def read_meta(headers: Mapping[str, str]) -> ReadMeta:
    """``X-Consul-Index``, ``-LastContact`` (ms, as seconds), ``-KnownLeader``, and the
    ``X-Consul-Query-Backend`` that answered."""
    lowered = {str(k).lower(): str(v).strip() for k, v in headers.items()}
    raw_index = lowered.get(INDEX_HEADER.lower(), "")
    raw_contact = lowered.get(LAST_CONTACT_HEADER.lower(), "")
    raw_leader = lowered.get(KNOWN_LEADER_HEADER.lower(), "").lower()
    return ReadMeta(
        index=int(raw_index) if raw_index.isdigit() else None,
        last_contact=int(raw_contact) / 1000 if raw_contact.isdigit() else None,
        known_leader={"true": True, "false": False}.get(raw_leader),
        backend=lowered.get(BACKEND_HEADER.lower()) or None,
    )


class Action(Enum):
    """What to do with an answer."""

    APPLY = "apply"  # use it; the view is continuous
    APPLY_RESET = "apply_reset"  # use it, as a discontinuous view (self-preservation)
    ASK_LEADER = "ask_leader"  # do not use it; ask again without ?stale


@dataclass(frozen=True, slots=True)
class Judgement:
    """The verdict on one answer: the action, the index to send next, and why."""

    action: Action
    next_index: int
    reason: str


@dataclass(frozen=True, slots=True)
class StalePolicy:
    """Whether to read with ``?stale``, and how stale an answer may be.

    ``max_stale`` None accepts any stale answer from a server that knows a leader; a
    number (seconds) also bounds ``X-Consul-LastContact``. ``allow_leaderless`` accepts
    stale answers from a server that knows no leader (an outage of the leader: the last
    known data, rather than nothing).
    """

    stale: bool = False
    max_stale: float | None = None
    allow_leaderless: bool = False

    def __post_init__(self) -> None:
        if self.max_stale is not None and self.max_stale < 0:
            raise ValueError(f"max_stale must be >= 0 seconds, not {self.max_stale!r}")

    def params(self, *, leader: bool = False) -> dict[str, str]:
        """Query parameters for the next read (``leader``: the retry without stale)."""
        return {"stale": ""} if self.stale and not leader else {}

    def too_stale(self, meta: ReadMeta) -> str | None:
        """Why a stale answer may not be used as it is (None: it may).

        A streaming answer is never judged here (rule 4 of the module docstring).
        """
        if meta.streaming:
            return None
        if meta.known_leader is False and not self.allow_leaderless:
            return "the server knows no leader"
        contact, limit = meta.last_contact, self.max_stale
        if limit is not None and contact is not None and contact > limit:
            return f"last contact with the leader {contact:.3f}s ago (max_stale {limit:g}s)"
        return None


class CrossServerIndex:
    """One watch's blocking index across servers (module docstring, rules 1-3).

    The driver calls ``index_for(generation)`` before each query (``generation`` is the
    ``ServerList``'s) and ``judge(generation, meta, stale_read=...)`` with each answer.
    Owned by that driver alone.
    """

    def __init__(self, policy: StalePolicy | None = None) -> None:
        self.policy = policy or StalePolicy()
        self._index = 0  # driver only: the index the next query on the same server sends
        self._applied = 0  # driver only: the highest index whose data was applied
        self._generation: int | None = None  # driver only: server of the last answer

    @property
    def applied(self) -> int:
        """The index of the data the watch holds (0: nothing yet, or after a reset)."""
        return self._applied

    def index_for(self, generation: int) -> int:
        """The index to send to the server of ``generation`` (0 after a switch)."""
        return self._index if generation == self._generation else 0

    def forget(self) -> None:
        """After an error: the next query is a plain read (the server may have restarted)."""
        self._index = 0

    def judge(self, generation: int, meta: ReadMeta, *, stale_read: bool) -> Judgement:
        """Decide what to do with an answer read from the server of ``generation``."""
        if stale_read:
            why = self.policy.too_stale(meta)
            if why is not None:
                self._index = 0
                return Judgement(Action.ASK_LEADER, 0, f"stale answer not used: {why}")
        returned = meta.index if meta.index is not None and meta.index >= 1 else 1
        switched = generation != self._generation
        if switched and self._generation is not None and returned < self._applied:
            if stale_read:
                self._index = 0
                return Judgement(
                    Action.ASK_LEADER,
                    0,
                    f"the new server is behind (index {returned} < {self._applied} applied)",
                )
            return self._accept(generation, 0, Action.APPLY_RESET, "Consul's index went back")
        if not switched and (next_index(self._index, meta.index) == 0 or returned < self._applied):
            # Consul's rule on one server (also after forget(): a restarted agent).
            return self._accept(generation, 0, Action.APPLY_RESET, "index went backwards")
        return self._accept(generation, returned, Action.APPLY, "continuous")

    def _accept(self, generation: int, index: int, action: Action, reason: str) -> Judgement:
        self._generation = generation
        self._index = index
        if action is Action.APPLY_RESET:
            self._applied = 0
        else:
            self._applied = max(self._applied, index)
        return Judgement(action, index, reason)
