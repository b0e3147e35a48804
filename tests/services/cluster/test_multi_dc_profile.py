"""PROFILE=multi-dc: dc1 and dc2 WAN-federated on loopback, instances in both."""

from __future__ import annotations

import json
import time
from pathlib import Path

import requests

from services.cluster import control, multi_dc
from services.cluster.plan import ClusterPlan
from services.cluster.supervisor_conf import instance_env, render
from tests.harness.multi_dc import running_multi_dc_cluster


def test_the_plan_lays_out_two_datacenters(tmp_path: Path) -> None:
    plan = ClusterPlan(run_dir=tmp_path, profile="multi-dc", users=2, orders=1, inventories=1)
    assert [(a.program, a.host, a.server) for a in plan.agents()] == [
        ("dc1-server", "127.0.1.11", True),
        ("dc1-host", "127.0.1.2", False),
        ("dc2-server", "127.0.2.11", True),
        ("dc2-host", "127.0.2.2", False),
    ]
    by_dc: dict[str, list[str]] = {}
    for inst in plan.instances():
        by_dc.setdefault(inst.datacenter, []).append(inst.program)
        assert inst.host == ("127.0.1.2" if inst.datacenter == "dc1" else "127.0.2.2")
    assert by_dc["dc1"] == [
        "gateway-1",
        "user-service-1",
        "user-service-2",
        "order-service-1",
        "inventory-service-1",
    ]
    assert by_dc["dc2"] == ["user-service-dc2-1", "order-service-dc2-1", "inventory-service-dc2-1"]
    assert plan.consul_address == "127.0.1.2:8500"
    assert plan.gateway_url == "http://127.0.1.2:8080"
    endpoints = plan.endpoints()
    assert endpoints["dc2-server serf wan"] == ("127.0.2.11", 8302)
    assert "dc1-host server rpc" not in endpoints
    assert ClusterPlan.from_env({"PROFILE": "multi-dc"}).run_dir.name == "multi-dc"


def test_each_instance_reads_its_own_datacenters_agent_and_agents_get_configs(
    tmp_path: Path,
) -> None:
    plan = ClusterPlan(run_dir=tmp_path, profile="multi-dc", users=1, orders=1, inventories=1)
    dc2_order = next(i for i in plan.instances() if i.program == "order-service-dc2-1")
    assert instance_env(plan, dc2_order)["CONSUL_HTTP_ADDR"] == "127.0.2.2:8500"
    multi_dc.prepare(plan)
    conf = render(plan, "/bin/consul", "/bin/prometheus")
    for agent in plan.agents():
        path = multi_dc.config_file(plan, agent.program)
        assert f"-config-file={path}" in conf
        config = json.loads(path.read_text())
        assert config["bind_addr"] == agent.host and config["translate_wan_addrs"]
    dc2_server = json.loads(multi_dc.config_file(plan, "dc2-server").read_text())
    assert dc2_server["retry_join_wan"] == ["127.0.1.11:8302"]
    dc1_host = json.loads(multi_dc.config_file(plan, "dc1-host").read_text())
    assert dc1_host["locality"] == {"region": "dc1", "zone": "dc1-a"}
    assert dc1_host["retry_join"] == ["127.0.1.11:8301"]


def test_the_profile_runs_and_dc1_sees_dc2s_instances(tmp_path: Path) -> None:
    started = time.monotonic()
    with running_multi_dc_cluster(tmp_path) as plan:
        up = time.monotonic() - started
        print(f"\nmulti-dc profile: every instance passing {up:.1f}s after `up`")
        rows = control.table(plan)
        assert {r.instance: r.health for r in rows} == {
            i.instance_id: "passing" for i in plan.instances()
        }
        dc1 = plan.consul_address
        entries = requests.get(
            f"http://{dc1}/v1/health/service/order-service",
            params={"dc": "dc2", "passing": "1"},
            timeout=5,
        ).json()
        assert [(e["Node"]["Datacenter"], e["Service"]["Address"]) for e in entries] == [
            ("dc2", "127.0.2.2")
        ]
        answer = requests.get(f"{plan.gateway_url}/health", timeout=5)
        assert answer.ok
    assert control.supervisord_pid(plan) is None
