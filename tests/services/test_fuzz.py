"""Every service endpoint fuzzed from the service's own OpenAPI document (schemathesis).

Each app runs in process (WSGI or ASGI, no network), its dependencies faked as in the
other app tests (``FlaskCaller``). For every documented operation, schemathesis generates
requests that fit the document (positive) and requests that break it (negative); an
authenticated operation gets a valid bearer token on about half of them, so the fuzzer
reaches past the 401. Every answer is checked against the document: no 5xx (502/503
would mean the faked upstreams failed, which they do not), a documented status, content
type and body schema, negative requests refused with a 4xx, positive ones not refused
with a 4xx other than those that do not depend on the request's shape (401 without a
valid token, 404 for an unknown id, 409 for a taken name or stock, ...).

Generation is derandomized (the same cases every run) and bounded: ``EXAMPLES`` per
operation, at least ``MIN_CASES`` per service, ~60 s for the four services on 2 cores.
A failure names the operation, the check and a curl command reproducing the case.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from services.gateway import create_app as create_gateway
from tests.services.conftest import FakeClock, new_inventory_app, new_order_app, new_user_app
from tests.services.fakes import FlaskCaller

#: Cases per service: shared out over its operations (those without inputs run out of
#: distinct cases early and leave their share to the others).
MIN_CASES = 1000
#: Cases per operation, at least.
FLOOR = 50


@dataclass
class Apps:
    """One set of apps calling each other in process, and a valid bearer token."""

    user: Flask
    order: Flask
    gateway: Flask
    inventory: Any
    token: str = field(repr=False)  # a secret: never in test output


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Apps:
    """The four services on temporary SQLite files, wired through a FlaskCaller."""
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    user = new_user_app(tmp, FakeClock())
    inventory = new_inventory_app(tmp, initial_stock=1_000_000)
    caller = FlaskCaller({"user-service": user, "inventory-service": inventory})
    order = new_order_app(tmp, caller)
    gateway = create_gateway(
        {"TESTING": True, "REGISTRY_ENABLED": False, "DISCOVERY_CLIENT": caller}
    )
    client = user.test_client()
    credentials = {"username": "fuzzer", "password": "password123"}
    assert client.post("/register", json=credentials).status_code == 201
    logged_in = client.post("/login", json=credentials)
    assert logged_in.status_code == 200, logged_in.json
    return Apps(user, order, gateway, inventory, logged_in.json["token"])


def _schema(name: str, apps: Apps) -> schemathesis.BaseSchema:
    if name == "inventory-service":
        return schemathesis.openapi.from_asgi("/openapi.json", apps.inventory)
    app = {"user-service": apps.user, "order-service": apps.order, "gateway": apps.gateway}
    return schemathesis.openapi.from_wsgi("/openapi.json", app[name])


def _operations(schema: schemathesis.BaseSchema) -> Iterator[schemathesis.APIOperation]:
    for result in schema.get_all_operations():
        yield result.ok()  # an operation the loader cannot read is itself a failure


def _needs_token(operation: schemathesis.APIOperation) -> bool:
    return bool(operation.definition.raw.get("security"))


def _state_bound(response: Any) -> list[schemathesis.CheckFunction]:
    """Checks that do not apply to this answer because it depends on earlier requests.

    A repeated ``Idempotency-Key`` with another body is refused with a documented 422
    (as the IETF Idempotency-Key draft says), however well-formed the new body is.
    """
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return []
    if response.status_code == 422 and code == "idempotency_key_reused":
        return [positive_data_acceptance]
    return []


def _has_inputs(operation: schemathesis.APIOperation) -> bool:
    raw = operation.definition.raw
    return bool(raw.get("parameters") or raw.get("requestBody") or raw.get("security"))


def _fuzz(
    operation: schemathesis.APIOperation, token: str, examples: int
) -> tuple[int, str | None]:
    """Run one operation's cases; (cases run, the failure with its reproduction or None)."""
    count = itertools.count()
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    with_token = st.booleans() if _needs_token(operation) else st.just(False)

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=cases, authorized=with_token)
    def run(case: schemathesis.Case, authorized: bool) -> None:
        next(count)
        # Passed to the call (not put in the case) so schemathesis knows the token is
        # real and also probes the operation without it and with a forged one.
        headers = {"Authorization": f"Bearer {token}"} if authorized else None
        response = case.call(headers=headers)
        case.validate_response(response, headers=headers, excluded_checks=_state_bound(response))

    try:
        run()
    except (
        Exception,
        BaseExceptionGroup,
    ) as exc:  # schemathesis' failure names the check and the curl command
        return next(count), f"{operation.label}: {exc}"
    return next(count), None


SERVICES = ("user-service", "order-service", "inventory-service", "gateway")


@pytest.mark.parametrize("service", SERVICES)
def test_every_operation_answers_as_documented(service: str, apps: Apps) -> None:
    schema = _schema(service, apps)
    total = 0
    failures: list[str] = []
    operations = sorted(_operations(schema), key=_has_inputs)  # input-less ones first
    for left, operation in zip(range(len(operations), 0, -1), operations, strict=True):
        share = max(FLOOR, -(-(MIN_CASES - total) // left))  # ceil: the rest, shared
        ran, failure = _fuzz(operation, apps.token, share)
        total += ran
        if failure is not None:
            failures.append(failure)
    assert not failures, "\n\n".join(failures)
    assert total >= MIN_CASES, f"{service}: only {total} cases ran"
