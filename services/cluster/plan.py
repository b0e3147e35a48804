"""What a local cluster consists of: a frozen plan of ports, counts and paths.

Three profiles: ``dev`` (one Consul dev agent on 127.0.0.1, everything open),
``secure`` (three servers on 127.0.0.11-13 and a client agent per "host" on 127.0.0.2
and 127.0.0.3, with ACLs default-deny, TLS and gossip encryption; the instances are
spread over the hosts and register with their own host's agent) and ``multi-dc`` (two
WAN-federated datacenters, each a server on 127.0.N.11 and a host's client agent on
127.0.N.2, open like dev: every service in dc1, one instance of each backend service in
dc2, see ``services.cluster.multi_dc``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from services.cluster import multi_dc

REPO_ROOT = Path(__file__).resolve().parents[2]

#: The service names as registered in Consul, and the app factory each one serves.
APPS = {
    "gateway": "services.gateway:create_app()",
    "user-service": "services.user_service:create_app()",
    "order-service": "services.order_service:create_app()",
    "inventory-service": "services.inventory_service:create_app",  # FastAPI, under uvicorn
}

#: Services served as ASGI apps by uvicorn (consul_discovery.registry.asgi); the others
#: are WSGI under gunicorn.
ASGI_SERVICES = frozenset({"inventory-service"})

#: With MESH=1, the services that serve Connect-native mTLS only (every one but the
#: gateway, the one plain-HTTP entry point; it calls into the mesh as ``gateway``).
MESH_SERVICES = frozenset(APPS) - {"gateway"}

PROFILES = ("dev", "secure", "multi-dc")

#: The multi-dc profile's backend services that also run in dc2 (one instance each).
DC2_SERVICES = ("user-service", "order-service", "inventory-service")


#: The version every instance runs, and the one a canary runs (``order_canaries``).
STABLE_VERSION = "1.0.0"
CANARY_VERSION = "2.0.0"


class ClusterConfigError(ValueError):
    """A cluster setting is invalid; the message names it."""


def mesh_flag(raw: str, default: bool = False) -> bool:
    """MESH's value: ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``;
    empty: ``default``."""
    value = raw.strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ClusterConfigError(f"MESH must be 1 or 0; got {raw!r}")


@dataclass(frozen=True, slots=True)
class InstancePlan:
    """One service instance: its supervisor program name, service name, port and host."""

    program: str
    service: str
    port: int
    host: str = "127.0.0.1"
    datacenter: str = ""  # multi-dc profile: "dc1" or "dc2" ("": the only one)
    version: str = STABLE_VERSION  # SERVICE_VERSION, registered as meta ``version``

    @property
    def instance_id(self) -> str:
        """The Consul service ID the instance registers under."""
        return f"{self.service}-{self.host}-{self.port}"

    @property
    def address(self) -> str:
        """``host:port`` the instance serves on."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class AgentPlan:
    """One Consul agent: its supervisor program (also its node name) and loopback address."""

    program: str
    host: str
    server: bool


