"""The agent's Connect endpoints, sans-IO: each call's request and the meaning of its answer.

The three watched resources (``LeafResource``, ``RootsResource``, ``IntentionsResource``)
are ``consul_connection.resource.Resource``s: the shared watch engine
(``consul_connection.watch``, driven on the process's event loop by
``consul_discovery.mesh.watches``) applies the blocking-query rules, this module only says
which request a poll sends and what a 200 answer holds. The authorize call is
``authorize_request`` / ``authorize_answer``.

Errors go through the one mapping of ``consul_connection.refusals`` with the mesh's own
classes (``MESH_ERRORS``): a 5xx or no answer is a ``MeshUnavailableError``, a 429 a
``MeshRateLimitedError`` (the engine backs off longer and keeps what is in force), another
4xx a ``MeshQueryError``. A 403 is a ``MeshPermissionError`` naming the permission and the
policy rule that grants it (``refusal``), never the token.

The agent endpoints ``/v1/agent/connect/ca/leaf/<service>`` and ``.../ca/roots`` are
deprecated since Consul 1.16 in favour of proxies; Consul 1.22.3 still serves both
(tests/mesh/test_identity.py fetches, blocks on and rotates them against that binary).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

from consul_discovery.connection.exchange import Request, Response
from consul_discovery.connection.refusals import ErrorKinds, acl_denial, answer_error
from consul_discovery.connection.resource import Poll, Resource
from consul_discovery.mesh.errors import (
    MeshError,
    MeshPermissionError,
    MeshQueryError,
    MeshRateLimitedError,
    MeshUnavailableError,
)
from consul_discovery.mesh.identity import CaRoots, Leaf
from consul_discovery.mesh.intentions import IntentionSet

T = TypeVar("T")

DEFAULT_ACL_POLICY_HEADER = "x-consul-default-acl-policy"

#: The mesh's classes for Consul's kinds of "no" (consul_connection.refusals).
MESH_ERRORS = ErrorKinds(
    unavailable=MeshUnavailableError,
    refused=MeshQueryError,
    denied=MeshPermissionError,
    throttled=MeshRateLimitedError,
)

#: The read timeout of one call to the agent (a blocking query adds its wait).
REQUEST_TIMEOUT = 10.0

# What a token needs, in the policy language, for each permission a mesh call may lack.
_POLICY_HINTS = {
    "service:write": 'service "{resource}" {{ policy = "write" }}',
    "intention:read": 'service "{resource}" {{ intentions = "read" }}',
}


def refusal(response: Response, call: str, address: str = "") -> MeshError:
    """Our error for a non-2xx answer to ``call`` (never includes a token)."""
    if response.status == 403:
        denial = acl_denial(response.text.strip(), call)
        message = str(denial)
        hint = _POLICY_HINTS.get(denial.permission or "")
        if hint and denial.resource:
            message += (
                f"; grant it with a policy rule such as {hint.format(resource=denial.resource)}"
            )
        return MeshPermissionError(message, denial.permission)
    error = answer_error(response, call, address or "the agent", MESH_ERRORS)
    assert isinstance(error, MeshError), "refusal() is for non-2xx answers"
    return error


def json_of(response: Response, call: str, address: str = "") -> Any:
    """The JSON body of a 2xx answer; the refusal otherwise."""
    if not 200 <= response.status < 300:
        raise refusal(response, call, address)
    try:
        return response.json()
    except ValueError:
        raise MeshQueryError(f"Consul's answer to {call} is not JSON") from None


def _name(value: str, what: str) -> str:
    if not value or "/" in value or value.strip() != value:
        raise ValueError(f"{what} {value!r} is not a Consul service name")
    return value


class _MeshResource(Resource[T, T]):
    """Shared shape of the three watched resources: a GET with blocking parameters."""

    path: str
    extra: tuple[tuple[str, str], ...] = ()

    def __init__(self, name: str, call: str, address: str) -> None:
        super().__init__(name, call, address, MESH_ERRORS)
        self.call = call  # what the watch does, in words, for error messages

    def request(self, poll: Poll) -> Request:
        """The blocking query for ``poll``."""
        return Request(self.path, self.extra + poll.params(), poll.timeout(REQUEST_TIMEOUT))

    def interpret(self, response: Response) -> T:
        """The value of a 2xx answer; a 403 names the permission and the rule to grant."""
        return self.decode_json(json_of(response, self.call, self.address), response)

    def decode_json(self, body: Any, response: Response) -> T:
        """The value of a parsed 2xx answer."""
        raise NotImplementedError

    def summary(self, value: T) -> str:
        """How the outage log line names what stays in force."""
        return "the one in force"


class LeafResource(_MeshResource[Leaf]):
    """The service's leaf certificate (needs ``service:write`` on the service)."""

    def __init__(self, service: str, address: str = "") -> None:
        self.service = _name(service, "service")
        self.path = f"/v1/agent/connect/ca/leaf/{quote(service, safe='')}"
        super().__init__(
            f"mesh-leaf-{service}", f"fetch the leaf certificate of {service!r}", address
        )

    def decode_json(self, body: Any, response: Response) -> Leaf:
        """The Leaf in the agent's answer."""
        return Leaf.from_json(body)


