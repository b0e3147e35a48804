"""Render the supervisord config that runs Consul, Prometheus and every service instance."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from services.cluster import mesh, multi_dc, orphans, prometheus, secure, stopping
from services.cluster.plan import (
    APPS,
    ASGI_SERVICES,
    REPO_ROOT,
    AgentPlan,
    ClusterPlan,
    InstancePlan,
)
from services.common.metrics import METRICS_PATH

#: The Flask services' gunicorn config: the registry's hooks and JSON error pages.
GUNICORN_CONFIG = "python:services.common.gunicorn_conf"
#: The same with the mesh's hooks (mTLS with the leaf, intentions): MESH=1.
MESH_GUNICORN_CONFIG = "python:services.common.mesh_gunicorn_conf"
#: uvicorn's HTTP protocol answering the requests it refuses in the JSON error shape.
UVICORN_HTTP = "services.common.server_errors:JsonErrorH11Protocol"

CONSUL_DEV_CONFIG = REPO_ROOT / "consul" / "config" / "dev.hcl"


def _env_line(env: dict[str, str]) -> str:
    # supervisor's environment= syntax: KEY="value",KEY2="value2" (quotes escape commas).
    return ",".join(f'{key}="{value}"' for key, value in sorted(env.items()))


def consul_command(plan: ClusterPlan, consul_bin: str) -> list[str]:
    """The dev agent's command line: UI on, in-memory state, the plan's ports."""
    ports = plan.consul
    return [
        consul_bin,
        "agent",
        "-dev",
        "-node=local-cluster",
        f"-config-file={CONSUL_DEV_CONFIG}",
        f"-http-port={ports.http}",
        f"-dns-port={ports.dns}",
        f"-serf-lan-port={ports.serf_lan}",
        f"-serf-wan-port={ports.serf_wan}",
        f"-server-port={ports.server}",
        f"-grpc-port={ports.grpc}",
        "-grpc-tls-port=-1",
        "-https-port=-1",
    ]


def agent_command(plan: ClusterPlan, agent: AgentPlan, consul_bin: str) -> list[str]:
    """One agent's command line: the dev agent, or a secure server or client agent."""
    if plan.multi_dc:
        return [consul_bin, "agent", f"-config-file={multi_dc.config_file(plan, agent.program)}"]
    if not plan.secure:
        return consul_command(plan, consul_bin)
    files = secure.agent_config_files(plan, agent)
    return [consul_bin, "agent", *(f"-config-file={path}" for path in files)]


def instance_env(plan: ClusterPlan, inst: InstancePlan) -> dict[str, str]:
    """Environment of one instance: the registry's SERVICE_* settings and app settings.

    Secure profile: the instance's own host's client agent over HTTPS, the CA, the
    client certificate and its service's token file (Consul's own variables).
    """
    if plan.secure:
        consul_env = secure.instance_env(plan, inst.service, inst.host)
    else:  # dev: the one agent; multi-dc: the agent of the instance's own host
        consul_env = {"CONSUL_HTTP_ADDR": plan.agent_address(inst.host)}
    env = {
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
        **consul_env,
        "SERVICE_NAME": inst.service,
        "SERVICE_ID": inst.instance_id,
        "SERVICE_ADDRESS": inst.host,
        "SERVICE_PORT": str(inst.port),
        "SERVICE_VERSION": inst.version,
        "SERVICE_CHECK": "http",
        "SERVICE_CHECK_INTERVAL": plan.check_interval,
        "SERVICE_CHECK_TIMEOUT": "1s",
        "SERVICE_DEREGISTER_AFTER": "1m",
        "SERVICE_DRAIN_SECONDS": str(plan.drain_seconds),
        # Prometheus keeps only the instances that say where their metrics are.
        "SERVICE_META": f"{prometheus.METRICS_PATH_META}={METRICS_PATH}",
        "PROMETHEUS_MULTIPROC_DIR": str(plan.metrics_dir / inst.program),
        "USER_DB_PATH": str(plan.data_dir / "users.sqlite3"),
        "ORDER_DB_PATH": str(plan.data_dir / "orders.sqlite3"),
        "INVENTORY_DB_PATH": str(plan.data_dir / "inventory.sqlite3"),
        "USER_SERVICE_SECRET": plan.secret,
    }
    if inst.service in ASGI_SERVICES:
        # One uvicorn process: its metrics live in its own registry, no files to merge.
        del env["PROMETHEUS_MULTIPROC_DIR"]
    if plan.in_mesh(inst.service):
        del env["SERVICE_CHECK"]  # Connect-native: the TTL check fed from inside
    env.update(mesh.instance_env(plan, inst))
    env.update({name: value for svc, name, value in plan.service_env if svc == inst.service})
    return env


