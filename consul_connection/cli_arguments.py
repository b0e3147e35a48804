"""The argument types every command line of the library shares (argparse ``type=``).

One owner for what a number on a command line may be: ``consul-discovery``,
``consul-config`` and ``python -m consul_discovery.mesh.uvicorn`` refuse the same bad
values with the same words, before anything reaches Consul. Each raises
``argparse.ArgumentTypeError``, which argparse prints as one usage error naming the option
(exit status 2).
"""

from __future__ import annotations

import argparse
import math


def positive_seconds(text: str) -> float:
    """A number of seconds > 0 and finite (``--timeout 0``, ``-1``, ``nan``, ``inf``: refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, not {text}")
    return value


def positive_count(text: str) -> int:
    """A whole number >= 1 (``--count``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {text}")
    return value


def modify_index(text: str) -> int:
    """A Consul ModifyIndex, a whole number >= 0 (``--cas``; 0: only if the key is new)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a ModifyIndex (whole number)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a ModifyIndex >= 0, not {text}")
    return value


def port_number(text: str) -> int:
    """A TCP port, 0-65535 (0: one the system picks)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port 0-65535, not {text}")
    return value
