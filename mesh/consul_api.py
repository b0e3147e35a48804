"""The agent's Connect endpoints, sans-IO: each call's request and the meaning of its answer.

Watched resources (``LeafResource``, ``RootsResource``, ``IntentionsResource``) say which
blocking query to send for an index and a wait, and turn a 200 answer into a value; the
authorize call is ``authorize_request`` / ``authorize_answer``. ``refusal`` is the one
mapping of a non-200 answer to our errors: 403 is a ``MeshPermissionError`` naming the
permission (Consul's own words, through ``consul_discovery.connection.refusals``), another
4xx a ``MeshQueryError``, a 5xx a ``MeshUnavailableError``. Whatever drives them (the
thread driver in ``driver.py`` today, the generic watch engine later) only does the I/O.

The agent endpoints ``/v1/agent/connect/ca/leaf/<service>`` and ``.../ca/roots`` are
deprecated since Consul 1.16 in favour of proxies; Consul 1.22.3 still serves both
(tests/mesh/test_identity.py fetches, blocks on and rotates them against that binary).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote

from consul_discovery.connection.refusals import acl_denial
from consul_discovery.mesh.errors import (
    MeshError,
    MeshPermissionError,
    MeshQueryError,
    MeshUnavailableError,
)
from consul_discovery.mesh.identity import CaRoots, Leaf
from consul_discovery.mesh.intentions import IntentionSet

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

INDEX_HEADER = "x-consul-index"
DEFAULT_ACL_POLICY_HEADER = "x-consul-default-acl-policy"

# What a token needs, in the policy language, for each permission a mesh call may lack.
_POLICY_HINTS = {
    "service:write": 'service "{resource}" {{ policy = "write" }}',
    "intention:read": 'service "{resource}" {{ intentions = "read" }}',
}


@dataclass(frozen=True, slots=True)
class ConsulRequest:
    """One HTTP call to the agent: method, path, query parameters, JSON body."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    json_body: Mapping[str, Any] | None = field(default=None, hash=False)
    call: str = ""  # what it does, in words, for error messages


@dataclass(frozen=True, slots=True)
class ConsulAnswer:
    """The agent's answer: status, headers (names in lower case) and body."""

    status: int
    headers: Mapping[str, str] = field(hash=False)
    body: bytes = b""

    @classmethod
    def of(cls, status: int, headers: Mapping[str, str], body: bytes) -> ConsulAnswer:
        """Build one, lower-casing the header names."""
        return cls(status, {k.lower(): v for k, v in headers.items()}, body)

    def header(self, name: str) -> str | None:
        """A header's value (``name`` in lower case), or None."""
        return self.headers.get(name)

    def index(self) -> int | None:
        """``X-Consul-Index`` as an int, or None when missing or not a number."""
        raw = self.header(INDEX_HEADER)
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return None


class WatchedResource(Protocol[T_co]):
    """A blocking-query resource: the request for an index and wait, the answer's value."""

    @property
    def call(self) -> str:
        """What the watch does, in words ("fetch the leaf certificate of 'web'")."""
        ...

    def request(self, index: int, wait: float) -> ConsulRequest:
        """The blocking query to send (index 0: a plain read)."""
        ...

    def interpret(self, answer: ConsulAnswer) -> T_co:
        """The value in a 200 answer; any other answer raises its MeshError."""
        ...


def blocking_params(index: int, wait: float) -> tuple[tuple[str, str], ...]:
    """``index``/``wait`` query parameters (none for a plain read)."""
    if index <= 0:
        return ()
    return (("index", str(index)), ("wait", f"{max(1, round(wait * 1000))}ms"))


def refusal(answer: ConsulAnswer, call: str) -> MeshError:
    """Our error for a non-200 answer to ``call`` (never includes a token)."""
    text = answer.body.decode("utf-8", "replace").strip()
    if answer.status == 403:
        denial = acl_denial(text, call)
        message = str(denial)
        hint = _POLICY_HINTS.get(denial.permission or "")
        if hint and denial.resource:
            message += (
                f"; grant it with a policy rule such as {hint.format(resource=denial.resource)}"
            )
        return MeshPermissionError(message, denial.permission)
    if 400 <= answer.status < 500:
        return MeshQueryError(f"Consul refused to {call}: HTTP {answer.status}: {text[:300]}")
    return MeshUnavailableError(f"Consul failed to {call}: HTTP {answer.status}: {text[:300]}")


