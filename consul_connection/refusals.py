"""What Consul means when it says no: ACL denials and filtered answers, in words.

Consul answers a request its token may not make with ``403`` and a body such as
``Permission denied: token with AccessorID '…' lacks permission 'service:write' on
"order-service"``, and an answer it trimmed to what the token may see with the header
``X-Consul-Results-Filtered-By-ACLs: true``. These helpers turn both into sentences
that name the permission and the call, and never the token (the accessor id, which is
not a secret, is kept: it tells the operator which token to fix).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs"

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

    def __str__(self) -> str:
        if self.permission is None:
            return f"Consul denied {self.call}: the ACL token lacks a permission for it"
        on = f" on {self.resource!r}" if self.resource else ""
        who = f" (token accessor {self.accessor})" if self.accessor else ""
        return f"Consul denied {self.call}: the ACL token lacks {self.permission!r}{on}{who}"


def acl_denial(body: str, call: str) -> AclDenial:
    """Read Consul's 403 body for ``call`` (e.g. "register order-service-1")."""
    match = _LACKS.search(body or "")
    if match is None:
        return AclDenial(call)
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
