"""What an answer from one of several Consul servers says about itself (no I/O).

Consul's consistency modes (``/v1/...?stale``, default, ``?consistent``):

- **default**: whichever server is asked forwards the read to the leader, so every
  server gives the leader's view; it fails (500 "No cluster leader", or a forwarding
  error while the leader is gone) without a leader.
- **stale** (``?stale``): the server answers from its own state, even without a
  leader. Two headers say how old that state may be: ``X-Consul-LastContact``
  (milliseconds since it last heard from the leader; 0 on the leader) and
  ``X-Consul-KnownLeader`` (whether it knows one). Consul's own ``max_stale`` (DNS)
  rule: a stale answer older than the limit is asked again without ``stale``
  (``StalePolicy.too_stale``).
- An answer from the streaming backend (``X-Consul-Query-Backend: streaming``: every
  blocking health query with an index, on servers and client agents alike in Consul
  1.22) carries no staleness: its ``X-Consul-KnownLeader`` reads ``false`` and its
  ``X-Consul-LastContact`` 0 whatever the cluster's state (measured on the secure
  profile; Consul's ``agent/rpcclient/health/view.go``), so it is not judged on them.
  A plain read (what starts every watch, and every watch on a server it switched to)
  is served by ``blocking-query``, so a server is judged on its headers when a watch
  comes to it.

The blocking index (``X-Consul-Index``) is a position in the Raft log as the answering
server has applied it: comparable between the servers of one datacenter, but a
follower may be behind an index another server gave, and a restored server may be
behind everything. ``consul_connection.server_routing`` applies these rules to every
request at the ``Send`` seam (an index only where it is known, stale answers judged
here); a watch's own index rules (``blocking.next_index``) then judge the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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

        A streaming answer is never judged here (see the module docstring).
        """
        if meta.streaming:
            return None
        if meta.known_leader is False and not self.allow_leaderless:
            return "the server knows no leader"
        contact, limit = meta.last_contact, self.max_stale
        if limit is not None and contact is not None and contact > limit:
            return f"last contact with the leader {contact:.3f}s ago (max_stale {limit:g}s)"
        return None
