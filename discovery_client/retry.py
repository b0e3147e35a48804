"""What may be retried, as a value object (after urllib3's ``util/retry.py``).

The rule is about side effects: an attempt that failed before the request was sent
(connect refused, connect timeout) is safe to retry for any method; an attempt whose
request may have reached the server (read timeout, connection dropped mid-exchange, a
502/503/504/429 answer) is retried only for idempotent methods, or when the caller
vouches for it with an ``Idempotency-Key`` header.

An error answer marked as a dependency's failure (``Failure-Origin: dependency``, see
discovery_client/failure_origin.py) is never retried: every instance shares that
dependency. ``Retry-After`` is honoured only when it is short (``max_retry_after``) and
fits well within what is left of the deadline; a longer one ends the retries and the
answer goes back to the caller at once, so no request thread sleeps on it.
"""

from __future__ import annotations

import email.utils
import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass

import requests
import urllib3.exceptions

from consul_discovery.client.failure_origin import is_relayed_failure
from consul_discovery.client.figures import amount, seconds, whole
from consul_discovery.connection.backoff import JitterBackoff

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


class ErrorKind(enum.Enum):
    """Where in an exchange a transport error happened."""

    CONNECT = "connect"  # nothing was sent: safe to retry anything
    READ = "read"  # the request may have been sent and acted on
    FATAL = "fatal"  # the caller's mistake (bad URL, bad header): never retried


def classify_error(error: BaseException) -> ErrorKind:
    """Say whether ``error`` (from ``Session.send``) happened before the request was sent."""
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return ErrorKind.CONNECT
    if isinstance(error, requests.exceptions.ConnectionError):
        inner = error.args[0] if error.args else None
        if isinstance(inner, urllib3.exceptions.MaxRetryError):
            inner = inner.reason
        if isinstance(
            inner, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
        ):
            return ErrorKind.CONNECT
        return ErrorKind.READ  # e.g. ProtocolError('Connection aborted.'): maybe sent
    if isinstance(
        error,
        requests.exceptions.Timeout
        | requests.exceptions.ChunkedEncodingError
        | requests.exceptions.ContentDecodingError,
    ):
        return ErrorKind.READ
    if isinstance(error, OSError) and not isinstance(error, requests.RequestException):
        return ErrorKind.READ
    return ErrorKind.FATAL


def parse_retry_after(value: str | None, *, wall_now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    now = time.time() if wall_now is None else wall_now
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a ServiceClient retries one call on other instances.

    ``max_attempts`` counts the first attempt. ``deadline`` bounds the whole call
    (attempts, backoff and Retry-After waits) in seconds. Between attempts the client
    waits a random (full-jitter) backoff in [0, min(backoff_max, backoff_base × 2^n)],
    or what Retry-After asks when ``respect_retry_after``, the wait is at most
    ``max_retry_after`` and at most half of what is left of the deadline (a longer
    Retry-After ends the retries and the response is returned at once).
    ``budget_ratio`` and ``budget_min_per_second`` size each service's retry budget:
    retries stay within that fraction of requests plus that many per second.
    """

    max_attempts: int = 3
    deadline: float = 10.0
    backoff_base: float = 0.005
    backoff_max: float = 0.25
    retry_statuses: frozenset[int] = RETRYABLE_STATUSES
    idempotent_methods: frozenset[str] = IDEMPOTENT_METHODS
    idempotency_header: str = "Idempotency-Key"
    respect_retry_after: bool = True
    max_retry_after: float = 0.25
    budget_ratio: float = 0.2
    budget_min_per_second: float = 10.0

    def __post_init__(self) -> None:
        whole("RetryPolicy max_attempts", self.max_attempts, low=1)
        seconds("RetryPolicy deadline", self.deadline, positive=True)
        for name in ("backoff_base", "backoff_max", "max_retry_after"):
            seconds(f"RetryPolicy {name}", getattr(self, name))
        for name in ("budget_ratio", "budget_min_per_second"):
            amount(f"RetryPolicy {name}", getattr(self, name))

    def may_resend(self, method: str, headers: Mapping[str, str] | None) -> bool:
        """True if a request that may already have been sent can be sent again."""
        if method.upper() in self.idempotent_methods:
            return True
        if not headers:
            return False
        wanted = self.idempotency_header.lower()
        return any(name.lower() == wanted for name in headers)

    def retries_error(
        self, method: str, headers: Mapping[str, str] | None, error: BaseException
    ) -> bool:
        """True if an attempt that raised ``error`` may be retried."""
        return self.retries_kind(method, headers, classify_error(error))

    def retries_kind(self, method: str, headers: Mapping[str, str] | None, kind: ErrorKind) -> bool:
        """True if an attempt that failed with a transport error of ``kind`` may be retried."""
        if kind is ErrorKind.CONNECT:
            return True
        return kind is ErrorKind.READ and self.may_resend(method, headers)

    def retries_status(self, method: str, headers: Mapping[str, str] | None, status: int) -> bool:
        """True if an attempt answered with ``status`` may be retried."""
        return status in self.retry_statuses and self.may_resend(method, headers)

    def retries_response(
        self, method: str, headers: Mapping[str, str] | None, response: requests.Response
    ) -> bool:
        """True if an attempt answered with ``response`` may be retried (never a relayed one)."""
        return self.retries_answer(method, headers, response.status_code, response.headers)

    def retries_answer(
        self,
        method: str,
        headers: Mapping[str, str] | None,
        status: int,
        response_headers: Mapping[str, str],
    ) -> bool:
        """True if an attempt answered ``status`` with ``response_headers`` may be retried."""
        if is_relayed_failure(status, response_headers):
            return False
        return self.retries_status(method, headers, status)

    def retry_after_wait(self, retry_after: float, remaining: float) -> float | None:
        """The wait a Retry-After of ``retry_after`` s allows, or None: stop retrying.

        ``remaining`` is what is left of the call's deadline. Only a short wait that fits
        well within it is honoured; a caller's thread never sleeps long on a server's advice.
        """
        if retry_after > self.max_retry_after or retry_after > remaining / 2:
            return None
        return retry_after

    def backoff(self, retry_number: int, uniform: float) -> float:
        """Full-jitter backoff before retry ``retry_number`` (1-based); ``uniform`` in [0, 1)."""
        return JitterBackoff(
            self.backoff_base, max(self.backoff_base, self.backoff_max), jitter="full"
        ).delay(retry_number, uniform)
