"""A dev agent that also serves its API over HTTPS, for HTTP/2 and TLS measurements.

Consul's HTTPS API negotiates HTTP/2 by ALPN (``http2.ConfigureServer`` in the agent),
its plain HTTP API speaks only HTTP/1.1. ``TlsDevAgent`` is the harness's dev agent with
an HTTPS port and a throwaway CA and server certificate made by ``consul tls`` in its
work dir (files 0600, removed with the agent). Plain HTTP stays on too, so the harness's
readiness check and catalog fill-up work unchanged; both listeners share one per-client
connection limit (``http_max_conns_per_client``).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.agent import ConsulAgent
from tests.harness.binary import consul_binary
from tests.harness.ports import free_port


def make_certificates(where: Path, consul_bin: str | None = None) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 in ``where``: (ca, cert, key) paths."""
    binary = consul_bin or consul_binary()
    where.mkdir(parents=True, exist_ok=True, mode=0o700)

    def run(*args: str) -> None:
        done = subprocess.run(
            [binary, "tls", *args], cwd=where, capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise RuntimeError(f"consul tls {' '.join(args)} failed: {done.stderr or done.stdout}")

    run("ca", "create", "-days=2")
    ca, ca_key = where / "consul-agent-ca.pem", where / "consul-agent-ca-key.pem"
    run("cert", "create", "-server", "-days=2", "-ca", str(ca), "-key", str(ca_key))
    cert, key = where / "dc1-server-consul-0.pem", where / "dc1-server-consul-0-key.pem"
    for path in where.iterdir():
        os.chmod(path, 0o600)
    return ca, cert, key


@dataclass
class TlsDevAgent(ConsulAgent):
    """A ``ConsulAgent`` in dev mode with an HTTPS API on ``https_port`` as well.

    ``limits`` goes into the agent's ``limits`` block (e.g.
    ``{"http_max_conns_per_client": 200}``, which is also Consul's default).
    Mutable fields are owned by the test thread that created the agent.
    """

    https_port: int = field(default_factory=free_port)
    limits: dict[str, int] = field(default_factory=dict)
    ca_file: Path | None = None  # set by start(), test thread only
    _cert: Path | None = field(default=None, repr=False)  # set by start(), test thread only
    _key: Path | None = field(default=None, repr=False)  # set by start(), test thread only

    @property
    def https_url(self) -> str:
        """``https://127.0.0.1:<https port>`` (the certificate names 127.0.0.1)."""
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def https_address(self) -> str:
        """``https://127.0.0.1:<https port>``, as CONSUL_HTTP_ADDR takes it."""
        return self.https_url

    def command(self) -> list[str]:
        """The dev agent's command line with HTTPS on and the TLS config file."""
        base = [arg for arg in super().command() if arg != "-https-port=-1"]
        return [*base, f"-https-port={self.https_port}", f"-config-file={self._tls_config()}"]

    def start(self, wait_for_leader: bool = True, timeout: float = 30.0) -> TlsDevAgent:
        """Make the certificates (first start only), then start as a dev agent."""
        if self.ca_file is None:
            self.ca_file, self._cert, self._key = make_certificates(self.workdir / "tls")
        super().start(wait_for_leader=wait_for_leader, timeout=timeout)
        return self

    def _tls_config(self) -> Path:
        config = {
            "tls": {
                "defaults": {
                    "ca_file": str(self.ca_file),
                    "cert_file": str(self._cert),
                    "key_file": str(self._key),
                },
                "https": {"verify_incoming": False},
            },
            "limits": self.limits,
        }
        path = self.workdir / "tls.json"
        path.write_text(json.dumps(config))
        os.chmod(path, 0o600)
        return path
