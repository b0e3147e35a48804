"""The attempts of one call, without I/O: pick, account, decide (one core for every shell).

After go-kit's ``lb/retry.go``: every attempt asks the balancer again, excluding the
instances this call already tried (when any other is left). The whole decision of
whether to retry (policy, attempts left, deadline, budget, Retry-After) is taken in one
place, ``AttemptPlan.decide``, so a budget token is only spent on a retry that happens.

A shell drives it, and only sends, classifies its transport's exceptions and sleeps::

    plan = AttemptPlan(state, policy, method, headers, replayable=..., clock=..., rng=...)
    while True:
        endpoint = plan.next_endpoint()           # None: nothing left to pick
        if endpoint is not None:
            try:
                response = send(endpoint, timeout=plan.cap(t))
            except TransportError as exc:
                plan.record(Outcome.failure(kind_of(exc), exc))
            else:
                plan.record(Outcome.answer(response.status, response.headers))
        if not plan.decide():
            break
        sleep(plan.delay)
    # the latest response if any attempt produced one, else plan.raise_failure()

Shells: ``consul_discovery.client.call`` (requests: ServiceClient and DiscoveryAdapter) and
``consul_discovery.client.httpx_transport`` (httpx.Client and httpx.AsyncClient). Load
begin/finish and ejection go through the service's Balancer; a relayed dependency
failure (discovery_client/failure_origin.py) counts for neither ejection nor retry.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NoReturn

from consul_discovery.client.errors import AllAttemptsFailedError, NoHealthyInstanceError
from consul_discovery.client.failure_origin import is_relayed_failure
from consul_discovery.client.load import Endpoint
from consul_discovery.client.retry import ErrorKind, RetryPolicy, parse_retry_after
from consul_discovery.client.state import ServiceState

MIN_TIMEOUT = 0.001


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended: an answer (status and headers) or a classified transport error.

    ``headers`` must look names up case-insensitively (requests', httpx' and werkzeug's do).
    """

    status: int | None = None
    headers: Mapping[str, str] | None = None
    kind: ErrorKind | None = None
    error: BaseException | None = None

    @classmethod
    def answer(cls, status: int, headers: Mapping[str, str]) -> Outcome:
        """An HTTP response came back with ``status`` and ``headers``."""
        return cls(status=status, headers=headers)

    @classmethod
    def failure(cls, kind: ErrorKind, error: BaseException) -> Outcome:
        """The transport raised ``error``, classified as ``kind``."""
        return cls(kind=kind, error=error)