@dataclass(frozen=True, slots=True)
class ConsulPorts:
    """Ports of the cluster's Consul agents.

    The dev agent listens on 127.0.0.1 with ``http`` and ``dns``; in the secure profile
    each agent has its own loopback address, so all use the same ports, with ``https``
    instead of ``http`` (plain HTTP, DNS and gRPC are off).
    """

    http: int = 8500
    dns: int = 8600
    serf_lan: int = 8301
    serf_wan: int = 8302
    server: int = 8300
    grpc: int = 8502
    https: int = 8501

    def shifted(self, offset: int) -> ConsulPorts:
        """Every port moved by ``offset`` (the PORT_OFFSET knob)."""
        return ConsulPorts(*(getattr(self, f.name) + offset for f in fields(self)))


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    """Everything `make run-cluster` starts, where it listens and where it keeps files.

    Defaults: Consul UI on :8500, gateway on :8080, user-service on :8101.., order-service
    on :8201.., inventory-service on :8401.., Prometheus on :9090 scraping every
    ``scrape_interval``. Tests build a plan on free ports in a temporary run dir. The secure
    profile adds ``server_hosts`` and ``client_hosts`` (one loopback address per agent);
    its files (CA, certificates, tokens, agent configs) live under ``run_dir``.
    """

    run_dir: Path = REPO_ROOT / ".run" / "cluster"
    users: int = 3
    orders: int = 3
    inventories: int = 2
    gateways: int = 1
    #: How many of the order-service instances (the last ones) are canaries running
    #: ``CANARY_VERSION``: what `make demo` splits traffic to (``services.cluster.canary``).
    order_canaries: int = 0
    consul: ConsulPorts = ConsulPorts()
    gateway_port: int = 8080
    user_base_port: int = 8101
    order_base_port: int = 8201
    inventory_base_port: int = 8401  # clear of Consul's 8300-8302
    check_interval: str = "2s"
    drain_seconds: float = 2.0
    secret: str = "local-cluster-secret-change-me"
    workers: int = 1
    threads: int = 8
    autorestart: bool = True
    prometheus_port: int = 9090
    scrape_interval: str = "2s"
    profile: str = "dev"
    server_hosts: tuple[str, ...] = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
    client_hosts: tuple[str, ...] = ("127.0.0.2", "127.0.0.3")
    # (service, variable, value): extra environment of that service's instances, over
    # the profile's own (drills: agentless reads, cold-start snapshots)
    service_env: tuple[tuple[str, str, str], ...] = ()
    #: MESH=1: the services in MESH_SERVICES serve in Consul's mesh (mTLS, intentions),
    #: every caller goes through it (``services.cluster.mesh``). ``from_env``: on by
    #: default in the secure profile, off in the others.
    mesh: bool = False

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ClusterConfigError(
                f"PROFILE must be one of {', '.join(PROFILES)}; got {self.profile!r}"
            )
        if self.mesh and self.multi_dc:
            raise ClusterConfigError("MESH=1 works with PROFILE=dev or secure, not multi-dc")
        if self.secure and (len(self.server_hosts) not in (1, 3, 5) or not self.client_hosts):
            raise ClusterConfigError("the secure profile needs 1, 3 or 5 servers and a client")
        for name in ("users", "orders", "inventories", "gateways"):
            value = getattr(self, name)
            if not 1 <= value <= 20:
                raise ClusterConfigError(f"{name.upper()} must be between 1 and 20; got {value}")
        if not 0 <= self.order_canaries <= self.orders:
            raise ClusterConfigError(
                f"CANARIES must be between 0 and ORDERS ({self.orders}); got {self.order_canaries}"
            )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ClusterPlan:
        """Build a plan from the Makefile's knobs: PROFILE, USERS, ORDERS, INVENTORIES,
        CANARIES (order-service canaries; the dev profile's default: 1 of its 2 or more),
        PORT_OFFSET and
        CLUSTER_RUN_DIR (default ``.run/cluster``, or ``.run/secure`` for the secure profile)
        and MESH (``1`` serves the services in the mesh, ``0`` not; unset: the secure
        profile does, the others do not).
        """
        env = os.environ if environ is None else environ
        profile = env.get("PROFILE", "").strip() or "dev"
        # The secure profile runs in the mesh unless MESH=0; dev only with MESH=1.
        mesh = mesh_flag(env.get("MESH", ""), default=profile == "secure")
        kwargs: dict[str, object] = {"profile": profile, "mesh": mesh}
        if profile in ("secure", "multi-dc"):
            kwargs["run_dir"] = REPO_ROOT / ".run" / profile
        for key, field_name in (
            ("USERS", "users"),
            ("ORDERS", "orders"),
            ("INVENTORIES", "inventories"),
            ("CANARIES", "order_canaries"),
            ("PORT_OFFSET", "port_offset"),
        ):
            raw = env.get(key, "").strip()
            if raw:
                try:
                    kwargs[field_name] = int(raw)
                except ValueError as exc:
                    raise ClusterConfigError(f"{key} must be a whole number; got {raw!r}") from exc
        if env.get("CLUSTER_RUN_DIR"):
            kwargs["run_dir"] = Path(env["CLUSTER_RUN_DIR"]).resolve()
        if profile == "dev" and "order_canaries" not in kwargs:
            orders = kwargs.get("orders", cls.__dataclass_fields__["orders"].default)
            kwargs["order_canaries"] = 1 if isinstance(orders, int) and orders >= 2 else 0
        offset = int(kwargs.pop("port_offset", 0))  # type: ignore[call-overload]
        if offset:
            if not 0 < offset <= 20000:
                raise ClusterConfigError(f"PORT_OFFSET must be between 1 and 20000; got {offset}")
            defaults = cls()
            kwargs.update(
                consul=defaults.consul.shifted(offset),
                gateway_port=defaults.gateway_port + offset,
                user_base_port=defaults.user_base_port + offset,
                order_base_port=defaults.order_base_port + offset,
                inventory_base_port=defaults.inventory_base_port + offset,
                prometheus_port=defaults.prometheus_port + offset,
            )
        return cls(**kwargs)  # type: ignore[arg-type]

    def in_mesh(self, service: str) -> bool:
        """Whether ``service``'s instances serve Connect-native mTLS in this cluster."""
        return self.mesh and service in MESH_SERVICES

    @property
    def mesh_identity_dir(self) -> Path:
        """Where Prometheus' mesh client identity is kept (0700; cert, key, CA 0600)."""
        return self.run_dir / "prometheus-identity"

    @property
    def secure(self) -> bool:
        """Whether this is the secure profile (ACLs, TLS, servers and client agents)."""
        return self.profile == "secure"

    @property
    def multi_dc(self) -> bool:
        """Whether this is the multi-dc profile (dc1 and dc2, WAN-federated)."""
        return self.profile == "multi-dc"

    def dc_agents(self) -> list[multi_dc.DcAgent]:
        """The multi-dc profile's agents: dc1's and dc2's server and host."""
        return multi_dc.federation("127.0")

    def dc_ports(self) -> multi_dc.DcPorts:
        """The ports every agent of the multi-dc profile listens on (its own address)."""
        c = self.consul
        return multi_dc.DcPorts(c.http, c.dns, c.serf_lan, c.serf_wan, c.server)

    @property
    def saved_plan(self) -> Path:
        """Where `up` records the instance counts so later commands see the same cluster."""
        return self.run_dir / "plan.json"

    def save(self) -> None:
        """Record the counts and ports of the cluster being started."""
        saved = {
            "users": self.users,
            "orders": self.orders,
            "inventories": self.inventories,
            "gateways": self.gateways,
            "order_canaries": self.order_canaries,
            "consul": asdict(self.consul),
            "gateway_port": self.gateway_port,
            "user_base_port": self.user_base_port,
            "order_base_port": self.order_base_port,
            "inventory_base_port": self.inventory_base_port,
            "prometheus_port": self.prometheus_port,
            "mesh": self.mesh,
        }
        self.saved_plan.write_text(json.dumps(saved))

    def with_saved_counts(self) -> ClusterPlan:
        """This plan with the counts and ports recorded by the running cluster's `up`.

        So `make status`, `demo` and `stop-cluster` find a cluster started with
        USERS/ORDERS/PORT_OFFSET without being given them again.
        """
        try:
            saved = json.loads(self.saved_plan.read_text())
            consul = ConsulPorts(**saved.pop("consul", asdict(self.consul)))
            mesh = bool(saved.pop("mesh", self.mesh))
            return replace(self, consul=consul, mesh=mesh, **{k: int(v) for k, v in saved.items()})
        except (OSError, ValueError, TypeError):
            return self

    @property
    def consul_address(self) -> str:
        """CONSUL_HTTP_ADDR of the agent the tooling talks to (the first server if secure,
        dc1's host agent if multi-dc)."""
        if self.secure:
            return self.agent_address(self.server_hosts[0])
        if self.multi_dc:
            return self.agent_address(self.dc_agents()[1].host)
        return f"127.0.0.1:{self.consul.http}"

    @property
    def servers_address(self) -> str:
        """CONSUL_HTTP_ADDR naming every server (agentless reads), comma-separated."""
        return ",".join(self.agent_address(host) for host in self.server_hosts)

    def agent_address(self, host: str) -> str:
        """CONSUL_HTTP_ADDR of the agent on ``host`` (https in the secure profile)."""
        if self.secure:
            return f"https://{host}:{self.consul.https}"
        return f"{host}:{self.consul.http}"

    @property
    def consul_ui_url(self) -> str:
        """Where the Consul web UI is served."""
        if self.secure:
            return f"{self.consul_address}/ui/"
        return f"http://{self.consul_address}/ui/"

    @property
    def gateway_url(self) -> str:
        """The public entry point."""
        return f"http://{self.instances()[0].address}"

    def agents(self) -> list[AgentPlan]:
        """Every Consul agent: the dev agent, or the servers then the hosts' client agents."""
        if self.multi_dc:
            return [AgentPlan(a.name, a.host, a.server) for a in self.dc_agents()]
        if not self.secure:
            return [AgentPlan("consul", "127.0.0.1", server=True)]
        servers = [
            AgentPlan(f"consul-server-{i + 1}", host, server=True)
            for i, host in enumerate(self.server_hosts)
        ]
        clients = [
            AgentPlan(f"consul-host-{i + 1}", host, server=False)
            for i, host in enumerate(self.client_hosts)
        ]
        return servers + clients

    def instances(self) -> list[InstancePlan]:
        """Every service instance, gateway first; secure: spread over the client hosts;
        multi-dc: everything on dc1's host, then one of each DC2_SERVICES on dc2's."""
        if self.multi_dc:
            return self._multi_dc_instances()
        hosts = self.client_hosts if self.secure else ("127.0.0.1",)

        def spread(service: str, count: int, base: int) -> list[InstancePlan]:
            return [
                InstancePlan(f"{service}-{i + 1}", service, base + i, hosts[i % len(hosts)])
                for i in range(count)
            ]

        orders = spread("order-service", self.orders, self.order_base_port)
        stable = len(orders) - self.order_canaries
        orders[stable:] = [replace(i, version=CANARY_VERSION) for i in orders[stable:]]
        return (
            spread("gateway", self.gateways, self.gateway_port)
            + spread("user-service", self.users, self.user_base_port)
            + orders
            + spread("inventory-service", self.inventories, self.inventory_base_port)
        )

    def _multi_dc_instances(self) -> list[InstancePlan]:
        hosts = {a.datacenter: a.host for a in self.dc_agents() if not a.server}
        base = {
            "gateway": self.gateway_port,
            "user-service": self.user_base_port,
            "order-service": self.order_base_port,
            "inventory-service": self.inventory_base_port,
        }
        counts = {
            "gateway": self.gateways,
            "user-service": self.users,
            "order-service": self.orders,
            "inventory-service": self.inventories,
        }
        dc1 = [
            InstancePlan(f"{service}-{i + 1}", service, base[service] + i, hosts["dc1"], "dc1")
            for service, count in counts.items()
            for i in range(count)
        ]
        dc2 = [
            InstancePlan(f"{service}-dc2-1", service, base[service], hosts["dc2"], "dc2")
            for service in DC2_SERVICES
        ]
        return dc1 + dc2

    def instances_of(self, service: str) -> list[InstancePlan]:
        """The instances of one service, in order."""
        found = [i for i in self.instances() if i.service == service]
        if not found:
            known = ", ".join(sorted(APPS))
            raise ClusterConfigError(f"SERVICE must be one of {known}; got {service!r}")
        return found

    def endpoints(self) -> dict[str, tuple[str, int]]:
        """Every (address, TCP port) the cluster will listen on, by what listens there."""
        if self.multi_dc:
            return self._multi_dc_endpoints()
        if not self.secure:
            return {what: ("127.0.0.1", port) for what, port in self.ports().items()}
        out: dict[str, tuple[str, int]] = {}
        for agent in self.agents():
            out[f"{agent.program} https"] = (agent.host, self.consul.https)
            out[f"{agent.program} serf lan"] = (agent.host, self.consul.serf_lan)
            if agent.server:
                out[f"{agent.program} serf wan"] = (agent.host, self.consul.serf_wan)
                out[f"{agent.program} server rpc"] = (agent.host, self.consul.server)
        out.update({inst.program: (inst.host, inst.port) for inst in self.instances()})
        out["prometheus"] = ("127.0.0.1", self.prometheus_port)
        return out

    def _multi_dc_endpoints(self) -> dict[str, tuple[str, int]]:
        out: dict[str, tuple[str, int]] = {}
        for agent in self.dc_agents():
            out[f"{agent.name} http"] = (agent.host, self.consul.http)
            out[f"{agent.name} dns"] = (agent.host, self.consul.dns)
            out[f"{agent.name} serf lan"] = (agent.host, self.consul.serf_lan)
            if agent.server:
                out[f"{agent.name} serf wan"] = (agent.host, self.consul.serf_wan)
                out[f"{agent.name} server rpc"] = (agent.host, self.consul.server)
        out.update({inst.program: (inst.host, inst.port) for inst in self.instances()})
        out["prometheus"] = ("127.0.0.1", self.prometheus_port)
        return out

    def ports(self) -> dict[str, int]:
        """Every TCP port of the dev profile's cluster, by what listens there."""
        ports = {
            "consul http": self.consul.http,
            "consul dns": self.consul.dns,
            "consul serf lan": self.consul.serf_lan,
            "consul serf wan": self.consul.serf_wan,
            "consul server rpc": self.consul.server,
            "consul grpc": self.consul.grpc,
        }
        ports.update({inst.program: inst.port for inst in self.instances()})
        ports["prometheus"] = self.prometheus_port
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

    # ---- the secure profile's files ---------------------------------------------------

    @property
    def tls_dir(self) -> Path:
        """The CA and every certificate (keys mode 0600)."""
        return self.run_dir / "tls"

    @property
    def token_dir(self) -> Path:
        """ACL tokens, one file each, mode 0600 (directory 0700)."""
        return self.run_dir / "tokens"

    def agent_dir(self, agent: AgentPlan) -> Path:
        """One agent's generated config (0600) and its data dir."""
        return self.run_dir / "consul" / agent.program

    def token_file(self, name: str) -> Path:
        """The file holding the token called ``name`` (a service, an agent, 'operator')."""
        return self.token_dir / f"{name}.token"

    @property
    def ca_file(self) -> Path:
        """The cluster's CA certificate (CONSUL_CACERT)."""
        return self.tls_dir / "consul-agent-ca.pem"

    @property
    def cli_cert(self) -> tuple[Path, Path]:
        """Certificate and key that tools and services present to the agents' HTTPS API."""
        return self.tls_dir / "cli.pem", self.tls_dir / "cli-key.pem"