class RootsResource(_MeshResource[CaRoots]):
    """The CA roots of the trust domain (any token may read them)."""

    path = "/v1/agent/connect/ca/roots"

    def __init__(self, address: str = "") -> None:
        super().__init__("mesh-roots", "fetch the Connect CA roots", address)

    def decode_json(self, body: Any, response: Response) -> CaRoots:
        """The CaRoots in the agent's answer."""
        return CaRoots.from_json(body)


class IntentionsResource(_MeshResource[IntentionSet]):
    """The intentions that match ``destination``, in Consul's precedence order.

    Read through the agent's cache (``?cached``): the authorize endpoint reads the same
    cache entry, so once this watch has seen a change, authorize answers by it too.
    Needs ``intention:read`` on the destination (a service identity token has it).
    """

    path = "/v1/connect/intentions/match"

    def __init__(self, destination: str, address: str = "") -> None:
        self.destination = _name(destination, "destination")
        self.extra = (("by", "destination"), ("name", destination), ("cached", ""))
        super().__init__(
            f"mesh-intentions-{destination}", f"read the intentions for {destination!r}", address
        )

    def decode_json(self, body: Any, response: Response) -> IntentionSet:
        """The IntentionSet in the agent's answer."""
        if not isinstance(body, Mapping):
            raise MeshQueryError(f"Consul's answer to {self.call} is not an object")
        return IntentionSet.from_json(
            self.destination,
            body.get(self.destination) or [],
            acl_default_policy=response.header(DEFAULT_ACL_POLICY_HEADER),
            index=response.index or 0,
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


def authorize_call(destination: str) -> str:
    """What an authorize call does, in words."""
    return f"authorize a connection to {destination!r}"


def authorize_request(destination: str, client_uri: str) -> Request:
    """``POST /v1/agent/connect/authorize`` for a caller's URI towards ``destination``."""
    body = json.dumps({"Target": destination, "ClientCertURI": client_uri}).encode()
    return Request(
        "/v1/agent/connect/authorize",
        timeout=REQUEST_TIMEOUT,
        method="POST",
        headers=(("Content-Type", "application/json"),),
        body=body,
    )


def authorize_answer(response: Response, call: str, address: str = "") -> AuthorizeResult:
    """The decision in the agent's authorize answer."""
    body = json_of(response, call, address)
    try:
        return AuthorizeResult(bool(body["Authorized"]), str(body.get("Reason", "")))
    except (KeyError, TypeError):
        raise MeshQueryError(f"Consul's answer to {call} has no decision") from None
