"""What Consul means when it says no, as one mapping every client shares.

Consul answers a request its token may not make with ``403`` and a body such as
``Permission denied: token with AccessorID '…' lacks permission 'service:write' on
"order-service"`` (or ``ACL not found`` for a token it does not know), and an answer it
trimmed to what the token may see with the header ``X-Consul-Results-Filtered-By-ACLs:
true``. ``acl_denial`` turns a 403 into a sentence that names the permission and the
call, and never the token (the accessor id, which is not a secret, is kept: it tells the
operator which token to fix).

``acl_denial`` is the one reading of a 403 for every client here, the registrar's (which
uses ``AclDenial.reason`` in its ``ConsulRejected``) included.

``answer_error`` and ``transport_error`` are the one error mapping of every Consul client
here (the threaded and asyncio discovery sources, the KV watch, future watches), from an
HTTP answer or from a ``TransportFailure``; each client names its own exception classes
(``ErrorKinds``):

=========================================  ===========================================
403                                        ``denied`` (the permission named)
400 "HTTP request to an HTTPS server"      ``unavailable`` (use https://)
429 (Consul's connection or rate limit)    ``throttled`` (else ``unavailable``): the agent
                                           protecting itself (``consul_connection.throttle``)
other 4xx                                  ``refused``
500 naming a filter/boolean expression     ``refused`` (Consul's answer to a bad filter)
other 5xx: no leader, the agent shutting   ``unavailable``
down (``grpc: the client connection is
closing``), no path to a datacenter, ...
no answer at all (refused, timeout, TLS    ``unavailable``, saying which
mismatch, reset, name not found)
=========================================  ===========================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from consul_discovery.connection.exchange import Response, TransportError
from consul_discovery.connection.transport_errors import is_http_to_https_port

FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs"
_UNKNOWN_TOKEN = re.compile(r"ACL not found", re.IGNORECASE)
_BAD_EXPRESSION = re.compile(r"boolean expression|filter", re.IGNORECASE)
_HINTS = (
    (re.compile(r"no cluster leader", re.IGNORECASE), "no cluster leader"),
    (
        re.compile(r"client connection is closing|shutting down|server closed", re.IGNORECASE),
        "the agent is shutting down",
    ),
    (re.compile(r"no path to datacenter", re.IGNORECASE), "no path to that datacenter"),
    (re.compile(r"rate limit", re.IGNORECASE), "rate limited"),
)

_LACKS = re.compile(
    r"token with AccessorID '(?P<accessor>[^']*)' lacks permission '(?P<permission>[^']+)'"
    r"(?: on \"?(?P<resource>[^\"]*)\"?)?"
)


@dataclass(frozen=True, slots=True)
class AclDenial:
    """One ACL refusal: the permission that is missing, on what, for which call."""

    call: str
    permission: str | None = None
    resource: str | None = None
    accessor: str | None = None
    unknown_token: bool = False  # "ACL not found": Consul does not know the token at all

    def __str__(self) -> str:
        return f"Consul denied permission to {self.call}: {self.reason}"

    @property
    def reason(self) -> str:
        """Why, without the call: the one wording of a 403 for every client here."""
        if self.unknown_token:
            return (
                "it does not know the ACL token (ACL not found; "
                "check CONSUL_HTTP_TOKEN / CONSUL_HTTP_TOKEN_FILE)"
            )
        if self.permission is None:
            return "the ACL token lacks a permission for it"
        on = f" on {self.resource!r}" if self.resource else ""
        who = f" (token accessor {self.accessor})" if self.accessor else ""
        return f"the ACL token lacks {self.permission!r}{on}{who}"


def acl_denial(body: str, call: str) -> AclDenial:
    """Read Consul's 403 body for ``call`` (e.g. "register order-service-1")."""
    match = _LACKS.search(body or "")
    if match is None:
        return AclDenial(call, unknown_token=bool(_UNKNOWN_TOKEN.search(body or "")))
    return AclDenial(
        call,
        permission=match["permission"],
        resource=match["resource"] or None,
        accessor=match["accessor"] or None,
    )


def filtered_by_acls(headers: Mapping[str, str]) -> bool:
    """True when Consul says it left entries out of an answer because of ACLs."""
    for name, value in headers.items():
        if name.lower() == FILTERED_HEADER.lower():
            return str(value).strip().lower() == "true"
    return False


@dataclass(frozen=True, slots=True)
class ErrorKinds:
    """The exception classes one client raises for Consul's kinds of "no".

    ``unavailable``: Consul cannot answer now (retry later); ``refused``: it answered but
    rejects the request (a bad filter, a 4xx); ``denied``: ACLs refused or emptied it;
    ``throttled``: it answered 429 (a ``consul_connection.throttle.RateLimited`` class;
    None: ``unavailable``).
    """

    unavailable: type[Exception]
    refused: type[Exception]
    denied: type[Exception]
    throttled: type[Exception] | None = None


def answer_error(
    response: Response, what: str, address: str, kinds: ErrorKinds, *, verb: str = "read"
) -> Exception | None:
    """The error an HTTP answer to ``verb what`` means (None for a 2xx): see the table.

    ``what`` names the thing ("service 'web'", "config/orders/"); ``verb`` what was
    done to it, for a 403's sentence ("Consul denied permission to read service 'web': ...").
    """
    status = response.status
    if 200 <= status < 300:
        return None
    body = response.text.strip()[:200]
    if status == 403:
        return kinds.denied(f"Consul at {address}: {acl_denial(body, f'{verb} {what}')}")
    if is_http_to_https_port(status, body):
        return kinds.unavailable(
            f"Consul at {address} speaks HTTPS on that port, asked over plain HTTP for "
            f"{what}: use https:// in CONSUL_HTTP_ADDR (or CONSUL_HTTP_SSL=true)"
        )
    if status == 429:
        kind = kinds.throttled or kinds.unavailable
        return kind(f"Consul at {address} rate limited {what}: {status} {body}")
    if 400 <= status < 500:
        return kinds.refused(f"Consul at {address} refused {what}: {status} {body}")
    if _BAD_EXPRESSION.search(body):  # Consul answers a filter that does not parse with a 500
        return kinds.refused(
            f"Consul at {address} rejected the filter expression for {what}: {body}"
        )
    hint = next((text for pattern, text in _HINTS if pattern.search(body)), None)
    why = f" ({hint})" if hint else ""
    return kinds.unavailable(f"Consul at {address} unavailable for {what}{why}: {status} {body}")


def transport_error(error: TransportError, what: str, address: str, kinds: ErrorKinds) -> Exception:
    """The error a request about ``what`` that got no answer means.

    Its ``__cause__`` is the transport's own exception (``error``'s cause), else ``error``.
    """
    detail = error.detail if error.detail.lower() != error.kind.reason else ""
    reason = error.kind.reason + (f" ({detail})" if detail else "")
    mapped = kinds.unavailable(f"Consul at {address} unreachable for {what}: {reason}")
    mapped.__cause__ = error.__cause__ if error.__cause__ is not None else error
    return mapped