def json_of(answer: ConsulAnswer, call: str) -> Any:
    """The JSON body of a 200 answer; the refusal otherwise."""
    if answer.status != 200:
        raise refusal(answer, call)
    try:
        return json.loads(answer.body or b"null")
    except ValueError:
        raise MeshQueryError(f"Consul's answer to {call} is not JSON") from None


def _name(value: str, what: str) -> str:
    if not value or "/" in value or value.strip() != value:
        raise ValueError(f"{what} {value!r} is not a Consul service name")
    return value


class _Blocking(Generic[T]):
    """Shared shape of the three watched resources: a GET with blocking parameters."""

    path: str
    extra: tuple[tuple[str, str], ...] = ()
    call: str

    def request(self, index: int, wait: float) -> ConsulRequest:
        """The blocking query for ``index`` and ``wait``."""
        params = self.extra + blocking_params(index, wait)
        return ConsulRequest("GET", self.path, params, call=self.call)


class LeafResource(_Blocking[Leaf]):
    """The service's leaf certificate (needs ``service:write`` on the service)."""

    def __init__(self, service: str) -> None:
        self.service = _name(service, "service")
        self.path = f"/v1/agent/connect/ca/leaf/{quote(service, safe='')}"
        self.call = f"fetch the leaf certificate of {service!r}"

    def interpret(self, answer: ConsulAnswer) -> Leaf:
        """The Leaf in the agent's answer."""
        return Leaf.from_json(json_of(answer, self.call))


class RootsResource(_Blocking[CaRoots]):
    """The CA roots of the trust domain (any token may read them)."""

    path = "/v1/agent/connect/ca/roots"
    call = "fetch the Connect CA roots"

    def interpret(self, answer: ConsulAnswer) -> CaRoots:
        """The CaRoots in the agent's answer."""
        return CaRoots.from_json(json_of(answer, self.call))


class IntentionsResource(_Blocking[IntentionSet]):
    """The intentions that match ``destination``, in Consul's precedence order.

    Read through the agent's cache (``?cached``): the authorize endpoint reads the same
    cache entry, so once this watch has seen a change, authorize answers by it too.
    Needs ``intention:read`` on the destination (a service identity token has it).
    """

    def __init__(self, destination: str) -> None:
        self.destination = _name(destination, "destination")
        self.path = "/v1/connect/intentions/match"
        self.extra = (("by", "destination"), ("name", destination), ("cached", ""))
        self.call = f"read the intentions for {destination!r}"

    def interpret(self, answer: ConsulAnswer) -> IntentionSet:
        """The IntentionSet in the agent's answer."""
        body = json_of(answer, self.call)
        if not isinstance(body, Mapping):
            raise MeshQueryError(f"Consul's answer to {self.call} is not an object")
        return IntentionSet.from_json(
            self.destination,
            body.get(self.destination) or [],
            acl_default_policy=answer.header(DEFAULT_ACL_POLICY_HEADER),
            index=answer.index() or 0,
        )


@dataclass(frozen=True, slots=True)
class AuthorizeResult:
    """The agent's L4 decision for one (source, destination) and its reason."""

    authorized: bool
    reason: str

    @property
    def by_default(self) -> bool:
        """True when no intention matched and the default policy decided."""
        return self.reason.startswith(("Default", "ACLs disabled"))

    @property
    def l7(self) -> bool:
        """True when the matching intention has L7 permissions (the agent then says no)."""
        return self.reason.startswith("Matched L7")


def authorize_request(destination: str, client_uri: str) -> ConsulRequest:
    """``POST /v1/agent/connect/authorize`` for a caller's URI towards ``destination``."""
    return ConsulRequest(
        "POST",
        "/v1/agent/connect/authorize",
        json_body={"Target": destination, "ClientCertURI": client_uri},
        call=f"authorize a connection to {destination!r}",
    )


def authorize_answer(answer: ConsulAnswer, call: str) -> AuthorizeResult:
    """The decision in the agent's authorize answer."""
    body = json_of(answer, call)
    try:
        return AuthorizeResult(bool(body["Authorized"]), str(body.get("Reason", "")))
    except (KeyError, TypeError):
        raise MeshQueryError(f"Consul's answer to {call} has no decision") from None
