"""What a service's name in Consul may be: one DNS label (RFC 1123). One rule for every
part of the library that names a service of its own (the registry's ``SERVICE_NAME``,
the config client's layers and CLI); calling a service takes any name a URL's host can
carry (``callable_name_problem``: another tool may have registered ``my_service``).

Consul serves every service as ``<name>.service.consul``, so a name must be one DNS
label: letters, digits and hyphens, 1-63 characters, no leading or trailing hyphen.
Consul itself registers any name and only logs "Service name will not be discoverable
via DNS due to invalid characters"; a name such as ``svc a!`` names nothing anyone can
look up.
"""

from __future__ import annotations

import re

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

#: The rule, as error messages state it.
SERVICE_NAME_RULE = "one DNS label (RFC 1123: letters, digits, hyphens, at most 63)"


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


def service_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a service's name in Consul (a sentence naming it and the
    rule), or None when it can."""
    problem = dns_label_problem(name)
    if problem is None:
        return None
    return f"{name!r} {problem}; a service's name in Consul must be {SERVICE_NAME_RULE}"


_URL_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def callable_name_problem(name: str) -> str | None:
    """Why a call cannot name the service ``name`` in its URL (``http://NAME/...``), or
    None: letters, digits, ``-``, ``_`` and ``.`` (looser than the DNS rule: Consul
    registers ``my_service`` from other tools, and a call still reaches it)."""
    if _URL_HOST_NAME.fullmatch(name):
        return None
    return (
        f"{name!r} cannot be called by name: a service's name in a URL may have "
        "letters, digits, '-', '_' and '.' only"
    )
