"""What a failed call to the Consul agent means for the registrar: refused for good, or
unavailable (retried). py-consul raises its own exceptions for HTTP answers and lets
requests' through for transport failures; both end up here.
"""

from __future__ import annotations

import consul
import consul.exceptions
import requests

from consul_discovery.connection import ConsulConnection, describe_transport_error
from consul_discovery.connection.refusals import acl_denial
from consul_discovery.connection.transport_errors import is_http_to_https_port
from consul_discovery.registry.config import ConsulSettings
from consul_discovery.registry.errors import ConsulRejected, ConsulUnavailable

#: What an agent call may raise that is the agent's (or the network's) doing.
AGENT_ERRORS = (requests.RequestException, consul.ConsulException)


def consul_client(settings: ConsulSettings, timeout: float = 3.0) -> consul.Consul:
    """A py-consul client for ``settings`` (consul_connection builds it: TLS, token, no env)."""
    return settings.py_consul(timeout=timeout)


def agent_error(
    call: str, exc: BaseException, connection: ConsulConnection | None = None
) -> ConsulRejected | ConsulUnavailable:
    """The registry error for an agent call that raised ``exc``: rejected, or unavailable.

    A 403 is read as every client here reads it (``consul_connection.refusals``): the
    missing permission, its resource and the token's accessor id (not a secret), or a
    token the agent does not know; never the token. A 400's keeps the agent's reason. A
    transport failure says what failed on the wire, naming ``connection``'s agent.
    """
    if isinstance(exc, consul.exceptions.ACLPermissionDenied):
        denial = acl_denial(str(exc), call)  # the one reading of a 403 (consul_connection)
        return ConsulRejected(call, 403, denial.reason, denial.permission)
    if isinstance(exc, consul.exceptions.BadRequest):
        detail = str(exc).removeprefix("400 ").strip() or "bad request"
        if is_http_to_https_port(400, detail) and connection is not None:
            detail = (
                f"{connection.base_url} is an HTTPS port: use https:// in CONSUL_HTTP_ADDR "
                "(or CONSUL_HTTP_SSL=true)"
            )
        return ConsulRejected(call, 400, detail[:500])
    if isinstance(exc, requests.RequestException):
        return ConsulUnavailable(f"{call}: {describe_transport_error(exc, connection)}")
    if isinstance(exc, consul.exceptions.ClientError) and str(exc).startswith("429"):
        return ConsulUnavailable(  # the agent protecting itself: retried, never a rejection
            f"{call}: the agent rate-limited this host (429: too many connections or "
            "requests from this address)"
        )
    return ConsulUnavailable(f"{call}: {exc}")
