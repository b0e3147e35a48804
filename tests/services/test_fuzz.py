"""Every service endpoint fuzzed from the service's own OpenAPI document, every check on.

Each app runs in process (WSGI or ASGI, no network), its dependencies faked as in the
other app tests (``FlaskCaller``); the gateway is fuzzed from its own document too (the
public operations it relays, ``/api/stock/{sku}`` included). Three of schemathesis'
phases run per service, all deterministic:

- coverage: for every operation, the cases schemathesis derives from the document
  (each value at and past its limits, a required header missing, a body in another
  content type) and every method the path does not document (405 with ``Allow``;
  ``OPTIONS``, whose ``Allow`` must list exactly the documented methods);
- fuzzing: generated requests that fit the document (positive) and that break it
  (negative), ``FLOOR`` per operation, at least ``MIN_CASES`` per service;
- stateful: sequences along the links schemathesis infers from the document (an order
  created, then read by its id; a user logged in, then its token verified).

Every answer goes through every check schemathesis has (``ALL_CHECKS``, asserted to
be the whole registry): no 5xx, a documented status, content type, headers and body
schema, negative requests refused with a 4xx, positive ones not refused with a 4xx
other than those that do not depend on the request's shape (401 without a valid
token, 404 for an unknown id, 409 for a taken name or stock), 405 with ``Allow`` for
an undocumented method, ``Allow`` of ``OPTIONS`` as documented, a missing required
header refused, authentication enforced (``ignored_auth`` repeats a request that got
in without the token and with a forged one), a created resource readable. Plus
``OthersObjectsAreNotFound``: schemathesis' own object-level check needs identities
from a Web Fuzzing Commons auth file, so ours reads every order a user got back as a
second user, which must get 404, as for a missing order. ``max_response_time`` is not
among the checks: latency on two shared cores is the benchmarks' business.

An authenticated operation's coverage and fuzzing cases are sent with and without a
valid bearer token (the token is passed to the call, not put in the case, so
schemathesis knows it is real). A failure names the operation, the check and a curl
command reproducing the case.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, is_check_class, load_all_checks
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from services.gateway import create_app as create_gateway
from tests.services.conftest import FakeClock, new_inventory_app, new_order_app, new_user_app
from tests.services.fakes import FlaskCaller

#: Fuzzing cases per service: shared out over its operations (those without inputs run
#: out of distinct cases early and leave their share to the others).
MIN_CASES = 800
#: Fuzzing cases per operation, at least.
FLOOR = 40
#: Stateful phase: scenarios per service, and calls per scenario at most.
SCENARIOS = 25
STEPS = 6
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]

load_all_checks()
#: Every check schemathesis registers (functions; none is a class today).
ALL_CHECKS = [check for check in CHECKS.get_all() if not is_check_class(check)]
_SETTINGS = {
    "derandomize": True,
    "database": None,
    "deadline": None,
    "suppress_health_check": list(HealthCheck),
    "print_blob": False,
}


@dataclass
class Apps:
    """One set of apps calling each other in process, and two users' bearer tokens."""

    user: Flask
    order: Flask
    gateway: Flask
    inventory: Any
    token: str = field(repr=False)  # a secret: never in test output
    other_token: str = field(repr=False)  # another user's: must not see the first's orders


