"""What Consul's DNS interface can carry: service names are checked, tags are not.

Consul serves every service as ``<name>.service.consul`` (and ``<tag>.<name>.service...``),
so a name must be one DNS label (RFC 1123): letters, digits and hyphens, 1-63
characters, no leading or trailing hyphen. Consul itself registers any name and only
logs "Service name will not be discoverable via DNS due to invalid characters"; a
``SERVICE_NAME`` such as ``svc a!`` would then register a name nothing can look up, so
the registry refuses it at startup.

Tags are left alone: they are labels as often as DNS names (``version=1.2``,
``traefik.enable=true``), and Consul itself only notes an undiscoverable tag at debug
level. ``undiscoverable_tags`` lists them for a caller that wants to say so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def dns_label_problem(text: str) -> str | None:
    """Why ``text`` is not one RFC 1123 DNS label, or None when it is one."""
    if not text:
        return "is empty"
    if len(text) > 63:
        return f"is {len(text)} characters long; DNS carries at most 63"
    bad = sorted({c for c in text if not (c.isascii() and (c.isalnum() or c == "-"))})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return f"has {shown}: DNS carries only letters, digits and hyphens"
    if text.startswith("-") or text.endswith("-"):
        return "starts or ends with a hyphen, which DNS does not allow"
    assert _LABEL.fullmatch(text)
    return None


def undiscoverable_tags(tags: Iterable[str]) -> list[str]:
    """The tags no DNS query can name (they still work as catalog and filter labels)."""
    return [tag for tag in tags if dns_label_problem(tag) is not None]
