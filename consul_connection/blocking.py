"""Consul's blocking-query rules, shared by every watch (services, KV, threaded or asyncio).

A blocking query (``?index=N&wait=W``) returns when the data behind it changed past
index N, or after W (plus up to W/16 of jitter). Consul documents how a client must
treat the index it gets back (``X-Consul-Index``); ``next_index`` is that rule, and
``WatchTiming`` how a watch paces itself between queries. discovery_client's service
watch and config_client's KV watch both follow them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WatchTiming:
    """How a watch paces itself: blocking wait, idle rate limit and error backoff (seconds).

    ``throttle_base``/``throttle_cap`` are the backoff after the agent answered 429 (it
    protects itself: a longer floor than an outage's; ``consul_connection.throttle``).
    ``settle_burst``: how many answers whose index moved with nothing seen changed may
    get a quick poll (``min_change_interval``) in a burst; the allowance refills at one
    per ``min_interval`` (``consul_connection.watch``'s pacing).
    """

    wait: float = 30.0
    min_interval: float = 1.0
    min_change_interval: float = 0.05
    backoff_base: float = 0.25
    backoff_cap: float = 5.0
    throttle_base: float = 1.0
    throttle_cap: float = 30.0
    settle_burst: int = 5

    def __post_init__(self) -> None:
        if self.wait <= 0 or self.min_interval < 0 or self.backoff_base <= 0:
            raise ValueError(f"invalid watch timing: {self}")
        if self.throttle_base <= 0 or self.settle_burst < 0:
            raise ValueError(f"invalid watch timing: {self}")


def next_index(previous: int, returned: int | None) -> int:
    """The index for the next blocking query, following Consul's rules.

    ``returned`` missing or below 1 counts as 1 (index 0 would never block); an index
    lower than ``previous`` means Consul's state was reset (e.g. an agent restarted
    empty), so start over from 0.
    """
    current = returned if returned is not None and returned >= 1 else 1
    return 0 if current < previous else current
