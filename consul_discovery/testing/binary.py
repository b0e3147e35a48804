"""Find the Consul agent binary tests run, or fail saying how to get one (never a skip).

Order (the same as the consul-discovery repository's ``consul/ensure-consul``, without
its build step):

1. ``$CONSUL_BIN``, which must then be a Consul :data:`MINIMUM_VERSION` or newer;
2. a ``consul`` on ``PATH`` at version :data:`MINIMUM_VERSION` or newer;
3. the pinned build cached by ``consul/ensure-consul`` (``make consul``):
   ``${CONSUL_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/consul-discovery}/consul-<version>/consul``.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

#: The Consul release the project pins and tests against (the repository's consul/VERSION).
PINNED_VERSION = "1.22.3"
#: The oldest Consul a ``consul`` found on PATH may be.
MINIMUM_VERSION = "1.17.0"

_VERSION = re.compile(r"^Consul v(\d+(?:\.\d+)*)", re.MULTILINE)


class ConsulBinaryMissing(RuntimeError):
    """No usable Consul binary was found; the message says how to get one."""


def cached_build(environ: Mapping[str, str] = os.environ) -> Path:
    """Where ``consul/ensure-consul`` caches the pinned build."""
    root = environ.get("CONSUL_CACHE_DIR")
    if not root:
        xdg = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "consul-discovery")
    return Path(root) / f"consul-{PINNED_VERSION}" / "consul"


def binary_version(path: str) -> tuple[int, ...] | None:
    """The version ``path version`` reports, e.g. (1, 22, 3); None if it does not answer."""
    try:
        out = subprocess.run(
            [path, "version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out)
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def find_consul(environ: Mapping[str, str] = os.environ) -> str:
    """The absolute path of a runnable Consul agent, or ConsulBinaryMissing saying why."""
    minimum = tuple(int(part) for part in MINIMUM_VERSION.split("."))
    env_bin = environ.get("CONSUL_BIN")
    if env_bin:
        if not (os.path.isfile(env_bin) and os.access(env_bin, os.X_OK)):
            raise ConsulBinaryMissing(
                f"CONSUL_BIN={env_bin} is not an executable file. Point it at a consul "
                "binary, or unset it to use a consul on PATH."
            )
        version = binary_version(env_bin)
        if version is None or version < minimum:
            said = (
                "does not answer `version` as Consul does"
                if version is None
                else (f"is Consul {'.'.join(map(str, version))}, older than {MINIMUM_VERSION}")
            )
            raise ConsulBinaryMissing(
                f"CONSUL_BIN={env_bin} {said}. Point it at a consul binary "
                f"({MINIMUM_VERSION} or newer), or unset it to use a consul on PATH."
            )
        return os.path.abspath(env_bin)
    on_path = shutil.which("consul", path=environ.get("PATH"))
    ignored = ""
    if on_path:
        version = binary_version(on_path)
        if version is not None and version >= minimum:
            return os.path.abspath(on_path)
        shown = ".".join(map(str, version)) if version else "unknown"
        ignored = f" (ignored {on_path}: version {shown} < {MINIMUM_VERSION})"
    cached = cached_build(environ)
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    raise ConsulBinaryMissing(
        "These tests run a real Consul agent, and none was found"
        f"{ignored}. Get one of:\n"
        f"  - CONSUL_BIN=/path/to/consul (Consul {MINIMUM_VERSION} or newer);\n"
        f"  - a consul {MINIMUM_VERSION}+ on PATH (HashiCorp's releases or your OS "
        "packages);\n"
        f"  - in a consul-discovery checkout, `make consul` builds Consul {PINNED_VERSION} "
        f"into {cached}."
    )


@functools.cache
def consul_binary() -> str:
    """:func:`find_consul` for this process's environment, looked up once."""
    return find_consul()
