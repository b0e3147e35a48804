"""The health query, without I/O: what both Consul sources ask and what answers mean.

``ConsulSource`` (threads, requests) and ``AsyncConsulSource`` (asyncio, httpx) send the
very requests built here and read every answer here; they only do the I/O.

- **The request.** ``/v1/health/service/<name>`` (``/v1/health/connect/<name>`` for a
  ``connect`` Target: Connect-capable instances; ``/v1/query/<name>/execute`` for a
  ``prepared_query`` Target, polled), with the Target's ``dc``, ``tag`` and
  ``filter``, the blocking ``index``/``wait`` of the poll, and, when asked,
  ``passing`` and a consistency mode (``stale`` / ``consistent``). The watch asks
  *without* ``passing`` by default: one answer gives the passing and warning sets and
  the count of all registered instances (panic mode), split in ``health_entries``.
  The read timeout is ``request_timeout + wait + wait/16`` (Consul's jitter).
- **The answer.** ``X-Consul-Index`` (the watch applies ``next_index``) and the JSON
  entries, turned into Instances by ``health_entries``.
- **Errors**, by the one mapping of ``consul_connection.refusals``: 403 ->
  ``ConsulPermissionError`` naming the permission; a bad filter (Consul answers 500) and
  other 4xx -> ``ConsulQueryError``; 5xx (no leader, the agent shutting down, ...) and
  no answer at all (refused, timeout, TLS mismatch, reset) -> ``ConsulUnavailableError``.
- **Empty answers** are checked, because an empty list is ambiguous:
  ``X-Consul-Results-Filtered-By-ACLs`` on an empty answer is a permission problem
  (``ConsulPermissionError``), never "no instances". Until the watch has a value, an
  empty answer also asks the catalog: a service it does not list is an
  ``UnknownServiceError`` (listing the names it knows), and an empty catalog under
  ``X-Consul-Default-Acl-Policy: deny`` is a permission problem (a live catalog lists at
  least the servers' ``consul`` service to any token that may read it). A service that
  is known but has no matching instance is a real, empty set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from consul_discovery.client.errors import (
    ConsulPermissionError,
    ConsulQueryError,
    ConsulRateLimitedError,
    ConsulUnavailableError,
    UnknownServiceError,
)
from consul_discovery.client.health_entries import Entry, InstanceCache, instances_from_entries
from consul_discovery.client.instance import Instance
from consul_discovery.client.target import Target
from consul_discovery.connection.exchange import Exchange, Request, Response
from consul_discovery.connection.refusals import ErrorKinds, answer_error, filtered_by_acls
from consul_discovery.connection.resource import Answer, Poll

DISCOVERY_ERRORS = ErrorKinds(
    unavailable=ConsulUnavailableError,
    refused=ConsulQueryError,
    denied=ConsulPermissionError,
    throttled=ConsulRateLimitedError,
)

Consistency = Literal["default", "stale", "consistent"]


@dataclass(frozen=True, slots=True)
class QueryOptions:
    """How a source asks: read timeout (plus the wait when blocking), passing only or all
    instances, consistency mode."""

    request_timeout: float = 10.0
    passing: bool = False
    consistency: Consistency = "default"

    def __post_init__(self) -> None:
        if self.request_timeout <= 0:
            raise ValueError(f"request_timeout must be > 0 seconds; got {self.request_timeout}")
        if self.consistency not in ("default", "stale", "consistent"):
            raise ValueError(
                f"consistency must be default, stale or consistent; got {self.consistency!r}"
            )


def what(target: Target) -> str:
    """How errors name a target ("service 'web'", "service 'web[dc=dc2]'")."""
    return f"service {str(target)!r}"


def health_request(target: Target, poll: Poll, options: QueryOptions) -> Request:
    """The health query for ``target`` at ``poll``'s index and wait."""
    kind = "connect" if target.connect else "service"
    params = list(poll.params())
    for name, value in (("dc", target.datacenter), ("tag", target.tag), ("filter", target.filter)):
        if value is not None:
            params.append((name, value))
    if options.passing:
        params.append(("passing", "1"))
    if options.consistency != "default":
        params.append((options.consistency, ""))
    return Request(
        f"/v1/health/{kind}/{quote(target.service, safe='')}",
        tuple(params),
        poll.timeout(options.request_timeout),
    )


