"""A request's hash key for ``ring_hash``/``maglev``, from a resolver's ``HashPolicies``.

Envoy's rule: each policy that finds its value in the request (a header, a cookie, a
query parameter, the source IP) folds that value's hash into the key
(``hashing.combine``); a ``terminal`` policy that found one ends the evaluation; no
value at all means no key (the pick is random). Computed once per call.
"""

from __future__ import annotations

from consul_discovery.client.chain.match import query_params
from consul_discovery.client.chain.model import HashPolicy
from consul_discovery.client.hashing import combine, hash64
from consul_discovery.client.route import RequestView


def request_hash(policies: tuple[HashPolicy, ...], request: RequestView) -> int | None:
    """Envoy's hash of a request under ``policies`` (None when no policy yields a value)."""
    result: int | None = None
    for policy in policies:
        value = _policy_value(policy, request)
        if value is not None:
            result = combine(result, hash64(value))
            if policy.terminal:
                break
    return result


def _policy_value(policy: HashPolicy, request: RequestView) -> str | None:
    if policy.source_ip:
        return request.source_ip or None
    if policy.field == "header":
        return request.headers.get(policy.name)
    if policy.field == "cookie":
        return _cookie(request.headers.get("cookie"), policy.name)
    if policy.field == "query_parameter":
        return query_params(request.query).get(policy.name) if request.query else None
    return None


def _cookie(header: str | None, name: str) -> str | None:
    if not header:
        return None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None
