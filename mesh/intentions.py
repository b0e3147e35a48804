"""Intentions as values: the ones that match a destination, in Consul's precedence order.

``/v1/connect/intentions/match?by=destination`` returns every intention whose
destination is the service or ``*``, sorted by precedence (Consul's
``IntentionPrecedenceSorter``: exact source and destination 9, ``*`` source 8, ``*``
destination 6, both ``*`` 5 in Community Edition; ties in a fixed order). For a caller,
the first intention whose source matches (exact name, or ``*``; namespace, partition
and peer as in ``connect.AuthorizeIntentionTarget``) decides:

- an L4 intention (``Action`` allow/deny) decides alone;
- an L7 intention (``Permissions``) is decided per request (``consul_discovery.mesh.l7``):
  the first permission that matches; if none does, the default policy;
- no intention: the default policy (``default_intention_policy`` of the agent, else the
  ACL default policy, else allow when ACLs are off).

This is the rule Consul's authorize endpoint applies (``agent_endpoint.go``,
``AgentConnectAuthorize``) and the one its Envoy RBAC filters encode
(``agent/xds/rbac.go``: intentions with a more specific matching source exclude later
ones, and permissions that precede exclude later permissions).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from consul_discovery.mesh.errors import MeshQueryError
from consul_discovery.mesh.spiffe import DEFAULT_NAMESPACE, DEFAULT_PARTITION, SpiffeId

WILDCARD = "*"
ALLOW = "allow"
DENY = "deny"


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """One header condition of an L7 permission (exactly one kind is set)."""

    name: str
    present: bool = False
    exact: str = ""
    prefix: str = ""
    suffix: str = ""
    regex: str = ""
    invert: bool = False
    compiled: re.Pattern[str] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class HttpMatch:
    """The HTTP part of an L7 permission: path (one kind), methods, headers (all must match)."""

    path_exact: str = ""
    path_prefix: str = ""
    path_regex: str = ""
    methods: tuple[str, ...] = ()
    headers: tuple[HeaderMatch, ...] = ()
    compiled_path: re.Pattern[str] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Permission:
    """One L7 permission: an action for the requests its HTTP match selects."""

    action: str
    http: HttpMatch | None = None  # None matches every request


@dataclass(frozen=True, slots=True)
class Intention:
    """One intention towards the destination, as the match endpoint returns it."""

    source_name: str
    source_ns: str = DEFAULT_NAMESPACE
    source_partition: str = DEFAULT_PARTITION
    source_peer: str = ""
    action: str | None = None  # L4 intentions; None for L7 ones
    permissions: tuple[Permission, ...] = ()
    precedence: int = 0

    @property
    def is_l7(self) -> bool:
        """True when the intention decides per request (it has permissions)."""
        return bool(self.permissions)

    def matches_source(self, source: SpiffeId) -> bool:
        """Consul's source match: exact or ``*`` name and namespace, same partition, no peer."""
        if self.source_peer:
            return False  # peered sources carry another trust domain; not ours to match
        if self.source_partition != (source.partition or DEFAULT_PARTITION):
            return False
        if self.source_ns not in (WILDCARD, source.namespace):
            return False
        return self.source_name in (WILDCARD, source.service)

    def describe(self) -> str:
        """``ns/name => destination`` as Consul writes it in its reasons."""
        kind = f"Permissions: {len(self.permissions)}" if self.is_l7 else f"Action: {self.action}"
        return f"{self.source_ns}/{self.source_name} (Precedence: {self.precedence}, {kind})"


@dataclass(frozen=True, slots=True)
class IntentionSet:
    """Every intention that may apply to ``destination``, highest precedence first."""

    destination: str
    intentions: tuple[Intention, ...] = ()
    acl_default_policy: str | None = None  # X-Consul-Default-Acl-Policy of the answer
    index: int = 0

    @classmethod
    def from_json(
        cls,
        destination: str,
        entries: Iterable[Mapping[str, Any]],
        *,
        acl_default_policy: str | None = None,
        index: int = 0,
    ) -> IntentionSet:
        """Build from the match endpoint's list for ``destination`` (kept in its order)."""
        try:
            parsed = [_intention(entry) for entry in entries]
        except (KeyError, TypeError, ValueError, re.error) as exc:
            raise MeshQueryError(f"an intention for {destination!r} is malformed: {exc}") from None
        # Consul sorts already; a stable sort on precedence keeps its tie order.
        parsed.sort(key=lambda ixn: -ixn.precedence)
        return cls(destination, tuple(parsed), acl_default_policy, index)

    def match(self, source: SpiffeId) -> Intention | None:
        """The intention that decides for ``source`` (None: the default policy does)."""
        for intention in self.intentions:
            if intention.matches_source(source):
                return intention
        return None

    @property
    def has_l7(self) -> bool:
        """True when any intention decides per request."""
        return any(ixn.is_l7 for ixn in self.intentions)


def _intention(entry: Mapping[str, Any]) -> Intention:
    permissions = tuple(_permission(p) for p in entry.get("Permissions") or ())
    action = None if permissions else str(entry.get("Action") or "").lower()
    if action is not None and action not in (ALLOW, DENY):
        raise ValueError(f"action {entry.get('Action')!r} is neither allow nor deny")
    return Intention(
        source_name=str(entry["SourceName"]),
        source_ns=str(entry.get("SourceNS") or DEFAULT_NAMESPACE),
        source_partition=str(entry.get("SourcePartition") or DEFAULT_PARTITION),
        source_peer=str(entry.get("SourcePeer") or ""),
        action=action,
        permissions=permissions,
        precedence=int(entry.get("Precedence") or 0),
    )


def _permission(raw: Mapping[str, Any]) -> Permission:
    action = str(raw.get("Action") or "").lower()
    if action not in (ALLOW, DENY):
        raise ValueError(f"permission action {raw.get('Action')!r} is neither allow nor deny")
    http = raw.get("HTTP")
    if not http:
        return Permission(action)
    regex = str(http.get("PathRegex") or "")
    return Permission(
        action,
        HttpMatch(
            path_exact=str(http.get("PathExact") or ""),
            path_prefix=str(http.get("PathPrefix") or ""),
            path_regex=regex,
            methods=tuple(str(m) for m in http.get("Methods") or ()),
            headers=tuple(_header(h) for h in http.get("Header") or ()),
            compiled_path=re.compile(regex) if regex else None,
        ),
    )


def _header(raw: Mapping[str, Any]) -> HeaderMatch:
    regex = str(raw.get("Regex") or "")
    return HeaderMatch(
        name=str(raw["Name"]),
        present=bool(raw.get("Present")),
        exact=str(raw.get("Exact") or ""),
        prefix=str(raw.get("Prefix") or ""),
        suffix=str(raw.get("Suffix") or ""),
        regex=regex,
        invert=bool(raw.get("Invert")),
        compiled=re.compile(regex) if regex else None,
    )