def query_request(target: Target, options: QueryOptions) -> Request:
    """The execution of ``target``'s prepared query (Consul does not block on it: the
    watch polls it, paced by its ``min_interval``)."""
    assert target.prepared_query is not None
    params: list[tuple[str, str]] = []
    if target.datacenter is not None:
        params.append(("dc", target.datacenter))
    if options.consistency != "default":
        params.append((options.consistency, ""))
    name = quote(target.prepared_query, safe="")
    return Request(f"/v1/query/{name}/execute", tuple(params), options.request_timeout)


def read_query(response: Response, target: Target, address: str) -> tuple[list[Entry], bool]:
    """The entries of a prepared query's answer, and whether they come from another
    datacenter (the query failed over: its instances are reached at their WAN address)."""
    error = answer_error(response, what(target), address, DISCOVERY_ERRORS)
    if error is not None:
        raise error
    body = response.json() or {}
    entries = body.get("Nodes") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        raise ConsulQueryError(f"Consul at {address} answered {what(target)} with no list of nodes")
    return entries, int(body.get("Failovers") or 0) > 0


def catalog_request(datacenter: str | None, options: QueryOptions) -> Request:
    """The catalog's service names (one datacenter; None: the agent's own)."""
    params = (("dc", datacenter),) if datacenter else ()
    return Request("/v1/catalog/services", params, options.request_timeout)


def read_health(response: Response, target: Target, address: str) -> list[Entry]:
    """The entries of a health answer; raises the mapped error for a refusal."""
    error = answer_error(response, what(target), address, DISCOVERY_ERRORS)
    if error is not None:
        raise error
    entries = response.json() or []
    if not isinstance(entries, list):
        raise ConsulQueryError(f"Consul at {address} answered {what(target)} with no list")
    if not entries and filtered_by_acls(response.headers):
        raise ConsulPermissionError(
            f"Consul at {address} left the instances of {str(target)!r} out of its answer "
            "because of ACLs: the token lacks service:read on it or node:read on its nodes"
        )
    return entries


def read_catalog(response: Response, address: str) -> list[str]:
    """The sorted service names of a catalog answer; raises for a refusal or an answer
    that ACLs emptied."""
    error = answer_error(response, "the service catalog", address, DISCOVERY_ERRORS)
    if error is not None:
        raise error
    names = sorted(response.json() or {})
    if not names and filtered_by_acls(response.headers):
        raise ConsulPermissionError(
            f"Consul at {address} left every service out of the catalog because of ACLs: "
            "the token lacks service:read"
        )
    if not names and (response.header("X-Consul-Default-Acl-Policy") or "").lower() == "deny":
        raise ConsulPermissionError(
            f"Consul at {address} showed this token no service at all (ACLs default to "
            "deny): the token lacks service:read"
        )
    return names


def instances_exchange(
    target: Target,
    poll: Poll,
    options: QueryOptions,
    address: str,
    cache: InstanceCache | None = None,
) -> Exchange[Answer[tuple[Instance, ...]]]:
    """One poll of ``target``: the health query, then (while nothing is resolved and the
    answer is empty) the catalog, to tell an unknown service from an empty one.
    ``cache`` (a watch's) reuses the Instances of unchanged entries. Instances of another
    datacenter (``target.datacenter``, or a prepared query that failed over) are reached
    at the WAN address they advertise (``health_entries.instance_from_entry``). A
    prepared query Target executes its query instead (one request, no blocking)."""
    if target.prepared_query is not None:
        response = yield query_request(target, options)
        entries, wan = read_query(response, target, address)
    else:
        response = yield health_request(target, poll, options)
        entries = read_health(response, target, address)
        wan = target.datacenter is not None
        if not entries and not poll.resolved:
            names = read_catalog((yield catalog_request(target.datacenter, options)), address)
            if target.service not in names:
                raise UnknownServiceError(target.service, names)
    if cache is not None:
        instances = cache.instances(entries, wan)
    else:
        instances = instances_from_entries(entries, wan)
    return Answer(response.index, instances)


def services_exchange(
    datacenter: str | None, options: QueryOptions, address: str
) -> Exchange[Sequence[str]]:
    """The catalog's service names, once."""
    return read_catalog((yield catalog_request(datacenter, options)), address)