def instance_command(plan: ClusterPlan, inst: InstancePlan) -> list[str]:
    """gunicorn serving the instance's app, with the registry's master hooks (and JSON
    error pages: ``services.common.gunicorn_conf``); an ASGI service runs under uvicorn,
    whose SIGTERM consul_discovery.registry.asgi turns into a drain. Both stop within
    ``stopping.GRACEFUL_SECONDS`` of the drain's end."""
    graceful = str(stopping.GRACEFUL_SECONDS)
    in_mesh = plan.in_mesh(inst.service)
    if inst.service in ASGI_SERVICES:
        # In the mesh: the same server and settings behind the mesh's mTLS and guard.
        server = "consul_discovery.mesh.uvicorn" if in_mesh else "uvicorn"
        return [
            sys.executable, "-m", server, "--factory", APPS[inst.service],
            "--host", inst.host, "--port", str(inst.port),
            "--http", UVICORN_HTTP,
            "--timeout-graceful-shutdown", graceful, "--no-server-header",
            "--timeout-keep-alive", "75",  # callers close idle connections first
            "--no-access-log",  # services.access logs each request once (not the probes)
        ]  # fmt: skip
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    return [
        gunicorn,
        "-c",
        MESH_GUNICORN_CONFIG if in_mesh else GUNICORN_CONFIG,
        "--bind",
        inst.address,
        "--workers",
        str(plan.workers),
        "--threads",
        str(plan.threads),
        "--worker-class",
        "gthread",
        "--graceful-timeout",
        graceful,
        # Keep idle connections well past any caller's reuse gap: with gunicorn's 2 s
        # default, a caller (the gateway's discovery client, a load generator) reusing a
        # pooled connection just as the server closes it gets a reset, which is not safe
        # to resend for a POST. Callers close first; servers outlast them.
        "--keep-alive",
        "75",
        # No gunicorn access log: services.access writes one line per request, with its
        # trace and request id, and Consul's and Prometheus' probes only at DEBUG.
        "--name",
        inst.program,
        APPS[inst.service],
    ]


def targets_file(plan: ClusterPlan) -> Path:
    """The file_sd file the targets bridge writes for a Prometheus without Consul SD."""
    return plan.prometheus_dir / "targets.json"


