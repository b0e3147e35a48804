"""Retry rules (method × error × Idempotency-Key), Retry-After parsing, the retry budget."""

from __future__ import annotations

import contextlib
import socket
from email.utils import formatdate

import pytest
import requests

from consul_discovery.client.budget import RetryBudget
from consul_discovery.client.retry import ErrorKind, RetryPolicy, classify_error, parse_retry_after
from tests.discovery_client.fakes import FakeClock
from tests.harness.socket_server import closed_port, socket_server

IDEMPOTENT = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]
UNSAFE = ["POST", "PATCH"]
KEY = {"Idempotency-Key": "abc-123"}


def silent(_conn: socket.socket) -> None:
    """Accept and never answer."""


def hang_up_after_reading(conn: socket.socket) -> None:
    """Read the request and close without a reply."""
    conn.settimeout(1.0)
    with conn, contextlib.suppress(OSError):
        conn.recv(65536)


def raised(fn) -> BaseException:
    try:
        fn()
    except requests.RequestException as exc:
        return exc
    raise AssertionError("expected an exception")


@pytest.fixture(scope="module")
def real_errors() -> dict[str, BaseException]:
    """One genuine requests exception of each kind, produced over loopback."""
    errors = {"refused": raised(lambda: requests.get(f"http://127.0.0.1:{closed_port()}/"))}
    with socket_server(silent) as port:
        errors["read_timeout"] = raised(
            lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=(1.0, 0.2))
        )
    with socket_server(hang_up_after_reading) as port:
        errors["aborted"] = raised(lambda: requests.post(f"http://127.0.0.1:{port}/", data=b"x"))
    errors["connect_timeout"] = requests.ConnectTimeout("synthetic")
    return errors


def test_classify_real_errors(real_errors):
    assert classify_error(real_errors["refused"]) is ErrorKind.CONNECT
    assert classify_error(real_errors["connect_timeout"]) is ErrorKind.CONNECT
    assert isinstance(real_errors["read_timeout"], requests.ReadTimeout)
    assert classify_error(real_errors["read_timeout"]) is ErrorKind.READ
    assert isinstance(real_errors["aborted"], requests.ConnectionError)
    assert classify_error(real_errors["aborted"]) is ErrorKind.READ
    assert classify_error(requests.exceptions.InvalidURL("x")) is ErrorKind.FATAL


@pytest.mark.parametrize("key", [False, True], ids=["no-key", "key"])
@pytest.mark.parametrize("method", IDEMPOTENT + UNSAFE)
@pytest.mark.parametrize(
    "error", ["refused", "connect_timeout", "read_timeout", "aborted"], ids=str
)
def test_error_matrix(real_errors, method, error, key):
    policy = RetryPolicy()
    headers = KEY if key else {}
    expected = error in ("refused", "connect_timeout") or method in IDEMPOTENT or key
    assert policy.retries_error(method, headers, real_errors[error]) is expected


@pytest.mark.parametrize("key", [False, True], ids=["no-key", "key"])
@pytest.mark.parametrize("method", IDEMPOTENT + UNSAFE)
@pytest.mark.parametrize("status", [200, 404, 500, 501, 502, 503, 504, 429])
def test_status_matrix(method, status, key):
    policy = RetryPolicy()
    headers = KEY if key else {}
    expected = status in (429, 502, 503, 504) and (method in IDEMPOTENT or key)
    assert policy.retries_status(method, headers, status) is expected


def test_idempotency_key_header_is_case_insensitive_and_configurable():
    policy = RetryPolicy()
    assert policy.may_resend("post", {"idempotency-key": "1"})
    assert not policy.may_resend("post", {"X-Other": "1"})
    custom = RetryPolicy(idempotency_header="X-Request-Id")
    assert custom.may_resend("POST", {"x-request-id": "7"})


def test_backoff_is_full_jitter_and_capped():
    policy = RetryPolicy(backoff_base=0.1, backoff_max=0.3)
    assert policy.backoff(1, 0.5) == pytest.approx(0.05)
    assert policy.backoff(2, 0.5) == pytest.approx(0.1)
    assert policy.backoff(10, 0.999) == pytest.approx(0.2997)


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    date = formatdate(1_000_010.0, usegmt=True)
    assert parse_retry_after(date, wall_now=1_000_000.0) == pytest.approx(10.0)
    assert parse_retry_after(date, wall_now=2_000_000.0) == 0.0


def test_policy_validation():
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(deadline=0)


def test_budget_allows_ratio_of_requests_plus_floor():
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_second=10, clock=clock)
    granted = 0
    for _ in range(1000):
        budget.deposit()
        granted += budget.try_withdraw()
    # Frozen time: at most the initial burst (10) plus 20% of 1000 requests.
    assert 205 <= granted <= 10 + 200
    assert budget.denied == 1000 - granted


def test_budget_refills_at_the_floor_rate_and_caps_the_bank():
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_second=10, clock=clock)
    assert sum(budget.try_withdraw() for _ in range(50)) == 10
    clock.advance(0.5)
    assert sum(budget.try_withdraw() for _ in range(50)) == 5
    clock.advance(3600)  # a long quiet hour banks no more than the burst
    for _ in range(10_000):
        budget.deposit()
    assert budget.balance == 10
    assert sum(budget.try_withdraw() for _ in range(50)) == 10


def test_budget_with_no_floor_still_allows_the_ratio():
    budget = RetryBudget(ratio=0.2, min_per_second=0, clock=FakeClock())
    granted = 0
    for _ in range(100):
        budget.deposit()
        granted += budget.try_withdraw()
    assert granted == 20


def test_retry_after_is_honoured_only_when_short_and_well_within_the_deadline():
    policy = RetryPolicy(max_retry_after=1.0)
    assert policy.retry_after_wait(0.0, remaining=5.0) == 0.0
    assert policy.retry_after_wait(1.0, remaining=5.0) == 1.0
    assert policy.retry_after_wait(2.0, remaining=5.0) is None  # longer than the cap
    assert policy.retry_after_wait(1.0, remaining=1.5) is None  # over half the time left
    with pytest.raises(ValueError, match="max_retry_after"):
        RetryPolicy(max_retry_after=-1)


def test_a_relayed_dependency_failure_is_never_retried():
    policy = RetryPolicy()
    relayed = requests.Response()
    relayed.status_code = 503
    relayed.headers["failure-origin"] = "Dependency"
    own = requests.Response()
    own.status_code = 503
    assert policy.retries_response("GET", None, own) is True
    assert policy.retries_response("GET", None, relayed) is False
