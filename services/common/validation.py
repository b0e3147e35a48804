"""Request-body validation: a few declarative field rules, checked and rendered as JSON Schema.

A ``Schema`` is a tuple of ``Field`` values. ``json_body(schema)`` reads the request as
JSON (415 unless the content type is JSON, 400 if it does not parse or is not an object,
413 when it is larger than ``MAX_CONTENT_LENGTH``) and checks each field, answering 422
with the offending field named; ``known_query`` refuses unknown query parameters the
same way. The same schema renders as the OpenAPI request schema,
so documentation and validation cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from flask import request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, UnsupportedMediaType

from services.common.errors import ApiError

_TYPE_NAMES = {str: "string", int: "integer", bool: "boolean", list: "array", dict: "object"}


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a JSON object: its type and limits.

    ``kind`` is str, int, bool, list or dict. Strings use ``min_length``/``max_length``/
    ``pattern``; integers ``minimum``/``maximum``; lists ``min_length``/``max_length``
    for their item count and ``items`` (a Schema) for object items.
    """

    name: str
    kind: type
    required: bool = True
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    minimum: int | None = None
    maximum: int | None = None
    items: Schema | None = None
    description: str = ""


Schema = tuple[Field, ...]


def _kind_matches(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _invalid(field: str, message: str, code: str = "invalid_field") -> ApiError:
    return ApiError(422, code, message, field=field)


def _check_field(spec: Field, value: Any, path: str) -> Any:
    if not _kind_matches(value, spec.kind):
        expected = _TYPE_NAMES[spec.kind]
        raise _invalid(path, f"{path!r} must be of type {expected}", "wrong_type")
    if spec.kind in (str, list):
        size = len(value)
        unit = "characters" if spec.kind is str else "items"
        if spec.min_length is not None and size < spec.min_length:
            raise _invalid(path, f"{path!r} must have at least {spec.min_length} {unit}")
        if spec.max_length is not None and size > spec.max_length:
            raise _invalid(path, f"{path!r} must have at most {spec.max_length} {unit}")
    if spec.kind is str and spec.pattern is not None and not re.fullmatch(spec.pattern, value):
        raise _invalid(path, f"{path!r} must match {spec.pattern}")
    if spec.kind is int:
        if spec.minimum is not None and value < spec.minimum:
            raise _invalid(path, f"{path!r} must be at least {spec.minimum}")
        if spec.maximum is not None and value > spec.maximum:
            raise _invalid(path, f"{path!r} must be at most {spec.maximum}")
    if spec.kind is list and spec.items is not None:
        return [validate_object(spec.items, item, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


def validate_object(schema: Schema, data: Any, path: str = "") -> dict[str, Any]:
    """Check ``data`` against ``schema``; return only the known fields, or raise ApiError."""
    where = path or "body"
    if not isinstance(data, dict):
        raise _invalid(where, f"{where!r} must be a JSON object", "wrong_type")
    known = {spec.name for spec in schema}
    unknown = sorted(set(data) - known)
    if unknown:
        name = f"{path}.{unknown[0]}" if path else unknown[0]
        raise _invalid(name, f"unknown field {name!r}", "unknown_field")
    result: dict[str, Any] = {}
    for spec in schema:
        name = f"{path}.{spec.name}" if path else spec.name
        if spec.name not in data or data[spec.name] is None:
            if spec.required:
                raise _invalid(name, f"missing required field {name!r}", "missing_field")
            continue
        result[spec.name] = _check_field(spec, data[spec.name], name)
    return result


def read_json_object() -> dict[str, Any]:
    """The request body as a JSON object, or ApiError 400/413/415 saying what is wrong."""
    if not request.is_json:
        raise ApiError(
            415,
            "unsupported_media_type",
            "request body must be JSON (Content-Type: application/json)",
        )
    try:
        data = request.get_json(force=False, silent=False)
    except RequestEntityTooLarge:
        raise
    except (BadRequest, UnsupportedMediaType, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", "request body is not valid JSON") from exc
    except RecursionError as exc:  # the JSON decoder's answer to absurd nesting
        raise ApiError(400, "malformed_json", "request body is nested too deeply") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_json", "request body must be a JSON object")
    return data


def known_query(names: Collection[str]) -> None:
    """Refuse (422 ``unknown_field``) a query parameter not among ``names``, as bodies do."""
    unknown = sorted(set(request.args) - set(names))
    if unknown:
        raise _invalid(unknown[0], f"unknown query parameter {unknown[0]!r}", "unknown_field")


def json_body(schema: Schema) -> dict[str, Any]:
    """Read the request's JSON object and validate it against ``schema``."""
    return validate_object(schema, read_json_object())


def json_schema(schema: Schema) -> dict[str, Any]:
    """Render ``schema`` as a JSON Schema object (for OpenAPI)."""
    properties: dict[str, Any] = {}
    for spec in schema:
        prop: dict[str, Any] = {"type": _TYPE_NAMES[spec.kind]}
        if spec.description:
            prop["description"] = spec.description
        if spec.kind is str:
            if spec.min_length is not None:
                prop["minLength"] = spec.min_length
            if spec.max_length is not None:
                prop["maxLength"] = spec.max_length
            if spec.pattern is not None:
                prop["pattern"] = f"^{spec.pattern}$"
        elif spec.kind is int:
            if spec.minimum is not None:
                prop["minimum"] = spec.minimum
            if spec.maximum is not None:
                prop["maximum"] = spec.maximum
        elif spec.kind is list:
            if spec.min_length is not None:
                prop["minItems"] = spec.min_length
            if spec.max_length is not None:
                prop["maxItems"] = spec.max_length
            if spec.items is not None:
                prop["items"] = json_schema(spec.items)
        properties[spec.name] = prop
    required = [spec.name for spec in schema if spec.required]
    rendered: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        rendered["required"] = required
    return rendered
