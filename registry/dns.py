"""What Consul's DNS interface can carry: service names are checked, tags are not.

Consul serves every service as ``<name>.service.consul`` (and ``<tag>.<name>.service...``),
so a name must be one DNS label (RFC 1123): letters, digits and hyphens, 1-63
characters, no leading or trailing hyphen. Consul itself registers any name and only
logs "Service name will not be discoverable via DNS due to invalid characters"; a
``SERVICE_NAME`` such as ``svc a!`` would then register a name nothing can look up, so
the registry refuses it at startup. The rule is ``consul_discovery.connection.names``',
shared with the config client and the discovery CLI.

Tags are left alone: they are labels as often as DNS names (``version=1.2``,
``traefik.enable=true``), and Consul itself only notes an undiscoverable tag at debug
level. ``undiscoverable_tags`` lists them for a caller that wants to say so.
"""

from __future__ import annotations

from collections.abc import Iterable

from consul_discovery.connection.names import dns_label_problem

__all__ = ["dns_label_problem", "undiscoverable_tags"]


def undiscoverable_tags(tags: Iterable[str]) -> list[str]:
    """The tags no DNS query can name (they still work as catalog and filter labels)."""
    return [tag for tag in tags if dns_label_problem(tag) is not None]
