"""The attempts of one call, without I/O: pick, account, decide (one plan for every shell).

After go-kit's ``lb/retry.go``: every attempt asks the balancer again, excluding the
instances this call already tried (when any other is left). The whole decision of
whether to retry (policy, attempts left, deadline, budget, Retry-After) is taken in one
place, ``AttemptPlan.decide``, so a budget token is only spent on a retry that happens.
The loop around it is written once too: ``consul_discovery.client.steps``.

How an attempt is accounted, the same for every transport (requests, httpx sync and
asyncio), so that load-aware policies (least_request, peak_ewma) see the same numbers:

* it is in flight from ``next_endpoint`` until the shell hands in its outcome;
* its latency runs until the answer's **status and headers** are in (each shell hands
  the answer over then; the body is the caller's to read, except in a requests call
  that does not stream, which reads it within the attempt) and feeds the peak EWMA;
* a read error (timeout, reset after sending) or an abandoned attempt (a cancelled
  task, an interrupt, a failing hook) gives a **lower bound** on the latency: it only
  ever raises the estimate, so an instance whose calls time out is not thought fast;
* a connect error gives no latency (it says nothing about how fast the instance serves)
  and a relayed dependency failure (discovery_client/failure_origin.py) counts for
  neither ejection nor retry.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import NoReturn

from consul_discovery.client.balancer import Balancer
from consul_discovery.client.errors import AllAttemptsFailedError, NoHealthyInstanceError
from consul_discovery.client.failure_origin import is_relayed_failure
from consul_discovery.client.load import Endpoint
from consul_discovery.client.retry import ErrorKind, RetryPolicy, parse_retry_after
from consul_discovery.client.route import RequestView, Route
from consul_discovery.client.state import TargetState

MIN_TIMEOUT = 0.001


class AttemptPlan:
    """The attempts of one call; lives on one calling thread or task.

    Creating it counts the call (and deposits in the retry budget). ``request`` is the
    call as routing sees it (its method and headers decide retries); ``started`` is when
    the call began (before any wait for a first resolution): the deadline runs from it.
    ``hash_key`` is the call's request hash for consistent-hashing policies.
    """

    # What every plan starts with, as class attributes: an instance only gets its own
    # when the plan moves on (most calls answer at their first attempt and never do).
    _at = 0  # the index in route.states of the Target being picked from
    attempts = 0
    tried: tuple[str, ...] = ()  # instance ids this call tried, in order
    causes: tuple[tuple[str, BaseException], ...] = ()  # (instance id, error) per failure
    last_status: int | None = None  # the latest attempt's answer, if it had one
    last_headers: Mapping[str, str] | None = None
    last_kind: ErrorKind | None = None  # the latest attempt's error kind, if any
    no_instance: NoHealthyInstanceError | None = None  # the latest pick's failure
    delay = 0.0  # the wait decide() chose before the next attempt
    _endpoint: Endpoint | None = None  # the attempt in flight
    _started = 0.0
    hash_key: int | None = None  # the call's request hash (consistent hashing only)

    def __init__(
        self,
        route: Route,
        policy: RetryPolicy,
        request: RequestView,
        replayable: bool,
        clock: Callable[[], float],
        rng: random.Random,
        started: float,
        hash_key: int | None = None,
    ) -> None:
        # Positional and few: a plan is made per call (the method and headers are read
        # from ``request`` only when a retry is considered).
        self.route = route
        self.state: TargetState = route.states[0]  # the Target being picked from
        self.policy = policy
        self.request = request  # its method is upper case (RequestView's rule)
        self.replayable = replayable  # a streamed body cannot be sent twice
        self.clock = clock
        self.rng = rng
        if hash_key is not None:
            self.hash_key = hash_key
        # From when the call began (``started``: before any wait for a first resolution),
        # so waiting for the service never stretches the call past its deadline.
        self.deadline_at = started + policy.deadline
        self.state.budget.deposit()  # counts the call too

    # ---- one attempt ----------------------------------------------------------------

    def next_endpoint(self) -> Endpoint | None:
        """Pick an instance not yet tried (when another is left) and count it as started.

        When the current Target has nothing to pick the plan moves on to the route's next
        Target (failover). None when no Target has anything (the error is kept for
        ``decide`` and ``raise_failure``); otherwise the caller must hand in the outcome
        (``answered``/``failed``) or ``abandon`` it.
        """
        self.attempts += 1
        tried = self.tried
        if not tried:  # the call's first pick, most calls' only one: picked and begun at once
            try:
                endpoint, self._started = self.state.balancer.start(self.hash_key)
            except NoHealthyInstanceError as exc:
                found = self._fail_over(exc)
                if found is None:
                    return None
                balancer, endpoint = found
                self._started = balancer.begin(endpoint)
            self.tried = (endpoint.instance.id,)
            self._endpoint = endpoint
            return endpoint
        balancer = self.state.balancer
        try:
            endpoint = balancer.pick(tried, self.hash_key)
        except NoHealthyInstanceError as exc:
            found = self._fail_over(exc)
            if found is None:
                return None
            balancer, endpoint = found
        else:
            if tried and endpoint.instance.id in tried and self._at + 1 < len(self.route.states):
                # Every instance of this Target failed this call: the next Target's turn
                # (before Consul has marked them critical), else the same one again.
                balancer, endpoint = self._next_target(balancer, endpoint)
        self.no_instance = None
        self.tried = (*tried, endpoint.instance.id)
        self._started = balancer.begin(endpoint, retry=True)
        self._endpoint = endpoint
        return endpoint

    def _fail_over(self, exc: NoHealthyInstanceError) -> tuple[Balancer, Endpoint] | None:
        """Pick from the route's next Targets in turn; None (``exc`` kept) if none has any."""
        states = self.route.states
        while self._at + 1 < len(states):
            self._at += 1
            self.state = states[self._at]
            try:
                return self.state.balancer, self.state.balancer.pick(self.tried, self.hash_key)
            except NoHealthyInstanceError as later:
                exc = later
        self.no_instance = exc
        return None

    def _next_target(self, balancer: Balancer, endpoint: Endpoint) -> tuple[Balancer, Endpoint]:
        """A pick from the route's next Target that has one; else ``endpoint`` again."""
        at, state = self._at, self.state
        found = self._fail_over(NoHealthyInstanceError(self.route.service))
        if found is not None:
            return found
        self._at, self.state = at, state
        return balancer, endpoint

    def answered(self, status: int, headers: Mapping[str, str]) -> None:
        """The attempt in flight got an answer: account its latency, and a failure if it is
        the instance's own 5xx (a relayed dependency failure is not)."""
        endpoint = self._endpoint  # set by next_endpoint (the loop's order guarantees it)
        self._endpoint = None
        self.last_status = status
        self.last_headers = headers
        failed = status >= 500 and not is_relayed_failure(status, headers)
        self.state.balancer.answered(endpoint, self._started, failed)  # type: ignore[arg-type]

    def settled(self, status: int, headers: Mapping[str, str]) -> bool:
        """If an answer with ``status`` ends the call whatever else holds (``final_answer``),
        hand it in (``answered``) and return True; else False, the answer not handed in
        (the loop does, then decides). A driver asks this of its first attempt's answer."""
        if status in self.policy.retry_statuses:
            return False
        self.answered(status, headers)
        return True

    def failed(self, kind: ErrorKind, error: BaseException) -> None:
        """The attempt in flight raised a transport error of ``kind``.

        A connect or read error counts against the instance (a read error's elapsed time
        is a lower bound on its latency); a FATAL one is the caller's mistake and does not.
        """
        endpoint = self._endpoint
        assert endpoint is not None, "failed() without next_endpoint()"
        self._endpoint = None
        self.last_status = self.last_headers = None
        self.last_kind = kind
        self.causes = (*self.causes, (endpoint.instance.id, error))
        self.state.balancer.finish(
            endpoint,
            self._started,
            failed=kind is not ErrorKind.FATAL,
            responded=False,
            lower_bound=kind is ErrorKind.READ,
        )

    def abandon(self) -> None:
        """The attempt in flight ended without an outcome (a hook failed, an interrupt, a
        cancellation): keep the in-flight count right, blame nobody; the time it took is
        a lower bound on the instance's latency."""
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is not None:
            self.state.balancer.finish(
                endpoint, self._started, failed=False, responded=False, lower_bound=True
            )

    def remaining(self) -> float:
        """Seconds left of the call's deadline (at least MIN_TIMEOUT)."""
        return max(MIN_TIMEOUT, self.deadline_at - self.clock())

    def cap(self, timeout: float | None) -> float:
        """``timeout`` (None: unbounded) cut to what is left of the deadline."""
        remaining = self.remaining()
        return remaining if timeout is None or timeout > remaining else timeout

    # ---- the decision ---------------------------------------------------------------

    def final_answer(self, status: int) -> bool:
        """True if an answer with ``status`` ends the call whatever else holds: no policy
        retries it (``decide``'s first rule, without its side effects)."""
        return status not in self.policy.retry_statuses

    def decide(self) -> bool:
        """Decide, once per attempt, whether another follows; if so ``delay`` says when."""
        policy = self.policy
        status = self.last_status
        if status is not None and self.final_answer(status):
            return False  # the common case: an answer no policy retries
        if self.no_instance is not None:
            return False
        if self.attempts >= policy.max_attempts or not self.replayable:
            return False
        retry_after: float | None = None
        request = self.request
        if status is None:
            assert self.last_kind is not None
            if not policy.retries_kind(request.method, request.headers, self.last_kind):
                return False
        else:
            headers = self.last_headers
            assert headers is not None
            if not policy.retries_answer(request.method, request.headers, status, headers):
                return False
            if policy.respect_retry_after:
                retry_after = parse_retry_after(headers.get("Retry-After"))
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
        if not self.route.states[0].budget.try_withdraw():  # counts the retry too
            return False
        self.delay = delay
        return True

    def raise_failure(self) -> NoReturn:
        """No attempt produced a response: raise NoHealthyInstanceError or
        AllAttemptsFailedError (the last cause chained)."""
        primary = self.route.states[0]
        causes = self.causes
        if self.no_instance is not None:
            if not causes:
                primary.call_failed(no_instance=True)
                raise self.no_instance
            causes = (*causes, ("-", self.no_instance))
        primary.call_failed(no_instance=False)
        raise AllAttemptsFailedError(self.route.service, causes) from causes[-1][1]