def scrape_identity_program(plan: ClusterPlan) -> str:
    """MESH=1: the program keeping Prometheus' mesh identity in files (its leaf as
    ``prometheus``), started before Prometheus (``control.up`` waits for the files)."""
    command = [
        sys.executable,
        "-m",
        "services.cluster.scrape_identity",
        "--dir",
        str(plan.mesh_identity_dir),
        "--service",
        mesh.PROMETHEUS,
    ]
    env = {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    if plan.secure:  # its own service-identity token: the leaf of ``prometheus``
        env.update(secure.reader_env(plan, mesh.PROMETHEUS))
    else:
        env["CONSUL_HTTP_ADDR"] = plan.consul_address
    return f"""[program:{SCRAPE_IDENTITY}]
command={shlex.join(command)}
environment={_env_line(env)}
directory={REPO_ROOT}
priority=12
autostart={"false" if plan.secure else "true"}
startsecs=1
stopsignal=TERM
stopwaitsecs={stopping.stop_wait(plan, SCRAPE_IDENTITY)}
autorestart=true
redirect_stderr=true
stdout_logfile={plan.log_dir / (SCRAPE_IDENTITY + ".log")}
"""


#: The supervised program name of ``scrape_identity_program``.
SCRAPE_IDENTITY = "prometheus-identity"


def prometheus_programs(plan: ClusterPlan, prometheus_bin: str, consul_sd: bool) -> list[str]:
    """Prometheus' program section, plus the Consul->file_sd bridge when it needs one and,
    with the mesh on, the program keeping its mesh identity."""
    logs = plan.log_dir
    config_file = plan.prometheus_dir / "prometheus.yml"
    command = prometheus.command(
        prometheus_bin, config_file, plan.prometheus_dir / "data", plan.prometheus_port
    )
    # Mesh: started once its identity files exist (control.up).
    autostart = "false" if plan.mesh else "true"
    sections = [
        f"""[program:prometheus]
command={shlex.join(command)}
directory={plan.prometheus_dir}
priority=20
autostart={autostart}
startsecs=1
stopsignal=TERM
stopwaitsecs={stopping.PROMETHEUS_STOP_WAIT}
autorestart=true
redirect_stderr=true
stdout_logfile={logs / "prometheus.log"}
"""
    ]
    if not consul_sd:
        bridge = [
            sys.executable,
            "-m",
            "services.cluster.targets",
            "--out",
            str(targets_file(plan)),
            "--interval",
            "0.5",
        ]
        bridge_env = {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
        if plan.secure:  # Consul's variables, with the read-only operator token
            bridge_env.update(secure.reader_env(plan))
        else:
            bridge_env["CONSUL_HTTP_ADDR"] = plan.consul_address
        sections.append(
            f"""[program:prometheus-targets]
command={shlex.join(bridge)}
environment={_env_line(bridge_env)}
directory={REPO_ROOT}
priority=15
autostart={"false" if plan.secure else "true"}
startsecs=1
stopsignal=TERM
stopwaitsecs={stopping.TARGETS_STOP_WAIT}
autorestart=true
redirect_stderr=true
stdout_logfile={logs / "prometheus-targets.log"}
"""
        )
    if plan.mesh:
        sections.append(scrape_identity_program(plan))
    return sections


def render(
    plan: ClusterPlan, consul_bin: str, prometheus_bin: str = "prometheus", consul_sd: bool = True
) -> str:
    """The whole supervisord.conf for ``plan`` (``consul_sd``: the binary has Consul SD)."""
    logs = plan.log_dir
    stop_wait = stopping.instance_stop_wait(plan)
    sections = [
        f"""[supervisord]
logfile={logs / "supervisord.log"}
pidfile={plan.supervisor_pidfile}
childlogdir={logs}
nodaemon=false
directory={REPO_ROOT}
identifier=consul-discovery-cluster
environment={_env_line({orphans.MARK: str(plan.run_dir)})}

[unix_http_server]
file={plan.supervisor_socket}
chmod=0700

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{plan.supervisor_socket}

"""
    ]
    for agent in plan.agents():
        sections.append(
            f"""[program:{agent.program}]
command={shlex.join(agent_command(plan, agent, consul_bin))}
priority={10 if agent.server else 20}
startsecs={2 if not plan.secure else 1}
stopsignal=TERM
stopwaitsecs={stopping.AGENT_STOP_WAIT}
autorestart=true
redirect_stderr=true
stdout_logfile={logs / (agent.program + ".log")}
"""
        )
    sections += prometheus_programs(plan, prometheus_bin, consul_sd)
    # Secure profile: instances start once their tokens exist (control.up starts them).
    autostart = "false" if plan.secure else "true"
    for inst in plan.instances():
        sections.append(
            f"""[program:{inst.program}]
command={shlex.join(instance_command(plan, inst))}
environment={_env_line(instance_env(plan, inst))}
directory={REPO_ROOT}
priority=100
startsecs=2
stopsignal=TERM
stopwaitsecs={stop_wait}
; SIGTERM goes to the gunicorn master (or uvicorn) only: it drains (maintenance,
; propagation delay, in-flight requests) before it stops its workers. SIGKILL, if it
; comes to that, takes the whole group.
stopasgroup=false
killasgroup=true
autostart={autostart}
autorestart={"true" if plan.autorestart else "false"}
redirect_stderr=true
stdout_logfile={logs / (inst.program + ".log")}
stdout_logfile_maxbytes=10MB
"""
        )
    return "\n".join(sections)
