"""``MeshService``: one service's place in the mesh, started and stopped as one.

It bundles the service's ``ServiceIdentity`` (leaf and roots, TLS contexts: the process's
shared one, ``shared.lease_identity``, so the service's discovery client and, under
gunicorn, the master's self-probe use the same) and the ``Guard`` over its
``Authorizer`` (intentions), read from the same settings the registry
uses: ``SERVICE_NAME`` (the identity), ``SERVICE_HEALTH_PATH`` (the path the service's
own identity may probe, default ``/health``) and Consul's ``CONSUL_*`` variables (the
token needs ``service:write`` on the service, which also gives ``intention:read`` on
it). The server adapters (``gunicorn_conf``, ``uvicorn``) each run one per process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from consul_discovery.connection import ConsulConfigError, ConsulConnection
from consul_discovery.connection.blocking import WatchTiming
from consul_discovery.mesh.authorizer import Authorizer
from consul_discovery.mesh.errors import MeshConfigError
from consul_discovery.mesh.guard import Guard
from consul_discovery.mesh.service_identity import ServiceIdentity
from consul_discovery.mesh.settings import check_env
from consul_discovery.mesh.shared import IdentityLease, lease_identity


class MeshService:
    """A service's identity and the guard in front of it (see the module docstring)."""

    def __init__(
        self,
        service: str,
        connection: ConsulConnection | None = None,
        *,
        health_path: str | None = "/health",
        timing: WatchTiming | None = None,
        key_dir: str | None = None,
    ) -> None:
        connection = connection or ConsulConnection.from_env()
        self.service = service
        self._lease: IdentityLease | None = None  # the shared identity's, when used
        if key_dir is None:
            self._lease = lease_identity(service, connection, timing=timing)
            self.identity: ServiceIdentity = self._lease.identity
        else:  # a private key directory: an identity of its own
            self.identity = ServiceIdentity(service, connection, timing=timing, key_dir=key_dir)
        self.authorizer = Authorizer(service, connection, health_path=health_path, timing=timing)
        self.guard = Guard(self.authorizer)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> MeshService:
        """Build from SERVICE_NAME, SERVICE_HEALTH_PATH, MESH_* and CONSUL_*; keywords win.

        A bad setting raises MeshConfigError naming it, before anything starts."""
        env = os.environ if environ is None else environ
        check_env(env)  # e.g. MESH_IO_TIMEOUT, read again by every server context
        service = overrides.pop("service", None) or env.get("SERVICE_NAME", "").strip()
        if not service:
            raise MeshConfigError("SERVICE_NAME", "required (the service's identity in the mesh)")
        health_path = (
            overrides.pop("health_path", None) or env.get("SERVICE_HEALTH_PATH") or "/health"
        )
        connection = overrides.pop("connection", None)
        if connection is None:
            try:
                connection = ConsulConnection.from_env(env)
            except ConsulConfigError as exc:
                raise MeshConfigError(exc.setting, exc.problem) from exc
        return cls(service, connection, health_path=health_path, **overrides)

    def start(self) -> MeshService:
        """Start the identity and intentions watches (returns at once)."""
        self.identity.start()
        self.authorizer.start()
        return self

    def wait_ready(self, timeout: float = 15.0) -> MeshService:
        """Block until the identity and the intentions are in force; raise why not."""
        self.identity.wait_ready(timeout)
        self.authorizer.wait_ready(timeout)
        return self

    def close(self) -> None:
        """Stop the intentions watch and give the identity back (or close it)."""
        self.authorizer.close()
        if self._lease is not None:
            self._lease.release()
        else:
            self.identity.close()

    def __enter__(self) -> MeshService:
        return self.start().wait_ready()

    def __exit__(self, *_exc: object) -> None:
        self.close()
