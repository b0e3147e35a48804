"""The cluster's Prometheus: its config, discovering scrape targets from Consul.

Prometheus finds every instance through ``consul_sd_configs`` against the cluster's
Consul, keeps the ones whose registration says they serve metrics (meta
``metrics_path``, which every instance sets: ``supervisor_conf.instance_env``), scrapes
that path, and relabels the Consul service name, instance id, tags and version into the
``service``, ``instance_id``, ``tags`` and ``version`` labels. Instances that come and
go are targets that come and go, with nothing to edit. A few recording rules give the
per-service request rate, error ratio and p99 latency.

The Consul connection takes an optional token file, scheme and CA file, for a cluster
with ACLs and TLS (the token is referenced by file, never written into the config).
Configs are JSON, which is YAML, so no YAML library is needed.

With the mesh on (``MESH=1``) the mesh instances serve mTLS only, to callers the
intentions allow: a second job scrapes them over https presenting the ``prometheus``
identity's leaf (``MeshScrape``: files kept by ``services.cluster.scrape_identity``).

Debian's build (bookworm's 2.42) has Consul SD compiled out. For such a binary the
targets come from a file_sd file that ``services.cluster.targets`` keeps equal to the
Consul catalog, with the very ``__meta_consul_*`` labels, so the relabelling is the
same; ``supports_consul_sd`` tells which one a binary needs.
"""

from __future__ import annotations

import json
import mmap
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The Debian package providing the binary, named in the error when it is missing.
INSTALL_HINT = "run `make setup` (or `apt-get install prometheus`)"
METRICS_PATH_META = "metrics_path"


class PrometheusMissingError(RuntimeError):
    """The prometheus binary is not installed; the message says how to install it."""


def prometheus_binary(name: str = "prometheus") -> str:
    """The prometheus binary's path, or PrometheusMissingError naming how to install it."""
    found = shutil.which(name)
    if found is None:
        raise PrometheusMissingError(f"{name} not found on PATH: {INSTALL_HINT}")
    return found


