"""MESH=1 as configuration: the plan, the supervisord programs, Prometheus' jobs, the
intentions, the discovery client's setting, Prometheus' identity files and a mesh
denial's error (no Consul)."""

from __future__ import annotations

import configparser
import json
import shlex
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from consul_discovery.client.failure_origin import dependency_failure_headers
from consul_discovery.mesh.identity import CaRoot, CaRoots, Leaf, PrivateKeyPem
from consul_discovery.mesh.spiffe import SpiffeId
from services.cluster import control, mesh, prometheus, stopping
from services.cluster.plan import MESH_SERVICES, ClusterConfigError, ClusterPlan
from services.cluster.scrape_identity import IdentityFiles
from services.cluster.supervisor_conf import SCRAPE_IDENTITY, instance_command, instance_env, render
from services.common.discovery import connect_setting
from services.common.upstream import mesh_denial


def programs(plan: ClusterPlan) -> dict[str, configparser.SectionProxy]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(render(plan, "/bin/consul", "/bin/prometheus", consul_sd=False))
    return {
        name.removeprefix("program:"): parser[name]
        for name in parser.sections()
        if name.startswith("program:")
    }


def test_mesh_is_the_secure_profiles_default_and_read_from_the_environment() -> None:
    assert ClusterPlan.from_env({}).mesh is False  # dev: only with MESH=1
    assert ClusterPlan.from_env({"MESH": "0"}).mesh is False
    assert ClusterPlan.from_env({"MESH": "1"}).mesh is True
    assert ClusterPlan.from_env({"PROFILE": "secure"}).mesh is True
    assert ClusterPlan.from_env({"MESH": " ", "PROFILE": "secure"}).mesh is True
    assert ClusterPlan.from_env({"MESH": "0", "PROFILE": "secure"}).mesh is False
    assert ClusterPlan.from_env({"PROFILE": "multi-dc"}).mesh is False
    with pytest.raises(ClusterConfigError, match="MESH must be 1 or 0; got 'maybe'"):
        ClusterPlan.from_env({"MESH": "maybe"})
    with pytest.raises(ClusterConfigError, match="not multi-dc"):
        ClusterPlan.from_env({"MESH": "1", "PROFILE": "multi-dc"})


def test_a_saved_mesh_plan_stays_in_the_mesh_for_later_commands(tmp_path: Path) -> None:
    ClusterPlan(run_dir=tmp_path, mesh=True).save()
    assert ClusterPlan(run_dir=tmp_path).with_saved_counts().mesh is True
    ClusterPlan(run_dir=tmp_path).save()
    assert ClusterPlan(run_dir=tmp_path).with_saved_counts().mesh is False


def test_without_the_mesh_nothing_changes(tmp_path: Path) -> None:
    plan = ClusterPlan(run_dir=tmp_path)
    found = programs(plan)
    assert SCRAPE_IDENTITY not in found
    assert found["prometheus"]["autostart"] == "true"
    for inst in plan.instances():
        env = instance_env(plan, inst)
        assert env["SERVICE_CHECK"] == "http"
        assert "SERVICE_CONNECT" not in env and "DISCOVERY_CONNECT" not in env
        command = shlex.split(found[inst.program]["command"])
        assert "services.common.gunicorn_conf" in " ".join(command) or "uvicorn" in command
    assert control.metrics_programs(plan) == control.METRICS_PROGRAMS
    config = json.loads(
        prometheus.write_config(
            tmp_path / "prom", prometheus.ConsulAccess("127.0.0.1:8500"), "2s"
        ).read_text()
    )
    assert [job["job_name"] for job in config["scrape_configs"]] == ["services"]


@pytest.mark.parametrize("profile", ["dev", "secure"])
def test_mesh_instances_serve_connect_native_and_everyone_calls_through_the_mesh(
    tmp_path: Path, profile: str
) -> None:
    plan = ClusterPlan(run_dir=tmp_path, mesh=True, profile=profile)
    found = programs(plan)
    for inst in plan.instances():
        env = instance_env(plan, inst)
        command = found[inst.program]["command"]
        assert env["DISCOVERY_CONNECT"] == "1", inst.program
        if inst.service == "gateway":
            assert env["SERVICE_CHECK"] == "http" and "SERVICE_CONNECT" not in env
            assert "services.common.gunicorn_conf" in command
        else:
            assert env["SERVICE_CONNECT"] == "native" and "SERVICE_CHECK" not in env
            server = (
                "-m consul_discovery.mesh.uvicorn"
                if inst.service == "inventory-service"
                else "python:services.common.mesh_gunicorn_conf"
            )
            assert server in command, inst.program
        if inst.service == "inventory-service":  # the JSON 400s and the uvicorn settings
            args = shlex.split(command)
            assert (
                args[args.index("--http") + 1]
                == "services.common.server_errors:JsonErrorH11Protocol"
            )
            assert args[args.index("--timeout-keep-alive") + 1] == "75"
            assert "--no-server-header" in args
    identity = found[SCRAPE_IDENTITY]
    assert str(plan.mesh_identity_dir) in identity["command"]
    assert int(identity["stopwaitsecs"]) == stopping.stop_wait(plan, SCRAPE_IDENTITY)
    assert found["prometheus"]["autostart"] == "false"  # control.up starts it after the files
    assert SCRAPE_IDENTITY in control.metrics_programs(plan)
    if profile == "secure":
        assert str(plan.token_file("prometheus")) in identity["environment"]


def test_the_intentions_allow_the_call_graph_first_and_deny_the_rest_last() -> None:
    written = mesh.intentions()
    assert written[-1] == mesh.Intention("*", "*", "deny")
    allows = written[:-1]
    assert all(i.action == "allow" for i in allows)
    assert {(i.source, i.destination) for i in allows} == set(mesh.EDGES) | {
        ("prometheus", service) for service in MESH_SERVICES
    }
    # Every destination serves in the mesh; the gateway is nobody's destination.
    assert {i.destination for i in allows} == MESH_SERVICES


