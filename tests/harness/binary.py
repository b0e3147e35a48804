"""The project's Consul binary: found, or built, by consul/ensure-consul; failing loudly.

The library's lookup (``consul_discovery.testing.binary``) only finds a binary; the
project's tests may also build the pinned release (``make consul``). ``tests/conftest.py``
resolves it once per session and exports it as ``CONSUL_BIN``, so every agent the
library's fixtures start runs this binary.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

from consul_discovery.testing.binary import ConsulBinaryMissing

REPO_ROOT = Path(__file__).resolve().parents[2]
ENSURE_CONSUL = REPO_ROOT / "consul" / "ensure-consul"
CONFIG_DIR = REPO_ROOT / "consul" / "config"

__all__ = ["CONFIG_DIR", "ENSURE_CONSUL", "REPO_ROOT", "ConsulBinaryMissing", "consul_binary"]


@functools.cache
def consul_binary() -> str:
    """Absolute path of a runnable Consul agent (``$CONSUL_BIN``, PATH, or the pinned build)."""
    env_bin = os.environ.get("CONSUL_BIN")
    if env_bin and os.access(env_bin, os.X_OK):
        return env_bin
    try:
        out = subprocess.run(
            [str(ENSURE_CONSUL)], check=True, capture_output=True, text=True, timeout=1800
        )
    except (OSError, subprocess.SubprocessError) as exc:
        stderr = getattr(exc, "stderr", "") or ""
        raise ConsulBinaryMissing(
            "The tests need a real Consul agent and none could be provided.\n"
            f"{ENSURE_CONSUL} failed: {exc}\n{stderr}\n"
            "Fix: run `make consul` (needs Go and access to the Go module proxy), or set "
            "CONSUL_BIN to a consul binary >= 1.17."
        ) from exc
    return out.stdout.strip().splitlines()[-1]
