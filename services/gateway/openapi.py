"""The public operations the gateway relays, documented from the services' own documents.

Each public route (``public_routes``: derived from the services' routes through the
route table) is documented with its service's own OpenAPI operation, under its public
path (``/api/orders/{order_id}``), plus what the gateway adds: a string path parameter
takes only what the gateway's path allowlist lets through (``paths.SEGMENT_SCHEMA``,
within the path length limit),
and 400/502/503 are the gateway's own answers.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from services.common.openapi import ERROR_SCHEMA, openapi_path
from services.gateway.paths import MAX_PATH_LENGTH, SEGMENT_SCHEMA
from services.gateway.public_routes import public_routes

_ERROR = {"application/json": {"schema": ERROR_SCHEMA}}
#: What the gateway itself may answer on every relayed operation.
GATEWAY_RESPONSES = {
    "400": "Invalid path (dot segments, percent-encoding, empty segments, ...)",
    "502": "Every attempt to reach the service failed",
    "503": "No healthy instance of the service",
}


_PLACEHOLDER = re.compile(r"{\w+}")
#: Digits of the largest path integer (the services' ids stop at 2**63 - 1).
_INT_DIGITS = 19


def _is_string_path(parameter: Mapping[str, Any]) -> bool:
    return parameter.get("in") == "path" and (parameter.get("schema") or {}).get("type") == "string"


def _allowlisted(parameter: Mapping[str, Any], max_length: int) -> dict[str, Any]:
    """A string path parameter narrowed to what the gateway's path allowlist lets through
    (its segment pattern, and its share of the path length limit)."""
    schema = dict(parameter.get("schema") or {})
    allowed = {**SEGMENT_SCHEMA, "maxLength": max_length}
    narrowed = {"allOf": [schema, allowed]} if "pattern" in schema else {**schema, **allowed}
    return {**parameter, "schema": narrowed}


def relayed_operation(
    service: str, method: str, path: str, op: Mapping[str, Any], public: str = ""
) -> dict:
    """``service``'s operation ``op`` (at ``path``) as the gateway documents it at ``public``."""
    relayed = copy.deepcopy(dict(op))
    relayed["operationId"] = f"{service}.{op.get('operationId', method)}"
    relayed["description"] = f"Relayed to {service} {method.upper()} {path}."
    parameters = relayed.get("parameters") or []
    strings = sum(1 for p in parameters if _is_string_path(p))
    if strings:
        fixed = len(_PLACEHOLDER.sub("", public))
        others = len(_PLACEHOLDER.findall(public)) - strings
        budget = (MAX_PATH_LENGTH - fixed - others * _INT_DIGITS) // strings
        relayed["parameters"] = [
            _allowlisted(p, budget) if _is_string_path(p) else p for p in parameters
        ]
    responses = relayed.setdefault("responses", {})
    for status, text in GATEWAY_RESPONSES.items():
        responses.setdefault(status, {"description": text, "content": _ERROR})
    return relayed


def public_paths(names: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """OpenAPI path items of every public operation, keyed by public path."""
    paths: dict[str, dict[str, Any]] = {}
    for route in public_routes():
        public, _ = openapi_path(route.rule)
        upstream, _ = openapi_path(route.upstream.rule)
        service = names[route.service_key]
        for method in sorted(route.methods):
            op = route.upstream.operations[method]
            item = paths.setdefault(public, {})
            item[method.lower()] = relayed_operation(service, method, upstream, op, public)
    return paths