def test_prometheus_scrapes_mesh_services_in_their_own_https_job(tmp_path: Path) -> None:
    files = IdentityFiles(tmp_path / "id")
    scrape = prometheus.MeshScrape(files.cert_file, files.key_file, files.ca_file, MESH_SERVICES)
    access = prometheus.ConsulAccess("127.0.0.1:8500")
    body = prometheus.config(access, tmp_path / "rules.yml", "2s", mesh=scrape)
    plain, meshed = body["scrape_configs"]
    assert plain["job_name"] == "services" and "scheme" not in plain
    services = "inventory-service|order-service|user-service"
    drop = {"source_labels": ["__meta_consul_service"], "action": "drop", "regex": services}
    assert drop in plain["relabel_configs"]
    assert meshed["job_name"] == "services-mesh" and meshed["scheme"] == "https"
    assert meshed["relabel_configs"][0] == {
        "source_labels": ["__meta_consul_service"],
        "action": "keep",
        "regex": services,
    }
    assert (
        meshed["relabel_configs"][1:] == plain["relabel_configs"][:1] + plain["relabel_configs"][2:]
    )
    assert meshed["tls_config"] == {
        "cert_file": str(files.cert_file),
        "key_file": str(files.key_file),
        "ca_file": str(files.ca_file),
        "insecure_skip_verify": True,  # a leaf has a URI SAN only (see MeshScrape)
    }


def test_discovery_connect_names_all_some_or_no_upstreams() -> None:
    assert connect_setting({}) is False
    assert connect_setting({"DISCOVERY_CONNECT": "0"}) is False
    assert connect_setting({"DISCOVERY_CONNECT": "1"}) is True
    assert connect_setting({"DISCOVERY_CONNECT": "user-service, order-service"}) == {
        "user-service",
        "order-service",
    }
    with pytest.raises(ValueError, match="empty service name"):
        connect_setting({"DISCOVERY_CONNECT": "user-service,,order-service"})


def _leaf(serial: str, key: str) -> Leaf:
    now = datetime.now(UTC)
    spiffe = SpiffeId.parse(
        "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/prometheus"
    )
    cert = f"-----BEGIN CERTIFICATE-----\n{serial}\n"
    pem = PrivateKeyPem(f"-----BEGIN PRIVATE KEY-----\n{key}\n")
    return Leaf("prometheus", spiffe, serial, cert, pem, now, now + timedelta(hours=72))


def test_identity_files_are_private_rewritten_whole_and_removed(tmp_path: Path) -> None:
    files = IdentityFiles(tmp_path / "identity")
    files.prepare()
    roots = CaRoots("td", "r1", (CaRoot("r1", "ROOT-1", active=True),))
    files.write(_leaf("01", "KEY-1"), roots)
    assert stat.S_IMODE(files.directory.stat().st_mode) == 0o700
    for path in (files.cert_file, files.key_file, files.ca_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert "KEY-1" in files.key_file.read_text()
    rotated = CaRoots("td", "r2", (CaRoot("r1", "ROOT-1"), CaRoot("r2", "ROOT-2", active=True)))
    files.write(_leaf("02", "KEY-2"), rotated)
    assert "KEY-2" in files.key_file.read_text()
    assert "02" in files.cert_file.read_text()
    assert files.ca_file.read_text() == "ROOT-1\nROOT-2\n"
    assert sorted(p.name for p in files.directory.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
    files.remove()
    assert not files.directory.exists()


def _response(status: int, body: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body
    return response


def test_a_mesh_denial_becomes_the_callers_own_403_and_nothing_else_does() -> None:
    body = b'{"error": "forbidden", "caller": "gateway", "destination": "order-service", '
    body += b'"reason": "denied by intention gateway -> order-service"}'
    denied = mesh_denial("order-service", _response(403, body))
    assert denied is not None
    assert denied.status == 403 and denied.code == "forbidden"
    assert "gateway" in denied.message and "order-service" in denied.message
    assert denied.extra == {"service": "order-service", "caller": "gateway"}
    assert denied.headers == dependency_failure_headers()  # not this instance's fault
    platform_403 = b'{"error": {"status": 403, "code": "forbidden", "message": "not yours"}}'
    assert mesh_denial("order-service", _response(403, platform_403)) is None
    assert mesh_denial("order-service", _response(403, b"<html>")) is None
    assert mesh_denial("order-service", _response(200, body)) is None


@pytest.mark.parametrize("mesh", [False, True])
def test_each_request_is_logged_once_by_the_services_own_access_log(
    tmp_path: Path, mesh: bool
) -> None:
    # services.access writes the line (trace, request id; the probes at DEBUG): the
    # servers' own access logs would print each request again and every probe.
    plan = ClusterPlan(run_dir=tmp_path, mesh=mesh)
    for inst in plan.instances():
        command = instance_command(plan, inst)
        assert "--access-logfile" not in command
        if any("uvicorn" in word for word in command):
            assert "--no-access-log" in command


def test_the_mesh_uvicorn_passes_no_access_log_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from consul_discovery.mesh import uvicorn as mesh_uvicorn

    seen: list[dict[str, object]] = []
    monkeypatch.setattr(mesh_uvicorn, "serve", lambda app, **kwargs: seen.append(kwargs))
    assert mesh_uvicorn.main(["m:app", "--port", "1", "--no-access-log"]) == 0
    assert mesh_uvicorn.main(["m:app", "--port", "1"]) == 0
    assert [kwargs["access_log"] for kwargs in seen] == [False, True]
