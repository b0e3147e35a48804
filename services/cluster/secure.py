"""The secure profile's secrets and bootstrap: CA and certificates, gossip key, ACL tokens.

Before the agents start (``prepare``): a fresh CA and a certificate per agent made by
``consul tls ca create`` / ``consul tls cert create`` (servers ``-server`` with their IP
as a SAN, client agents ``-client``, tools and services ``-cli``), a gossip key from
``consul keygen``, and each agent's generated config. After the servers elect a leader
(``bootstrap``): the ACL system is bootstrapped (the management token), each agent gets
a node-identity token as its agent token, each service a service-identity token (it may
register only its own name, and read services and nodes), and the operator a read-only
token for the UI and the tooling. Every secret is a file of its own, mode 0600, in a
0700 directory; none is ever printed (``make ui-token`` prints the operator's, on request).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from consul_discovery.connection import ConsulConnection
from services.cluster.plan import APPS, REPO_ROOT, AgentPlan, ClusterPlan

CONFIG_DIR = REPO_ROOT / "consul" / "config"
OPERATOR = "operator"
CONFIG_ADMIN = "config-admin"
MESH_ADMIN = "mesh-admin"  # writes intentions (make intentions)
MANAGEMENT = "management"
#: MESH=1: the service identity Prometheus scrapes the mesh with (services.cluster.mesh).
PROMETHEUS_IDENTITY = "prometheus"

#: What the operator's token may do: see everything, change nothing.
OPERATOR_RULES = """
service_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }
agent_prefix "" { policy = "read" }
key_prefix "" { policy = "read" }
operator = "read"
"""

#: What a service's token may read in KV: the shared layers and its own (config_client).
CONFIG_RULES = """
key_prefix "config/application" {{ policy = "read" }}
key_prefix "config/{service}" {{ policy = "read" }}
"""


class BootstrapError(RuntimeError):
    """The secure cluster could not be set up; the message says which step and why."""


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 (never readable by others, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def _consul(consul_bin: str, *args: str, cwd: Path) -> str:
    result = subprocess.run(
        [consul_bin, *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise BootstrapError(f"consul {' '.join(args)} failed: {result.stderr or result.stdout}")
    return result.stdout


def make_tls(plan: ClusterPlan, consul_bin: str) -> None:
    """A new CA, a certificate per agent (its IP as a SAN) and one for tools and services."""
    tls = plan.tls_dir
    shutil.rmtree(tls, ignore_errors=True)
    tls.mkdir(parents=True, mode=0o700)
    _consul(consul_bin, "tls", "ca", "create", "-days=30", cwd=tls)
    ca = ["-ca", str(plan.ca_file), "-key", str(tls / "consul-agent-ca-key.pem")]
    for agent in plan.agents():
        where = tls / agent.program
        where.mkdir(mode=0o700)
        kind = "-server" if agent.server else "-client"
        _consul(
            consul_bin,
            "tls",
            "cert",
            "create",
            kind,
            "-days=30",
            *ca,
            f"-additional-ipaddress={agent.host}",
            cwd=where,
        )
        for made in where.glob("dc1-*.pem"):
            made.rename(where / ("key.pem" if made.name.endswith("-key.pem") else "cert.pem"))
    scratch = tls / "cli"
    scratch.mkdir(mode=0o700)
    _consul(consul_bin, "tls", "cert", "create", "-cli", "-days=30", *ca, cwd=scratch)
    cert, key = plan.cli_cert
    for made in scratch.glob("dc1-cli-*.pem"):
        made.rename(key if made.name.endswith("-key.pem") else cert)
    scratch.rmdir()


def agent_config(plan: ClusterPlan, agent: AgentPlan, gossip_key: str) -> str:
    """The generated part of one agent's config (JSON, which Consul reads as HCL too)."""
    where = plan.tls_dir / agent.program
    ports = plan.consul
    config: dict[str, Any] = {
        "node_name": agent.program,
        "bind_addr": agent.host,
        "client_addr": agent.host,
        "advertise_addr": agent.host,
        "data_dir": str(plan.agent_dir(agent) / "data"),
        "encrypt": gossip_key,
        "retry_join": [f"{host}:{ports.serf_lan}" for host in plan.server_hosts],
        "ports": {
            "http": -1,
            "https": ports.https,
            "dns": -1,
            "grpc": -1,
            "grpc_tls": -1,
            "serf_lan": ports.serf_lan,
            "serf_wan": ports.serf_wan,
            "server": ports.server,
        },
        "tls": {
            "defaults": {
                "ca_file": str(plan.ca_file),
                "cert_file": str(where / "cert.pem"),
                "key_file": str(where / "key.pem"),
            }
        },
    }
    if agent.server:
        config["bootstrap_expect"] = len(plan.server_hosts)
    return json.dumps(config, indent=2) + "\n"


