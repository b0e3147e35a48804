"""Prometheus' identity in the mesh: the ``prometheus`` leaf as files Prometheus reads.

Prometheus presents a client certificate from files (``tls_config``: ``cert_file``,
``key_file``, ``ca_file``), and re-reads them when they change. This small supervised
program holds a ``ServiceIdentity`` for the service ``prometheus`` (its agent signs the
leaf and keeps it fresh) and keeps three files equal to the identity in force:

- ``cert.pem``: the leaf certificate (with the chain Consul sends), ``key.pem``: its
  private key, ``ca.pem``: every CA root of the mesh;
- in a 0700 directory, each file 0600, replaced in one rename (never half written);
- rewritten when the agent renews the leaf or the CA rotates; removed, with the
  directory, when the program stops (SIGTERM from supervisord).

    python -m services.cluster.scrape_identity --dir .run/cluster/prometheus-identity

Consul comes from the ``CONSUL_*`` variables; in the secure profile the token is the
``prometheus`` service identity's (``service:write`` on ``prometheus``: the leaf).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from consul_discovery.mesh.errors import MeshError
from consul_discovery.mesh.identity import CaRoots, Leaf
from consul_discovery.mesh.keyfile import write_private
from consul_discovery.mesh.service_identity import ServiceIdentity

log = logging.getLogger("services.cluster.scrape_identity")

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
CA_FILE = "ca.pem"


class IdentityFiles:
    """The identity's three files in one private directory (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.writes = 0  # how many pairs were written; the identity's loop thread only

    @property
    def cert_file(self) -> Path:
        """The leaf certificate (PEM, with Consul's chain)."""
        return self.directory / CERT_FILE

    @property
    def key_file(self) -> Path:
        """The leaf's private key (PEM, 0600)."""
        return self.directory / KEY_FILE

    @property
    def ca_file(self) -> Path:
        """The mesh's CA roots (PEM bundle)."""
        return self.directory / CA_FILE

    def prepare(self) -> None:
        """Create the directory 0700 (tightened if it exists)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory.chmod(0o700)

    def write(self, leaf: Leaf, roots: CaRoots) -> None:
        """Replace the three files with ``leaf`` and ``roots`` (key first: a reader sees
        the new key with the old certificate for a moment at most, never a partial file)."""
        self._replace(self.key_file, leaf.private_key.reveal())
        self._replace(self.cert_file, leaf.cert_pem)
        self._replace(self.ca_file, roots.bundle_pem)
        self.writes += 1
        log.info("identity files written: leaf %s valid until %s", leaf.serial, leaf.valid_before)

    def _replace(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        write_private(tmp, text)
        tmp.replace(path)

    def remove(self) -> None:
        """Remove the files (and leftovers) and the directory."""
        if not self.directory.is_dir():
            return
        for path in self.directory.iterdir():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with contextlib.suppress(OSError):
            self.directory.rmdir()


def run(service: str, files: IdentityFiles, stop: threading.Event, timeout: float) -> int:
    """Keep ``files`` equal to ``service``'s identity until ``stop``; 3 if it never came."""
    identity = ServiceIdentity(service)
    files.prepare()
    identity.subscribe(files.write)
    identity.start()
    try:
        identity.wait_ready(timeout)
        while not stop.wait(1.0):
            pass
    except MeshError as exc:
        log.error("no mesh identity for %s: %s", service, exc)
        return 3
    finally:
        identity.close()
        files.remove()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m services.cluster.scrape_identity")
    parser.add_argument("--dir", required=True, type=Path, help="the private directory")
    parser.add_argument("--service", default="prometheus", help="the identity's service name")
    parser.add_argument("--ready-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return run(args.service, IdentityFiles(args.dir), stop, args.ready_timeout)


if __name__ == "__main__":
    sys.exit(main())