class AttemptPlan:
    """The attempts of one call; lives on one calling thread or task.

    Creating it counts the call (and deposits in the retry budget). ``started`` is when
    the call began (default: now); the deadline runs from it.
    """

    def __init__(
        self,
        state: ServiceState,
        policy: RetryPolicy,
        method: str,
        headers: Mapping[str, str] | None,
        *,
        replayable: bool,
        clock: Callable[[], float],
        rng: random.Random,
        started: float | None = None,
    ) -> None:
        self.state = state
        self.policy = policy
        self.method = method.upper()
        self.headers = headers
        self.replayable = replayable  # a streamed body cannot be sent twice
        self.clock = clock
        self.rng = rng
        # From when the call began (``started``: before any wait for a first resolution),
        # so waiting for the service never stretches the call past its deadline.
        self.deadline_at = (clock() if started is None else started) + policy.deadline
        self.attempts = 0
        self.tried: list[str] = []
        self.causes: list[tuple[str, BaseException]] = []
        self.last: Outcome | None = None  # the latest attempt's outcome
        self.no_instance: NoHealthyInstanceError | None = None  # the latest pick's failure
        self.delay = 0.0  # the wait decide() chose before the next attempt
        self._endpoint: Endpoint | None = None  # the attempt in flight
        self._started = 0.0
        state.count("requests")
        state.budget.deposit()

    # ---- one attempt ----------------------------------------------------------------

    def next_endpoint(self) -> Endpoint | None:
        """Pick an instance not yet tried (when another is left) and count it as started.

        None when there is nothing to pick (the error is kept for ``decide`` and
        ``raise_failure``); otherwise the caller must ``record`` or ``abandon`` it.
        """
        self.attempts += 1
        balancer = self.state.balancer
        try:
            endpoint = balancer.pick(self.tried)
        except NoHealthyInstanceError as exc:
            self.no_instance = exc
            return None
        self.no_instance = None
        self.tried.append(endpoint.id)
        self._started = balancer.begin(endpoint, retry=len(self.tried) > 1)
        self._endpoint = endpoint
        return endpoint

    def record(self, outcome: Outcome) -> None:
        """Account the attempt in flight: load, latency, failure streak (ejection)."""
        endpoint = self._endpoint
        assert endpoint is not None, "record() without next_endpoint()"
        self._endpoint = None
        self.last = outcome
        if outcome.status is None:
            self.state.balancer.finish(endpoint, self._started, failed=True, responded=False)
            assert outcome.error is not None
            self.causes.append((endpoint.id, outcome.error))
            return
        # A relayed dependency failure is an answer the instance gave correctly: it
        # counts for neither ejection nor retry (discovery_client/failure_origin.py).
        assert outcome.headers is not None
        failed = outcome.status >= 500 and not is_relayed_failure(outcome.status, outcome.headers)
        self.state.balancer.finish(endpoint, self._started, failed=failed, responded=True)

    def abandon(self) -> None:
        """The attempt in flight ended without an outcome (a hook failed, an interrupt, a
        cancellation): keep the in-flight count right, blame nobody."""
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is not None:
            self.state.balancer.finish(endpoint, self._started, failed=False, responded=False)

    def remaining(self) -> float:
        """Seconds left of the call's deadline (at least MIN_TIMEOUT)."""
        return max(MIN_TIMEOUT, self.deadline_at - self.clock())

    def cap(self, timeout: float | None) -> float:
        """``timeout`` (None: unbounded) cut to what is left of the deadline."""
        remaining = self.remaining()
        return remaining if timeout is None else min(timeout, remaining)

    # ---- the decision ---------------------------------------------------------------

    def decide(self) -> bool:
        """Decide, once per attempt, whether another follows; if so ``delay`` says when."""
        if self.no_instance is not None:
            return False
        if self.attempts >= self.policy.max_attempts or not self.replayable:
            return False
        last = self.last
        assert last is not None
        policy = self.policy
        retry_after: float | None = None
        if last.status is None:
            assert last.kind is not None
            if not policy.retries_kind(self.method, self.headers, last.kind):
                return False
        else:
            assert last.headers is not None
            if not policy.retries_answer(self.method, self.headers, last.status, last.headers):
                return False
            if policy.respect_retry_after:
                retry_after = parse_retry_after(last.headers.get("Retry-After"))
                if retry_after is not None:
                    remaining = self.deadline_at - self.clock()
                    retry_after = policy.retry_after_wait(retry_after, remaining)
                    if retry_after is None:
                        return False  # a long Retry-After: the caller decides, not a sleep
        delay = retry_after
        if delay is None:
            delay = policy.backoff(self.attempts, self.rng.random())
        if self.clock() + delay >= self.deadline_at:
            return False  # no time left for another attempt
        if not self.state.budget.try_withdraw():
            return False
        self.delay = delay
        self.state.count("retries")
        return True

    def raise_failure(self) -> NoReturn:
        """No attempt produced a response: raise NoHealthyInstanceError or
        AllAttemptsFailedError (the last cause chained)."""
        if self.no_instance is not None:
            if not self.causes:
                self.state.count("no_instance")
                raise self.no_instance
            self.causes.append(("-", self.no_instance))
        self.state.count("failed_calls")
        raise AllAttemptsFailedError(self.state.balancer.service, self.causes) from self.causes[-1][
            1
        ]