def supports_consul_sd(binary: str) -> bool:
    """Whether ``binary`` was built with Consul service discovery (Debian's is not)."""
    with open(binary, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return data.find(b"consul_sd_configs") >= 0


@dataclass(frozen=True, slots=True)
class ConsulAccess:
    """How Prometheus reaches Consul: address, scheme, and optional token file and CA."""

    address: str
    scheme: str = "http"
    token_file: Path | None = None
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        if self.scheme not in ("http", "https"):
            raise ValueError(f"Consul scheme must be http or https; got {self.scheme!r}")

    def sd_config(self, refresh_interval: str) -> dict[str, Any]:
        """One ``consul_sd_configs`` entry."""
        config: dict[str, Any] = {
            "server": self.address,
            "scheme": self.scheme,
            "refresh_interval": refresh_interval,
        }
        if self.token_file is not None:
            config["authorization"] = {"credentials_file": str(self.token_file)}
        if self.ca_file is not None:
            config["tls_config"] = {"ca_file": str(self.ca_file)}
        return config


@dataclass(frozen=True, slots=True)
class MeshScrape:
    """How Prometheus scrapes the mesh's instances: its leaf, key and the CA roots (files),
    and the services that serve mTLS only."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    services: frozenset[str]

    def tls_config(self) -> dict[str, Any]:
        """The job's ``tls_config``.

        Consul's leaf certificates name their service only in a URI SAN (its SPIFFE ID:
        ``spiffe://<trust domain>/ns/default/dc/dc1/svc/<service>``), with no DNS or IP
        SAN and an empty subject. Prometheus (Go's TLS) checks a server's certificate
        against a host name or IP only, so with verification on every scrape would fail
        ("not valid for any names"); it cannot check a URI SAN. So Prometheus does not
        verify the server (``insecure_skip_verify``, which also skips the chain), and
        still presents its own leaf: the instances verify *it* (the mesh roots) and the
        intentions (``prometheus -> <service>``) decide. The risk left: something else
        listening on a target's loopback port could feed Prometheus wrong metrics.
        """
        return {
            "cert_file": str(self.cert_file),
            "key_file": str(self.key_file),
            "ca_file": str(self.ca_file),
            "insecure_skip_verify": True,
        }


def _relabel(source: str, target: str) -> dict[str, Any]:
    return {"source_labels": [source], "target_label": target}


def scrape_config(
    access: ConsulAccess,
    interval: str,
    targets_file: Path | None = None,
    mesh: MeshScrape | None = None,
) -> dict[str, Any]:
    """The scrape job ``services``: every Consul service instance that serves metrics
    (with ``mesh``: but the mesh's services, ``mesh_scrape_config``'s).

    Targets from Consul SD, or from ``targets_file`` (file_sd, same labels) when given.
    """
    meta = f"__meta_consul_service_metadata_{METRICS_PATH_META}"
    discovery: dict[str, Any] = (
        {"consul_sd_configs": [access.sd_config(interval)]}
        if targets_file is None
        else {"file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": interval}]}
    )
    keep: list[dict[str, Any]] = [{"source_labels": [meta], "regex": "/.*", "action": "keep"}]
    if mesh is not None:
        keep.append(
            {
                "source_labels": ["__meta_consul_service"],
                "regex": "|".join(sorted(mesh.services)),
                "action": "drop",
            }
        )
    return {
        "job_name": "services",
        "scrape_interval": interval,
        "scrape_timeout": interval,
        **discovery,
        "relabel_configs": [
            *keep,
            _relabel(meta, "__metrics_path__"),
            _relabel("__meta_consul_service", "service"),
            _relabel("__meta_consul_service_id", "instance_id"),
            _relabel("__meta_consul_tags", "tags"),
            _relabel("__meta_consul_service_metadata_version", "version"),
        ],
    }


def mesh_scrape_config(
    access: ConsulAccess, interval: str, mesh: MeshScrape, targets_file: Path | None = None
) -> dict[str, Any]:
    """The scrape job ``services-mesh``: the mesh's instances over mTLS, same labels."""
    plain = scrape_config(access, interval, targets_file)
    only_mesh = {
        "source_labels": ["__meta_consul_service"],
        "regex": "|".join(sorted(mesh.services)),
        "action": "keep",
    }
    return {
        **plain,
        "job_name": "services-mesh",
        "scheme": "https",
        "tls_config": mesh.tls_config(),
        "relabel_configs": [only_mesh, *plain["relabel_configs"]],
    }


#: Per-service RED, computed by Prometheus every evaluation interval.
RECORDING_RULES: tuple[tuple[str, str], ...] = (
    (
        "service:http_server_requests:rate1m",
        "sum by (service) (rate(http_server_requests_total[1m]))",
    ),
    (
        "service_instance:http_server_requests:rate1m",
        "sum by (service, instance_id) (rate(http_server_requests_total[1m]))",
    ),
    (
        "service:http_server_errors:ratio_rate1m",
        'sum by (service) (rate(http_server_requests_total{status=~"5.."}[1m]))'
        " / sum by (service) (rate(http_server_requests_total[1m]))",
    ),
    (
        "service:http_server_request_duration_seconds:p99_1m",
        "histogram_quantile(0.99, sum by (service, le) "
        "(rate(http_server_request_duration_seconds_bucket[1m])))",
    ),
)


def rules() -> dict[str, Any]:
    """The recording rules file."""
    return {
        "groups": [
            {
                "name": "services-red",
                "rules": [{"record": name, "expr": expr} for name, expr in RECORDING_RULES],
            }
        ]
    }


def config(
    access: ConsulAccess,
    rules_file: Path,
    interval: str,
    targets_file: Path | None = None,
    mesh: MeshScrape | None = None,
) -> dict[str, Any]:
    """The whole prometheus.yml: scrape and evaluate every ``interval``."""
    jobs = [scrape_config(access, interval, targets_file, mesh)]
    if mesh is not None:
        jobs.append(mesh_scrape_config(access, interval, mesh, targets_file))
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rules_file)],
        "scrape_configs": jobs,
    }


def write_config(
    directory: Path,
    access: ConsulAccess,
    interval: str,
    targets_file: Path | None = None,
    mesh: MeshScrape | None = None,
) -> Path:
    """Write prometheus.yml and rules.yml into ``directory``; return the config's path."""
    directory.mkdir(parents=True, exist_ok=True)
    rules_file = directory / "rules.yml"
    rules_file.write_text(json.dumps(rules(), indent=2) + "\n")
    config_file = directory / "prometheus.yml"
    body = config(access, rules_file, interval, targets_file, mesh)
    config_file.write_text(json.dumps(body, indent=2) + "\n")
    return config_file


def command(binary: str, config_file: Path, data_dir: Path, port: int) -> list[str]:
    """Prometheus on 127.0.0.1:``port`` with its own config and data dir."""
    return [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data_dir}",
        "--storage.tsdb.retention.time=1d",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
