"""One call by service name: attempts on picked instances, retried with tenacity.

After go-kit's ``lb/retry.go``: every attempt asks the balancer again, excluding the
instances this call already tried (when any other is left). The whole decision of
whether to retry (policy, attempts left, deadline, budget) is taken in one place,
``Call.decide``, so a budget token is only spent on a retry that happens.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from tenacity import RetryCallState, Retrying

from discovery_client.balancer import Balancer
from discovery_client.budget import RetryBudget
from discovery_client.errors import AllAttemptsFailedError, NoHealthyInstanceError
from discovery_client.failure_origin import is_relayed_failure
from discovery_client.retry import ErrorKind, RetryPolicy, classify_error, parse_retry_after

Timeout = float | tuple[float | None, float | None] | None
MIN_TIMEOUT = 0.001


class ServiceState:
    """What a ServiceClient keeps per service: its balancer, retry budget and counters."""

    def __init__(self, balancer: Balancer, budget: RetryBudget) -> None:
        self.balancer = balancer
        self.budget = budget
        self.lock = threading.Lock()
        self.requests = 0  # counters: request threads, under lock
        self.retries = 0
        self.failed_calls = 0
        self.no_instance = 0

    def count(self, field: str) -> None:
        """Add one to the counter ``field``."""
        with self.lock:
            setattr(self, field, getattr(self, field) + 1)

    def stats(self) -> dict[str, Any]:
        """The balancer's snapshot plus this service's call counters."""
        snap = self.balancer.stats()
        snap.update(
            requests=self.requests,
            retries=self.retries,
            retries_denied=self.budget.denied,
            retry_budget=self.budget.balance,
            failed_calls=self.failed_calls,
            no_instance=self.no_instance,
        )
        return snap


class Call:
    """The attempts of one call; lives on the calling thread only."""

    def __init__(
        self,
        state: ServiceState,
        session: requests.Session,
        prepared: requests.PreparedRequest,
        policy: RetryPolicy,
        *,
        timeout: Timeout,
        send_kwargs: dict[str, Any],
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.state = state
        self.session = session
        self.prepared = prepared
        self.policy = policy
        self.timeout = timeout
        self.send_kwargs = send_kwargs
        self.clock = clock
        self.rng = rng
        parts = urlsplit(prepared.url or "/")
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.method = (prepared.method or "GET").upper()
        # A streamed or file body cannot be sent twice.
        self.replayable = prepared.body is None or isinstance(prepared.body, bytes | str)
        self.deadline_at = clock() + policy.deadline
        self.tried: list[str] = []
        self.causes: list[tuple[str, BaseException]] = []
        self.response: requests.Response | None = None  # the latest response, if any
        self.last_error: BaseException | None = None  # the latest attempt's error, if any
        self.delay = 0.0  # the wait chosen by should_retry for the next attempt

    def run(self, sleep: Callable[[float], None]) -> requests.Response:
        """Make attempts until one is final; return the response or raise.

        The first attempt is made directly: most calls need no retry, and building a
        tenacity ``Retrying`` costs about as much as the rest of the client's own work
        (~20 µs). Only when a retry is decided does tenacity drive attempts 2..n.
        """
        self.state.count("requests")
        self.state.budget.deposit()
        self.attempt()
        if not self.decide(1):
            return self.result()
        sleep(self.delay)
        retrying = Retrying(
            retry=self.should_retry,
            wait=lambda _rs: self.delay,
            sleep=sleep,
            retry_error_callback=lambda _rs: None,
        )
        for attempt in retrying:
            with attempt:
                self.attempt()
        return self.result()

    def attempt(self) -> None:
        """Pick an instance not yet tried and send the request to it once."""
        balancer = self.state.balancer
        try:
            endpoint = balancer.pick(self.tried)
        except NoHealthyInstanceError as exc:
            self.last_error = exc
            return
        self.tried.append(endpoint.id)
        request = self.prepared.copy()
        request.url = endpoint.instance.base_url + self.path
        started = balancer.begin(endpoint, retry=len(self.tried) > 1)
        try:
            response = self.session.send(request, timeout=self._timeout(), **self.send_kwargs)
        except (requests.RequestException, OSError) as exc:
            balancer.finish(endpoint, started, failed=True, responded=False)
            if classify_error(exc) is ErrorKind.FATAL:
                raise
            self.causes.append((endpoint.id, exc))
            self.last_error = exc
            return
        except BaseException:  # a hook or an interrupt: keep the in-flight count right
            balancer.finish(endpoint, started, failed=False, responded=False)
            raise
        # A relayed dependency failure is an answer the instance gave correctly: it
        # counts for neither ejection nor retry (discovery_client/failure_origin.py).
        failed = response.status_code >= 500 and not is_relayed_failure(
            response.status_code, response.headers
        )
        balancer.finish(endpoint, started, failed=failed, responded=True)
        if self.response is not None:
            self.response.close()
        self.response = response
        self.last_error = None

    def should_retry(self, retry_state: RetryCallState) -> bool:
        """tenacity's retry predicate for attempts 2..n (its attempt 1 is our attempt 2)."""
        if retry_state.outcome is None or retry_state.outcome.failed:
            return False  # a caller error propagates as is
        return self.decide(retry_state.attempt_number + 1)

    def decide(self, attempts_made: int) -> bool:
        """Decide, once per attempt, whether another attempt follows (and after how long)."""
        if isinstance(self.last_error, NoHealthyInstanceError):
            return False
        if attempts_made >= self.policy.max_attempts or not self.replayable:
            return False
        headers = self.prepared.headers
        retry_after: float | None = None
        if self.last_error is not None:
            if not self.policy.retries_error(self.method, headers, self.last_error):
                return False
        else:
            assert self.response is not None
            if not self.policy.retries_response(self.method, headers, self.response):
                return False
            if self.policy.respect_retry_after:
                retry_after = parse_retry_after(self.response.headers.get("Retry-After"))
                if retry_after is not None:
                    remaining = self.deadline_at - self.clock()
                    retry_after = self.policy.retry_after_wait(retry_after, remaining)
                    if retry_after is None:
                        return False  # a long Retry-After: the caller decides, not a sleep
        delay = retry_after
        if delay is None:
            delay = self.policy.backoff(attempts_made, self.rng.random())
        if self.clock() + delay >= self.deadline_at:
            return False  # no time left for another attempt
        if not self.state.budget.try_withdraw():
            return False
        self.delay = delay
        self.state.count("retries")
        return True

    def result(self) -> requests.Response:
        """The last response if any attempt produced one; otherwise raise."""
        if self.response is not None:
            return self.response
        service = self.state.balancer.service
        if isinstance(self.last_error, NoHealthyInstanceError):
            if not self.causes:
                self.state.count("no_instance")
                raise self.last_error
            self.causes.append(("-", self.last_error))
        self.state.count("failed_calls")
        raise AllAttemptsFailedError(service, self.causes) from self.causes[-1][1]

    def _timeout(self) -> tuple[float | None, float | None]:
        if isinstance(self.timeout, tuple):
            connect, read = self.timeout
        else:
            connect = read = self.timeout
        remaining = max(MIN_TIMEOUT, self.deadline_at - self.clock())
        return (
            remaining if connect is None else min(connect, remaining),
            remaining if read is None else min(read, remaining),
        )
