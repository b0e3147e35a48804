"""The argument types every command line of the library shares (argparse ``type=``).

One owner for what a number on a command line may be: ``consul-discovery``,
``consul-config`` and ``python -m consul_discovery.mesh.uvicorn`` refuse the same bad
values with the same words, before anything reaches Consul. Each raises
``argparse.ArgumentTypeError``, which argparse prints as one usage error naming the option
(exit status 2).
"""

from __future__ import annotations

import argparse

from consul_discovery.connection.durations import duration_seconds
from consul_discovery.connection.servers import parse_servers


def positive_seconds(text: str) -> float:
    """A duration of more than 0 seconds: "5", "2.5", "500ms", "1m" (``--timeout 0``,
    ``-1``, ``nan``, ``inf``, ``soon``: refused, in the words every setting uses)."""
    try:
        return duration_seconds(text, positive=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def service_name_given(text: str) -> str:
    """A service NAME to look up in Consul: not empty (``resolve ''`` ended in a traceback)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"a service name, not {text!r}")
    return text


def _whole(text: str, what: str, low: int, high: int | None, rule: str) -> int:
    """``text`` as a whole number in [low, high] (no high: unbounded), else argparse's
    error: "'x' is not <what>" or "must be <rule>, not x"."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"must be {rule}, not {text}")
    return value


def positive_count(text: str) -> int:
    """A whole number >= 1 (``--count``)."""
    return _whole(text, "a whole number", 1, None, "1 or more")


def modify_index(text: str) -> int:
    """A Consul ModifyIndex, a whole number >= 0 (``--cas``; 0: only if the key is new)."""
    return _whole(text, "a ModifyIndex (whole number)", 0, None, "a ModifyIndex >= 0")


def port_number(text: str) -> int:
    """A TCP port, 0-65535 (0: one the system picks)."""
    return _whole(text, "a port number", 0, 65535, "a port 0-65535")


def consul_addresses(text: str) -> str:
    """``--consul``: an address, or a list of servers, spelled as CONSUL_HTTP_ADDR is
    (``servers.parse_servers``); returned as given, for the connection to read."""
    try:
        parse_servers(text, setting="")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text
