"""What a public path may look like before the route table sees it: an allowlist.

Every public path the gateway serves is a handful of plain segments
(``/api/users/register``, ``/api/orders/42``), so instead of normalising tricks away
(and trusting every later layer to agree on the result) a path that is not plainly
such segments is refused with 400:

* the raw request target (gunicorn's ``RAW_URI``, werkzeug's ``REQUEST_URI``) must have
  no percent-encoding at all: ``%2e%2e``, ``%2f``, ``%5c``, ``%00``, overlong UTF-8
  (``%c0%ae``) and double encoding (``%252e``) all stop here, before any decoder runs;
* the decoded path must be ``/`` followed by segments of ASCII letters, digits and
  ``_ - ~ .``, none empty (``//``), none made of dots only (``.``, ``..``), none ending
  in a dot (``users.``); so no backslash, ``;params``, NUL, control or non-ASCII
  character (fullwidth dots) gets through either.

urllib3 removes dot segments from the URLs it sends, so a ``..`` that reached the
upstream call would be resolved there, past the route table: that is what this stops.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from services.common.errors import ApiError

#: One plain segment: letters, digits and ``_-~.``, not starting or ending with a dot.
_SEGMENT = re.compile(r"[A-Za-z0-9_~-](?:[A-Za-z0-9_.~-]*[A-Za-z0-9_~-])?")
MAX_PATH_LENGTH = 1024
#: The JSON Schema of one path segment (what the OpenAPI document promises is accepted).
SEGMENT_SCHEMA = {
    "type": "string",
    "pattern": f"^{_SEGMENT.pattern}$",
    "maxLength": MAX_PATH_LENGTH - len("/api/"),
}


def raw_path(environ: Mapping[str, Any]) -> str | None:
    """The request target's path as the client sent it (None when the server keeps none)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not isinstance(raw, str) or not raw:
        return None
    if "://" in raw.split("?", 1)[0]:  # an absolute-form target: keep its path part
        raw = "/" + raw.split("://", 1)[1].partition("/")[2]
    return raw.split("?", 1)[0]


def problem(path: str, raw: str | None) -> str | None:
    """Why ``path`` (decoded) or ``raw`` (as sent) is not a plain public path, or None."""
    if raw is not None and "%" in raw:
        return "percent-encoding is not allowed in the path"
    if len(path) > MAX_PATH_LENGTH:
        return f"the path is longer than {MAX_PATH_LENGTH} characters"
    if not path.startswith("/"):
        return "the path must start with '/'"
    for segment in path[1:].split("/"):
        if not segment:
            return "empty path segments ('//' or a trailing '/') are not allowed"
        if not _SEGMENT.fullmatch(segment):
            return "path segments may hold only letters, digits and '_-~.' (no dot segments)"
    return None


def check_public_path(path: str, environ: Mapping[str, Any]) -> None:
    """Raise a 400 ApiError (``invalid_path``) unless ``path`` is a plain public path."""
    reason = problem(path, raw_path(environ))
    if reason is not None:
        raise ApiError(400, "invalid_path", f"invalid request path: {reason}")
