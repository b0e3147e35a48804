"""Reading a chain's router and splitter nodes: routes, matches, destinations, splits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from consul_discovery.client.chain.model import (
    NO_HEADER_CHANGES,
    ChainRetry,
    HeaderMatch,
    HeaderModifiers,
    HttpMatch,
    QueryMatch,
    Route,
    RouteDestination,
    Split,
)
from consul_discovery.client.chain.reading import (
    INERT_RETRY_CONDITIONS,
    RETRY_CONDITIONS,
    ChainFormatError,
    Reader,
    parse_duration,
)

# The fields of each object that are honoured.
_HTTP_MATCH_KEYS = (
    *("PathExact", "PathPrefix", "PathRegex", "CaseInsensitive"),
    *("Header", "QueryParam", "Methods"),
)

_HEADER_MATCH_KEYS = ("Name", "Present", "Exact", "Prefix", "Suffix", "Regex", "Invert")
_DESTINATION_KEYS = (
    *("Service", "ServiceSubset", "Namespace", "Partition", "PrefixRewrite"),
    *("RequestTimeout", "IdleTimeout", "NumRetries", "RetryOnConnectFailure", "RetryOn"),
    *("RetryOnStatusCodes", "RequestHeaders", "ResponseHeaders"),
)

_DESTINATION_KEYS = (
    *("Service", "ServiceSubset", "Namespace", "Partition", "PrefixRewrite"),
    *("RequestTimeout", "IdleTimeout", "NumRetries", "RetryOnConnectFailure", "RetryOn"),
    *("RetryOnStatusCodes", "RequestHeaders", "ResponseHeaders"),
)

_SPLIT_KEYS = (
    *("Weight", "Service", "ServiceSubset", "Namespace", "Partition"),
    *("RequestHeaders", "ResponseHeaders"),
)


def read_route(r: Reader, raw: Mapping[str, Any], node: str, i: int) -> Route:
    where = f"{node}.Routes[{i}]"
    r.keys(raw, where, ("Definition", "NextNode"))
    definition = r.obj(raw.get("Definition"), f"{where}.Definition")
    r.keys(definition, f"{where}.Definition", ("Match", "Destination"))
    match = r.obj(definition.get("Match"), f"{where}.Match")
    r.keys(match, f"{where}.Match", ("HTTP",))
    next_node = r.text(raw.get("NextNode"), f"{where}.NextNode")
    if not next_node:
        raise ChainFormatError(f"{where}: no NextNode")
    return Route(
        match=_http_match(
            r, r.obj(match.get("HTTP"), f"{where}.Match.HTTP"), f"{where}.Match.HTTP"
        ),
        destination=_destination(
            r, r.obj(definition.get("Destination"), f"{where}.Destination"), f"{where}.Destination"
        ),
        next_node=next_node,
    )


def _http_match(r: Reader, raw: Mapping[str, Any], where: str) -> HttpMatch:
    r.keys(
        raw,
        where,
        _HTTP_MATCH_KEYS,
    )
    headers = []
    for i, h in enumerate(r.seq(raw.get("Header"), f"{where}.Header")):
        h = r.obj(h, f"{where}.Header[{i}]")
        r.keys(
            h,
            f"{where}.Header[{i}]",
            ("Name", "Present", "Exact", "Prefix", "Suffix", "Regex", "Invert"),
        )
        headers.append(
            HeaderMatch(
                name=r.text(h.get("Name"), f"{where}.Header[{i}].Name"),
                present=bool(h.get("Present")),
                exact=r.text(h.get("Exact"), f"{where}.Header[{i}].Exact"),
                prefix=r.text(h.get("Prefix"), f"{where}.Header[{i}].Prefix"),
                suffix=r.text(h.get("Suffix"), f"{where}.Header[{i}].Suffix"),
                regex=r.text(h.get("Regex"), f"{where}.Header[{i}].Regex"),
                invert=bool(h.get("Invert")),
            )
        )
    query = []
    for i, q in enumerate(r.seq(raw.get("QueryParam"), f"{where}.QueryParam")):
        q = r.obj(q, f"{where}.QueryParam[{i}]")
        r.keys(q, f"{where}.QueryParam[{i}]", ("Name", "Present", "Exact", "Regex"))
        query.append(
            QueryMatch(
                name=r.text(q.get("Name"), f"{where}.QueryParam[{i}].Name"),
                present=bool(q.get("Present")),
                exact=r.text(q.get("Exact"), f"{where}.QueryParam[{i}].Exact"),
                regex=r.text(q.get("Regex"), f"{where}.QueryParam[{i}].Regex"),
            )
        )
    return HttpMatch(
        path_exact=r.text(raw.get("PathExact"), f"{where}.PathExact"),
        path_prefix=r.text(raw.get("PathPrefix"), f"{where}.PathPrefix"),
        path_regex=r.text(raw.get("PathRegex"), f"{where}.PathRegex"),
        case_insensitive=bool(raw.get("CaseInsensitive")),
        headers=tuple(headers),
        query=tuple(query),
        methods=tuple(
            r.text(m, f"{where}.Methods").upper()
            for m in r.seq(raw.get("Methods"), f"{where}.Methods")
        ),
    )


def _destination(r: Reader, raw: Mapping[str, Any], where: str) -> RouteDestination:
    r.keys(
        raw,
        where,
        _DESTINATION_KEYS,
    )
    r.default_tenancy(raw, where)
    return RouteDestination(
        service=r.text(raw.get("Service"), f"{where}.Service"),
        subset=r.text(raw.get("ServiceSubset"), f"{where}.ServiceSubset"),
        prefix_rewrite=r.text(raw.get("PrefixRewrite"), f"{where}.PrefixRewrite"),
        request_timeout=parse_duration(raw.get("RequestTimeout"), f"{where}.RequestTimeout"),
        idle_timeout=parse_duration(raw.get("IdleTimeout"), f"{where}.IdleTimeout"),
        retry=_retry(r, raw, where),
        request_headers=_headers(r, raw.get("RequestHeaders"), f"{where}.RequestHeaders"),
        response_headers=_headers(r, raw.get("ResponseHeaders"), f"{where}.ResponseHeaders"),
    )


def _retry(r: Reader, raw: Mapping[str, Any], where: str) -> ChainRetry | None:
    num = raw.get("NumRetries") or 0
    on = [r.text(x, f"{where}.RetryOn") for x in r.seq(raw.get("RetryOn"), f"{where}.RetryOn")]
    codes = r.seq(raw.get("RetryOnStatusCodes"), f"{where}.RetryOnStatusCodes")
    connect = bool(raw.get("RetryOnConnectFailure"))
    if not (num or on or codes or connect):
        return None  # Consul's HasRetryFeatures: no retry policy on this route
    if not isinstance(num, int) or num < 0:
        raise ChainFormatError(f"{where}.NumRetries: a count, not {num!r}")
    if any(not isinstance(c, int) or isinstance(c, bool) for c in codes):
        raise ChainFormatError(f"{where}.RetryOnStatusCodes: status codes, not {codes!r}")
    for condition in on:
        if condition not in RETRY_CONDITIONS | INERT_RETRY_CONDITIONS:
            r.unsupported.append(f"{where}.RetryOn {condition!r}")
    conditions = {c for c in on if c in RETRY_CONDITIONS}
    if connect:
        conditions.add("connect-failure")
    if codes:
        conditions.add("retriable-status-codes")
    return ChainRetry(
        num_retries=num or 1,  # Envoy's default when a retry policy sets none
        conditions=frozenset(conditions),
        status_codes=frozenset(codes),
    )


def _headers(r: Reader, value: Any, where: str) -> HeaderModifiers:
    raw = r.obj(value, where)
    if not raw:
        return NO_HEADER_CHANGES
    r.keys(raw, where, ("Add", "Set", "Remove"))
    add = {str(k): r.text(v, f"{where}.Add") for k, v in r.obj(raw.get("Add"), where).items()}
    set_ = {str(k): r.text(v, f"{where}.Set") for k, v in r.obj(raw.get("Set"), where).items()}
    remove = tuple(r.text(x, f"{where}.Remove") for x in r.seq(raw.get("Remove"), where))
    return HeaderModifiers(add, set_, remove) if (add or set_ or remove) else NO_HEADER_CHANGES


def read_split(r: Reader, raw: Mapping[str, Any], where: str) -> Split:
    r.keys(raw, where, ("Definition", "Weight", "NextNode"))
    definition = r.obj(raw.get("Definition"), f"{where}.Definition")
    r.keys(
        definition,
        f"{where}.Definition",
        _SPLIT_KEYS,
    )
    r.default_tenancy(definition, f"{where}.Definition")
    weight = raw.get("Weight") or 0
    if not isinstance(weight, int | float) or isinstance(weight, bool) or weight < 0:
        raise ChainFormatError(f"{where}.Weight: a percentage, not {weight!r}")
    next_node = r.text(raw.get("NextNode"), f"{where}.NextNode")
    if not next_node:
        raise ChainFormatError(f"{where}: no NextNode")
    return Split(
        weight=float(weight),
        next_node=next_node,
        service=r.text(definition.get("Service"), f"{where}.Service"),
        subset=r.text(definition.get("ServiceSubset"), f"{where}.ServiceSubset"),
        request_headers=_headers(r, definition.get("RequestHeaders"), f"{where}.RequestHeaders"),
        response_headers=_headers(r, definition.get("ResponseHeaders"), f"{where}.ResponseHeaders"),
    )
