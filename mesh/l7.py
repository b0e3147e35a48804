"""L7 intention permissions evaluated in-process, with Envoy's matching semantics.

Consul's authorize endpoint treats any intention with permissions as a deny (it only
decides L4), so a Connect-native service must evaluate them itself. Consul turns each
permission into an Envoy RBAC permission (``agent/xds/rbac.go``, ``convertPermission``):
all of its parts must match (``and_rules``):

- path: ``PathExact`` equal, ``PathPrefix`` starts-with, ``PathRegex`` a full match
  (Envoy's ``safe_regex``), against the request path without its query string;
- methods: the request method is one of them (a full regex match of ``A|B`` on
  ``:method``, so exact and case-sensitive);
- each header (Envoy's ``HeaderUtility::matchHeaders``): repeated values are joined with
  ``,``; a missing header matches only an inverted ``Present``; otherwise the kind's test
  (``Exact`` equal, ``Prefix``, ``Suffix``, ``Regex`` full match, ``Present``), inverted
  when ``Invert`` is set.

Permissions are tried in order and the first that matches decides (``rbac.go`` makes
each one ``AND NOT`` every earlier one); when none matches, the default policy decides.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from consul_discovery.mesh.intentions import HeaderMatch, HttpMatch, Intention


class HeaderLookup(Protocol):
    """Request headers by lower-case name, repeated values joined with ``,``."""

    def get(self, name: str, /) -> str | None:
        """The (joined) value of header ``name``, or None."""
        ...


@dataclass(frozen=True, slots=True)
class RequestView:
    """What an L7 decision looks at: method, path (no query string) and headers.

    ``headers`` is anything with ``get(lower_name)``: a dict, or a server adapter's lazy
    view of its own headers (only L7 permissions with header conditions read it).
    """

    method: str
    path: str
    headers: HeaderLookup = field(default_factory=dict)

    @classmethod
    def of(cls, method: str, path: str, pairs: Iterable[tuple[str, str]]) -> RequestView:
        """Build from header (name, value) pairs; repeated names joined with ``,``."""
        headers: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        return cls(method, path.split("?", 1)[0], headers)

    def header(self, name: str) -> str | None:
        """A header's (joined) value; ``:method``, ``:path`` and ``:authority`` too."""
        key = name.lower()
        if key == ":method":
            return self.method
        if key == ":path":
            return self.path
        if key == ":authority":
            return self.headers.get("host")
        return self.headers.get(key)


def header_matches(match: HeaderMatch, request: RequestView) -> bool:
    """One header condition, as Envoy evaluates it."""
    value = request.header(match.name)
    if value is None:
        return match.invert and match.present
    if match.exact:
        hit = value == match.exact
    elif match.compiled is not None:
        hit = match.compiled.fullmatch(value) is not None
    elif match.prefix:
        hit = value.startswith(match.prefix)
    elif match.suffix:
        hit = value.endswith(match.suffix)
    elif match.present:
        hit = True
    else:
        return True  # no kind set: Consul skips such a header condition
    return hit != match.invert


def http_matches(match: HttpMatch, request: RequestView) -> bool:
    """Every part of one permission's HTTP match (path, methods, headers)."""
    path = request.path
    if match.path_exact:
        if path != match.path_exact:
            return False
    elif match.path_prefix:
        if not path.startswith(match.path_prefix):
            return False
    elif match.compiled_path is not None and match.compiled_path.fullmatch(path) is None:
        return False
    if match.methods and request.method not in match.methods:
        return False
    return all(header_matches(h, request) for h in match.headers)


def l7_action(intention: Intention, request: RequestView) -> str | None:
    """The action of the first permission that matches ``request``; None if none does."""
    for permission in intention.permissions:
        if permission.http is None or http_matches(permission.http, request):
            return permission.action
    return None