def _login(user: Flask, name: str) -> str:
    client = user.test_client()
    credentials = {"username": name, "password": "password123"}
    assert client.post("/register", json=credentials).status_code == 201
    logged_in = client.post("/login", json=credentials)
    assert logged_in.status_code == 200, logged_in.json
    return str(logged_in.json["token"])


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
    token = _login(user, "fuzzer")
    created = order.test_client().post(
        "/orders",
        json={"items": [{"sku": "seed", "quantity": 1}]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert created.status_code == 201, created.json  # order 1: the coverage phase reads it
    return Apps(user, order, gateway, inventory, token, _login(user, "other-fuzzer"))


class OthersObjectsAreNotFound:
    """A check: an order a user got back, read by another user, answers 404.

    order-service answers another user's order exactly as a missing one, so order ids
    do not tell which orders exist; the gateway relays that. ``check`` is the check
    function schemathesis runs.
    """

    def __init__(self, other_token: str) -> None:
        self._other = {"Authorization": f"Bearer {other_token}"}  # secret: not in output
        self.probes = 0  # read by the test after its run; written by the checks (one thread)

        def others_objects_are_not_found(ctx: Any, response: Any, case: Any) -> None:
            """Repeat a successful read of one order as the other user: 404."""
            self._probe(response, case)

        self.check = others_objects_are_not_found

    def _probe(self, response: Any, case: schemathesis.Case) -> None:
        if case.method != "GET" or response.status_code != 200 or "{order_id}" not in case.path:
            return
        self.probes += 1
        other = case.call(headers=self._other)
        if other.status_code != 404:
            raise AssertionError(
                f"another user read {case.formatted_path}: {other.status_code} (expected 404)"
            )


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


Validate = Callable[[schemathesis.Case, Any, "dict[str, str] | None"], None]


def _validator(extra: OthersObjectsAreNotFound) -> Validate:
    def validate(case: schemathesis.Case, response: Any, headers: dict[str, str] | None) -> None:
        case.validate_response(
            response,
            checks=ALL_CHECKS,
            additional_checks=[extra.check],
            excluded_checks=_state_bound(response),
            headers=headers,
        )

    return validate


def _auth_variants(operation: schemathesis.APIOperation, token: str) -> list[dict | None]:
    return [None, {"Authorization": f"Bearer {token}"}] if _needs_token(operation) else [None]


def _coverage(
    schema: schemathesis.BaseSchema, operation: Any, token: str, validate: Validate
) -> tuple[int, str | None]:
    """The coverage phase's cases for ``operation``; (cases sent, first failure or None)."""
    config = schema.config.generation_for(operation=operation, phase="coverage")
    sent = 0
    for case in schema.iter_coverage_cases(
        operation, generation_modes=MODES, generation_config=config
    ):
        for headers in _auth_variants(operation, token):
            sent += 1
            try:
                validate(case, case.call(headers=headers), headers)
            except (Exception, BaseExceptionGroup) as exc:
                return sent, f"{operation.label} (coverage): {exc}"
    return sent, None


def _negative_headers(case: schemathesis.Case) -> bool:
    """Whether schemathesis generated ``case``'s headers in negative mode."""
    meta = case.meta
    return meta is not None and meta.is_negative_at(ParameterLocation.HEADER)


def _fuzz(
    operation: schemathesis.APIOperation, token: str, examples: int, validate: Validate
) -> tuple[int, str | None]:
    """Run one operation's fuzzing cases; (cases run, the failure with its reproduction)."""
    count = itertools.count()
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    with_token = st.booleans() if _needs_token(operation) else st.just(False)

    @settings(max_examples=examples, **_SETTINGS)
    @given(case=cases, authorized=with_token)
    def run(case: schemathesis.Case, authorized: bool) -> None:
        next(count)
        # A case made negative in its headers (e.g. without the required Authorization)
        # goes out as generated: adding the token would undo the violation, and the
        # service would rightly accept it (CI: ST201 on GET /orders, whose other
        # violation, an extra query parameter, never reached the wire).
        authorized = authorized and not _negative_headers(case)
        headers = {"Authorization": f"Bearer {token}"} if authorized else None
        validate(case, case.call(headers=headers), headers)

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:
        return next(count), f"{operation.label}: {exc}"
    return next(count), None


def _stateful(
    schema: schemathesis.BaseSchema, token: str, extra: OthersObjectsAreNotFound
) -> str | None:
    """Scenarios along the document's inferred links, as the token's user."""
    auth = {"Authorization": f"Bearer {token}"}
    base = schema.as_state_machine()

    class Scenarios(base):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"headers": auth}

        def validate_response(
            self, response: Any, case: schemathesis.Case, *_: Any, **__: Any
        ) -> None:
            case.validate_response(
                response,
                checks=ALL_CHECKS,
                additional_checks=[extra.check],
                excluded_checks=_state_bound(response),
                headers=auth,
                recorder=self.recorder,
            )

    try:
        Scenarios.run(
            settings=settings(max_examples=SCENARIOS, stateful_step_count=STEPS, **_SETTINGS)
        )
    except (Exception, BaseExceptionGroup) as exc:
        return f"stateful: {exc}"
    return None


def test_every_check_is_on() -> None:
    names = {check.__name__ for check in ALL_CHECKS}
    assert names >= {
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "positive_data_acceptance",
        "negative_data_rejection",
        "missing_required_header",
        "unsupported_method",
        "allow_header_conformance",
        "ignored_auth",
        "use_after_free",
        "ensure_resource_availability",
        "object_level_authorization",
    }, names


SERVICES = ("user-service", "order-service", "inventory-service", "gateway")
#: Services whose documents have links to follow (inventory's two operations have none).
LINKED = {"user-service", "order-service", "gateway"}
#: Services serving one order by id, where OthersObjectsAreNotFound must have read some.
ORDER_READERS = {"order-service", "gateway"}


@pytest.mark.parametrize("service", SERVICES)
def test_every_operation_answers_as_documented(service: str, apps: Apps) -> None:
    schema = _schema(service, apps)
    extra = OthersObjectsAreNotFound(apps.other_token)
    validate = _validator(extra)
    failures: list[str] = []
    operations = sorted(_operations(schema), key=_has_inputs)  # input-less ones first
    covered = 0
    for operation in operations:
        sent, failure = _coverage(schema, operation, apps.token, validate)
        covered += sent
        failures += [failure] if failure else []
    fuzzed = 0
    for left, operation in zip(range(len(operations), 0, -1), operations, strict=True):
        share = max(FLOOR, -(-(MIN_CASES - fuzzed) // left))  # ceil: the rest, shared
        ran, failure = _fuzz(operation, apps.token, share, validate)
        fuzzed += ran
        failures += [failure] if failure else []
    if service in LINKED:
        failure = _stateful(schema, apps.token, extra)
        failures += [failure] if failure else []
        assert schema.statistic.transitions.total > 0, f"{service}: no links inferred"
    assert not failures, "\n\n".join(failures)
    assert covered >= 5 * len(operations), f"{service}: only {covered} coverage cases"
    assert fuzzed >= MIN_CASES, f"{service}: only {fuzzed} cases ran"
    if service in ORDER_READERS:
        assert extra.probes > 0, f"{service}: no order was read back as another user"
