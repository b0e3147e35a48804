"""What a local cluster consists of: a frozen plan of ports, counts and paths."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

#: The service names as registered in Consul, and the app factory each one serves.
APPS = {
    "gateway": "services.gateway:create_app()",
    "user-service": "services.user_service:create_app()",
    "order-service": "services.order_service:create_app()",
    "inventory-service": "services.inventory_service:create_app",  # FastAPI, under uvicorn
}

#: Services served as ASGI apps by uvicorn (registry.asgi); the others are WSGI under gunicorn.
ASGI_SERVICES = frozenset({"inventory-service"})


class ClusterConfigError(ValueError):
    """A cluster setting is invalid; the message names it."""


@dataclass(frozen=True, slots=True)
class InstancePlan:
    """One service instance: its supervisor program name, service name and port."""

    program: str
    service: str
    port: int

    @property
    def instance_id(self) -> str:
        """The Consul service ID the instance registers under."""
        return f"{self.service}-127.0.0.1-{self.port}"


@dataclass(frozen=True, slots=True)
class ConsulPorts:
    """Ports of the cluster's single dev agent (all on 127.0.0.1)."""

    http: int = 8500
    dns: int = 8600
    serf_lan: int = 8301
    serf_wan: int = 8302
    server: int = 8300
    grpc: int = 8502


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    """Everything `make run-cluster` starts, where it listens and where it keeps files.

    Defaults: Consul UI on :8500, gateway on :8080, user-service on :8101.., order-service
    on :8201.., inventory-service on :8301.., Prometheus on :9090 scraping every
    ``scrape_interval``. Tests build a plan on free ports in a temporary run dir.
    """

    run_dir: Path = REPO_ROOT / ".run" / "cluster"
    users: int = 3
    orders: int = 3
    inventories: int = 2
    gateways: int = 1
    consul: ConsulPorts = ConsulPorts()
    gateway_port: int = 8080
    user_base_port: int = 8101
    order_base_port: int = 8201
    inventory_base_port: int = 8301
    check_interval: str = "2s"
    drain_seconds: float = 2.0
    secret: str = "local-cluster-secret-change-me"
    prometheus_port: int = 9090
    scrape_interval: str = "2s"
    workers: int = 1
    threads: int = 8
    autorestart: bool = True

    def __post_init__(self) -> None:
        for name in ("users", "orders", "inventories", "gateways"):
            value = getattr(self, name)
            if not 1 <= value <= 20:
                raise ClusterConfigError(f"{name.upper()} must be between 1 and 20; got {value}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ClusterPlan:
        """A plan from USERS, ORDERS, INVENTORIES and CLUSTER_RUN_DIR (the Makefile's knobs)."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, object] = {}
        for key, field_name in (
            ("USERS", "users"),
            ("ORDERS", "orders"),
            ("INVENTORIES", "inventories"),
        ):
            raw = env.get(key, "").strip()
            if raw:
                try:
                    kwargs[field_name] = int(raw)
                except ValueError as exc:
                    raise ClusterConfigError(f"{key} must be a whole number; got {raw!r}") from exc
        if env.get("CLUSTER_RUN_DIR"):
            kwargs["run_dir"] = Path(env["CLUSTER_RUN_DIR"]).resolve()
        return cls(**kwargs)  # type: ignore[arg-type]

    @property
    def saved_plan(self) -> Path:
        """Where `up` records the instance counts so later commands see the same cluster."""
        return self.run_dir / "plan.json"

    def save(self) -> None:
        """Record the counts of the cluster being started."""
        counts = {
            "users": self.users,
            "orders": self.orders,
            "inventories": self.inventories,
            "gateways": self.gateways,
        }
        self.saved_plan.write_text(json.dumps(counts))

    def with_saved_counts(self) -> ClusterPlan:
        """This plan with the counts recorded by the running cluster's `up`, if any."""
        try:
            counts = json.loads(self.saved_plan.read_text())
        except (OSError, ValueError):
            return self
        return replace(self, **{k: int(v) for k, v in counts.items()})

    @property
    def consul_address(self) -> str:
        """CONSUL_HTTP_ADDR for everything in the cluster."""
        return f"127.0.0.1:{self.consul.http}"

    @property
    def consul_ui_url(self) -> str:
        """Where the Consul web UI is served."""
        return f"http://{self.consul_address}/ui/"

    @property
    def gateway_url(self) -> str:
        """The public entry point."""
        return f"http://127.0.0.1:{self.gateway_port}"

    def instances(self) -> list[InstancePlan]:
        """Every service instance, gateway first."""
        out = [
            InstancePlan(f"gateway-{i + 1}", "gateway", self.gateway_port + i)
            for i in range(self.gateways)
        ]
        out += [
            InstancePlan(f"user-service-{i + 1}", "user-service", self.user_base_port + i)
            for i in range(self.users)
        ]
        out += [
            InstancePlan(f"order-service-{i + 1}", "order-service", self.order_base_port + i)
            for i in range(self.orders)
        ]
        out += [
            InstancePlan(
                f"inventory-service-{i + 1}", "inventory-service", self.inventory_base_port + i
            )
            for i in range(self.inventories)
        ]
        return out

    def instances_of(self, service: str) -> list[InstancePlan]:
        """The instances of one service, in order."""
        found = [i for i in self.instances() if i.service == service]
        if not found:
            known = ", ".join(sorted(APPS))
            raise ClusterConfigError(f"SERVICE must be one of {known}; got {service!r}")
        return found

    def ports(self) -> dict[str, int]:
        """Every TCP port the cluster will listen on, by what listens there."""
        ports = {
            "consul http": self.consul.http,
            "consul dns": self.consul.dns,
            "consul serf lan": self.consul.serf_lan,
            "consul serf wan": self.consul.serf_wan,
            "consul server rpc": self.consul.server,
            "consul grpc": self.consul.grpc,
        }
        ports["prometheus"] = self.prometheus_port
        ports.update({inst.program: inst.port for inst in self.instances()})
        return ports

    @property
    def prometheus_url(self) -> str:
        """Prometheus' web UI and HTTP API."""
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def prometheus_dir(self) -> Path:
        """Prometheus' generated config, rules, file_sd targets and data (``data/``)."""
        return self.run_dir / "prometheus"

    @property
    def metrics_dir(self) -> Path:
        """Per-instance PROMETHEUS_MULTIPROC_DIRs (``<dir>/<program>``)."""
        return self.run_dir / "metrics"

    @property
    def supervisor_conf(self) -> Path:
        """The generated supervisord config."""
        return self.run_dir / "supervisord.conf"

    @property
    def supervisor_socket(self) -> Path:
        """supervisord's control socket (a unix socket: no TCP port to collide on)."""
        return self.run_dir / "supervisor.sock"

    @property
    def supervisor_pidfile(self) -> Path:
        """supervisord's PID file; a live PID there means the cluster is running."""
        return self.run_dir / "supervisord.pid"

    @property
    def log_dir(self) -> Path:
        """Where every process's log goes."""
        return self.run_dir / "logs"

    @property
    def data_dir(self) -> Path:
        """Where the services keep their SQLite files."""
        return self.run_dir / "data"
