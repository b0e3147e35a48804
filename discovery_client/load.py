"""Per-instance load and health state, kept apart from the rules that read it.

After Finagle's ``loadbalancer`` package: the load metric (in-flight count, peak-EWMA
latency) lives on a long-lived node object owned by the Balancer and keyed by instance
id, so it survives membership updates; the selection rule (P2C, round robin, ...) lives
in an immutable picker that only reads it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from consul_discovery.client.dial import Dial
from consul_discovery.client.instance import Instance
from consul_discovery.client.tally import Tally

# Load reported for an instance that has requests outstanding but no latency history yet,
# so a fresh instance is not stampeded before its first response (Finagle's ``Penalty``).
UNKNOWN_LATENCY_PENALTY = 1_000.0

DEFAULT_DECAY_TIME = 10.0
# An estimate with no observation for this many decay times is forgotten: the instance is
# unknown again, and the next pick that compares it (at no load) sends it a call, which
# starts a new estimate. Without it, one stall of 1 s at an instance whose calls take
# 10 ms kept it out of a peak-EWMA rotation until time alone had decayed the stall below
# its peers' cost: 46 s, with no call to show it was fast again. Finagle and Linkerd
# decay by time only, and so starve it.
FORGET_AFTER_DECAY_TIMES = 1.0
# The least weight one observation gets in the peak EWMA: an estimate far above what the
# instance now answers in is pulled towards it by time (``decay_time``) or by evidence,
# whichever is faster (see finish).
MIN_OBSERVATION_WEIGHT = 1 / 16
_EVIDENCE_WEIGHT = 1.0 - MIN_OBSERVATION_WEIGHT  # the most an old estimate keeps per answer
# exp(-elapsed / decay_time) < _EVIDENCE_WEIGHT once elapsed > decay_time * _EVIDENCE_SPAN
_EVIDENCE_SPAN = -math.log(_EVIDENCE_WEIGHT)


class InstanceLoad:
    """Mutable load and ejection state of one instance.

    Owned by one Balancer. Every attempt's ``begin`` and ``finish`` take no lock (they are
    on every call's path): the in-flight count is a list that each attempt appends an
    entry to and pops one from (atomic operations), picks are a Tally, and the EWMA
    fields are written whole; pickers read them all without a lock (a slightly stale read
    only makes a pick slightly less informed). Two answers handed in at the same moment
    may both update the EWMA from the same old estimate: the later write wins, as if one
    had not been sampled. What failures change (the failure streak, the failure and retry
    counters) is rarer and exact, under ``lock``. ``ejected_until`` and ``ejections`` are
    written by the Balancer under its own lock.
    """

    __slots__ = (
        "_picks",
        "consecutive_failures",
        "cost",
        "decay_time",
        "ejected_until",
        "ejections",
        "failures",
        "flight",
        "id",
        "lock",
        "retries",
        "stamp",
    )

    def __init__(self, instance_id: str, *, now: float, decay_time: float = DEFAULT_DECAY_TIME):
        self.id = instance_id
        self.decay_time = decay_time
        self.lock = threading.Lock()
        # An entry per attempt in flight (append/pop only): pickers read its len()
        self.flight: list[None] = []
        self._picks = Tally()
        self.cost = 0.0  # peak-EWMA latency in seconds; request threads, written whole
        self.stamp = now  # clock time of the last EWMA observation
        self.consecutive_failures = 0  # request threads, under lock (read without)
        self.failures = 0  # counters: request threads, under lock
        self.retries = 0
        # End of the current or last ejection (kept after it ends, to decay ``ejections``);
        # Balancer, under the Balancer's lock.
        self.ejected_until: float | None = None
        self.ejections = 0  # times ejected; Balancer, under the Balancer's lock

    @property
    def in_flight(self) -> int:
        """Attempts started on this instance and not finished yet."""
        return len(self.flight)

    @property
    def picks(self) -> int:
        """Attempts started on this instance so far."""
        return self._picks.value

    def begin(self, retry: bool) -> None:
        """Count one request starting on this instance."""
        self.flight.append(None)
        self._picks.add()
        if retry:
            with self.lock:
                self.retries += 1

    def finish(
        self, now: float, latency: float | None, failed: bool, at_least: float | None = None
    ) -> int:
        """Count one request ending; return the current consecutive-failure streak.

        ``latency`` (seconds, to the answer's status and headers) feeds the peak EWMA;
        None when the attempt produced no answer. ``at_least`` is a lower bound instead
        (a read timeout or a cancelled attempt: the instance took at least that long): it
        raises the estimate when it is above it and is ignored otherwise. A connect error
        gives neither: it says nothing about how fast the instance serves.
        """
        self.flight.pop()  # every finish has its begin (the plan's order guarantees it)
        if latency is not None:
            # Peak EWMA: jump to any higher latency at once, decay towards lower
            # ones. Finagle decays by time only (weight exp(-elapsed/decay_time)), so a
            # busy instance that had one slow moment (a cold start's burst, a stall of
            # the client: every call in flight measures it) looks that slow for seconds
            # however many fast answers follow, and a truly slow instance wins the
            # comparison meanwhile. Each answer also counts as evidence, at least
            # MIN_OBSERVATION_WEIGHT of it: ~10 fast answers halve a stale peak's excess
            # (at 50 calls/s: 0.2 s instead of 7 s). An instance nobody picks gets no
            # answer: it decays by time, and is forgotten after a decay time (latency).
            elapsed = now - self.stamp
            self.stamp = now
            cost = self.cost
            if latency > cost:
                self.cost = latency
            else:
                w = _EVIDENCE_WEIGHT  # time's weight is at least this until then:
                if elapsed > self.decay_time * _EVIDENCE_SPAN:  # rare: a quiet instance
                    if elapsed >= self.decay_time * FORGET_AFTER_DECAY_TIMES:
                        w = 0.0  # forgotten (see latency): this answer starts anew
                    else:
                        w = math.exp(-elapsed / self.decay_time)
                self.cost = cost * w + latency * (1.0 - w)
        elif at_least is not None and at_least > self.latency(now):
            self.cost = at_least
            self.stamp = now
        if failed:
            with self.lock:
                self.failures += 1
                self.consecutive_failures += 1
                return self.consecutive_failures
        if self.consecutive_failures:  # a success ends the streak (most calls: none)
            with self.lock:
                self.consecutive_failures = 0
        return 0

    def latency(self, now: float) -> float:
        """The peak-EWMA latency estimate (seconds), decayed to ``now`` without mutating;
        0.0 (unknown) once no observation came for ``FORGET_AFTER_DECAY_TIMES`` decay
        times, so that an instance no pick chose since a stall is tried again."""
        cost = self.cost
        if cost:
            elapsed = now - self.stamp
            if elapsed > 0.0:
                if elapsed >= self.decay_time * FORGET_AFTER_DECAY_TIMES:
                    return 0.0
                cost *= math.exp(-elapsed / self.decay_time)
        return cost

    def peak_ewma_load(self, now: float) -> float:
        """Latency × (in-flight + 1): the cost P2C compares under ``peak_ewma``."""
        pending = len(self.flight)
        cost = self.latency(now)
        if cost == 0.0 and pending:
            return UNKNOWN_LATENCY_PENALTY + pending
        return cost * (pending + 1)

    def is_ejected(self, now: float) -> bool:
        """True while the instance sits out an outlier ejection."""
        until = self.ejected_until
        return until is not None and now < until


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a picker hands out: an instance as Consul last described it, its load, and
    how to connect to it (``dial``: plain HTTP to its address unless given)."""

    instance: Instance
    load: InstanceLoad
    dial: Dial = None  # type: ignore[assignment]  # made from the instance when not given

    def __post_init__(self) -> None:
        if self.dial is None:
            object.__setattr__(self, "dial", Dial.of(self.instance))

    @property
    def id(self) -> str:
        """The instance id (the key the load state is kept under)."""
        return self.instance.id