def agent_config_files(plan: ClusterPlan, agent: AgentPlan) -> list[Path]:
    """The config files of one agent, in the order Consul merges them."""
    role = "server" if agent.server else "client"
    return [
        CONFIG_DIR / "secure-common.hcl",
        CONFIG_DIR / f"secure-{role}.hcl",
        plan.agent_dir(agent) / "agent.json",
    ]


def prepare(plan: ClusterPlan, consul_bin: str) -> None:
    """Fresh TLS material, gossip key and agent configs; old agent state and tokens removed."""
    for old in (plan.run_dir / "consul", plan.token_dir):
        shutil.rmtree(old, ignore_errors=True)
    make_tls(plan, consul_bin)
    gossip_key = _consul(consul_bin, "keygen", cwd=plan.run_dir).strip()
    for agent in plan.agents():
        (plan.agent_dir(agent) / "data").mkdir(parents=True, mode=0o700)
        write_secret(plan.agent_dir(agent) / "agent.json", agent_config(plan, agent, gossip_key))


def connection(
    plan: ClusterPlan, token_name: str | None, host: str | None = None
) -> ConsulConnection:
    """How a tool reaches an agent (default: the first server) with one of the tokens.

    ``token_name`` None: no token (anonymous), e.g. to bootstrap the ACL system.
    """
    cert, key = plan.cli_cert
    tokens: dict[str, str] = {"token": ""}
    if token_name is not None:
        tokens = {"token_file": str(plan.token_file(token_name))}
    return ConsulConnection.from_env(
        {},
        address=plan.agent_address(host or plan.server_hosts[0]),
        ca_file=str(plan.ca_file),
        client_cert=str(cert),
        client_key=str(key),
        **tokens,
    )


def _call(session: requests.Session, method: str, url: str, what: str, body: object = None) -> Any:
    try:
        response = session.request(method, url, json=body, timeout=10)
    except requests.RequestException as exc:
        raise BootstrapError(f"{what}: {type(exc).__name__}") from exc
    if response.status_code != 200:
        raise BootstrapError(f"{what}: HTTP {response.status_code} {response.text[:300]}")
    return response.json() if response.content else None


def bootstrap_acl(plan: ClusterPlan, timeout: float = 60.0) -> None:
    """Bootstrap the ACL system once the servers have a leader; keep the management token."""
    base = connection(plan, None)
    deadline = time.monotonic() + timeout
    last = ""
    with base.session() as session:
        while time.monotonic() < deadline:
            try:
                response = session.put(f"{base.base_url}/v1/acl/bootstrap", timeout=5)
            except requests.RequestException as exc:
                last = type(exc).__name__
            else:
                if response.status_code == 200:
                    write_secret(plan.token_file(MANAGEMENT), response.json()["SecretID"] + "\n")
                    return
                last = f"HTTP {response.status_code} {response.text[:200]}"
                if response.status_code == 403:  # already bootstrapped: not our cluster
                    break
            time.sleep(0.3)
    raise BootstrapError(f"could not bootstrap the ACL system: {last}")


