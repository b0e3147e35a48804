"""The mesh's own environment settings, read and checked in one place.

- ``MESH_IO_TIMEOUT``: seconds a blocking mesh server connection may make no progress
  (handshake, each read or write; default 10): ``tls._TimedServerSocket``;
- ``MESH_READY_TIMEOUT``: seconds a server waits for its identity and intentions before
  it refuses to start (default 15): the gunicorn workers, and the default of
  ``python -m consul_discovery.mesh.uvicorn --ready-timeout``.

``check_env`` reads both, so that the server adapters refuse a bad value before they
bind (one line naming the setting) instead of failing later, elsewhere, less clearly.
``server_env`` adds what the adapters need of the registry's ``SERVICE_CONNECT``: they
serve mTLS only, so unset means ``native`` and another value is refused (a plain
registration's HTTP check could never pass, and no Connect caller would find it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

from consul_discovery.connection.durations import duration_seconds
from consul_discovery.mesh.errors import MeshConfigError

#: Seconds a blocking server connection may make no progress (``MESH_IO_TIMEOUT``).
DEFAULT_IO_TIMEOUT = 10.0

#: Seconds a server waits for its identity and intentions (``MESH_READY_TIMEOUT``).
DEFAULT_READY_TIMEOUT = 15.0


def seconds(setting: str, raw: str, default: float) -> float:
    """``raw`` as a duration of more than 0 seconds ("10s", "500ms", "2.5"; blank:
    ``default``), or MeshConfigError naming ``setting``."""
    if not raw.strip():
        return default
    try:
        return duration_seconds(raw, positive=True)
    except ValueError as exc:
        raise MeshConfigError(setting, str(exc)) from None


def io_timeout(environ: Mapping[str, str] = os.environ) -> float:
    """``MESH_IO_TIMEOUT`` (seconds, > 0; default ``DEFAULT_IO_TIMEOUT``), or MeshConfigError."""
    return seconds("MESH_IO_TIMEOUT", environ.get("MESH_IO_TIMEOUT", ""), DEFAULT_IO_TIMEOUT)


def ready_timeout(environ: Mapping[str, str] = os.environ) -> float:
    """``MESH_READY_TIMEOUT`` (seconds, > 0; default ``DEFAULT_READY_TIMEOUT``), or
    MeshConfigError."""
    raw = environ.get("MESH_READY_TIMEOUT", "")
    return seconds("MESH_READY_TIMEOUT", raw, DEFAULT_READY_TIMEOUT)


def check_env(environ: Mapping[str, str] = os.environ) -> None:
    """Raise MeshConfigError for the first mesh setting that cannot work."""
    io_timeout(environ)
    ready_timeout(environ)


def server_env(environ: MutableMapping[str, str] = os.environ) -> None:
    """``check_env``, then ``SERVICE_CONNECT`` for a mesh server: set to ``native`` when
    unset, MeshConfigError for any other value."""
    check_env(environ)
    raw = environ.get("SERVICE_CONNECT", "")
    if not raw.strip():
        environ["SERVICE_CONNECT"] = "native"
    elif raw.strip().lower() != "native":
        raise MeshConfigError(
            "SERVICE_CONNECT",
            f"{raw!r} under a mesh server, which serves mTLS only: set it to native (or "
            "leave it unset), or serve without the mesh",
        )