def issue_tokens(plan: ClusterPlan) -> None:
    """Agent tokens (node identities), service tokens (service identities), operator token."""
    admin = connection(plan, MANAGEMENT)
    with admin.session() as session:
        api = f"{admin.base_url}/v1/acl"
        for agent in plan.agents():
            identity = {"NodeName": agent.program, "Datacenter": "dc1"}
            made = _call(
                session,
                "PUT",
                f"{api}/token",
                f"token for agent {agent.program}",
                {"Description": f"agent {agent.program}", "NodeIdentities": [identity]},
            )
            write_secret(plan.token_file(agent.program), made["SecretID"] + "\n")
        for service in APPS:
            # A service identity lets it register itself and read the catalog; its live
            # configuration (config_client) also needs its own and the shared KV layers.
            _call(
                session,
                "PUT",
                f"{api}/policy",
                f"the config policy of {service}",
                {
                    "Name": f"config-read-{service}",
                    "Description": f"read {service}'s configuration layers in KV",
                    "Rules": CONFIG_RULES.format(service=service),
                },
            )
            made = _call(
                session,
                "PUT",
                f"{api}/token",
                f"token for service {service}",
                {
                    "Description": f"service {service}",
                    "ServiceIdentities": [{"ServiceName": service}],
                    "Policies": [{"Name": f"config-read-{service}"}],
                },
            )
            write_secret(plan.token_file(service), made["SecretID"] + "\n")
        _call(
            session,
            "PUT",
            f"{api}/policy",
            "the operator policy",
            {
                "Name": "operator-read",
                "Description": "read everything (UI, status)",
                "Rules": OPERATOR_RULES,
            },
        )
        made = _call(
            session,
            "PUT",
            f"{api}/token",
            "the operator token",
            {"Description": "operator (UI, make status)", "Policies": [{"Name": "operator-read"}]},
        )
        write_secret(plan.token_file(OPERATOR), made["SecretID"] + "\n")
        _call(
            session,
            "PUT",
            f"{api}/policy",
            "the config admin policy",
            {
                "Name": "config-write",
                "Description": "write the services' live configuration (config_client push, demo)",
                "Rules": 'key_prefix "config/" { policy = "write" }',
            },
        )
        made = _call(
            session,
            "PUT",
            f"{api}/token",
            "the config admin token",
            {
                "Description": "config admin (KV under config/)",
                "Policies": [{"Name": "config-write"}],
            },
        )
        write_secret(plan.token_file(CONFIG_ADMIN), made["SecretID"] + "\n")
        _call(
            session,
            "PUT",
            f"{api}/policy",
            "the mesh admin policy",
            {
                "Name": "intentions-write",
                "Description": "write the mesh's intentions (make intentions)",
                "Rules": 'service_prefix "" { policy = "read" intentions = "write" }',
            },
        )
        made = _call(
            session,
            "PUT",
            f"{api}/token",
            "the mesh admin token",
            {"Description": "mesh admin (intentions)", "Policies": [{"Name": "intentions-write"}]},
        )
        write_secret(plan.token_file(MESH_ADMIN), made["SecretID"] + "\n")
        if plan.mesh:
            # Prometheus' mesh identity (services.cluster.scrape_identity): the leaf of
            # ``prometheus`` needs service:write on it, which its service identity gives.
            made = _call(
                session,
                "PUT",
                f"{api}/token",
                f"token for the mesh identity {PROMETHEUS_IDENTITY}",
                {
                    "Description": f"mesh identity {PROMETHEUS_IDENTITY} (Prometheus' scrapes)",
                    "ServiceIdentities": [{"ServiceName": PROMETHEUS_IDENTITY}],
                },
            )
            write_secret(plan.token_file(PROMETHEUS_IDENTITY), made["SecretID"] + "\n")
    for agent in plan.agents():
        set_agent_token(plan, agent)


def set_agent_token(plan: ClusterPlan, agent: AgentPlan, timeout: float = 30.0) -> None:
    """Give ``agent`` its node-identity token (persisted in its data dir by the agent).

    The agent may still be starting: retried until ``timeout``.
    """
    admin = connection(plan, MANAGEMENT, host=agent.host)
    token = plan.token_file(agent.program).read_text().strip()
    deadline = time.monotonic() + timeout
    with admin.session() as session:
        while True:
            try:
                _call(
                    session,
                    "PUT",
                    f"{admin.base_url}/v1/agent/token/agent",
                    f"setting the agent token of {agent.program}",
                    {"Token": token},
                )
                return
            except BootstrapError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)


def instance_env(plan: ClusterPlan, service: str, host: str) -> dict[str, str]:
    """Consul's variables for an instance of ``service`` on ``host``: its own agent and token."""
    cert, key = plan.cli_cert
    return {
        "CONSUL_HTTP_ADDR": plan.agent_address(host),
        "CONSUL_CACERT": str(plan.ca_file),
        "CONSUL_CLIENT_CERT": str(cert),
        "CONSUL_CLIENT_KEY": str(key),
        "CONSUL_HTTP_TOKEN_FILE": str(plan.token_file(service)),
    }


def reader_env(plan: ClusterPlan, token: str = OPERATOR) -> dict[str, str]:
    """Consul's variables for a tool on a server: the CA, the client certificate and the
    token file called ``token`` (default: the operator's read-only one)."""
    cert, key = plan.cli_cert
    return {
        "CONSUL_HTTP_ADDR": plan.consul_address,
        "CONSUL_CACERT": str(plan.ca_file),
        "CONSUL_CLIENT_CERT": str(cert),
        "CONSUL_CLIENT_KEY": str(key),
        "CONSUL_HTTP_TOKEN_FILE": str(plan.token_file(token)),
    }
