"""PROFILE=multi-dc: dc1 and dc2 WAN-federated on loopback, instances in both."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from services.cluster import control, multi_dc
from services.cluster.plan import ClusterPlan
from services.cluster.supervisor_conf import instance_env, render
from tests.harness import drills
from tests.harness.multi_dc import running_multi_dc_cluster
from tests.services.cluster.conftest import kill_group_and_wait


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


@pytest.fixture(scope="module")
def multi_dc_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPlan]:
    """The multi-dc profile with two user-service instances in dc1, shared by the module."""
    started = time.monotonic()
    with running_multi_dc_cluster(tmp_path_factory.mktemp("multi-dc"), users=2) as plan:
        print(f"\nmulti-dc profile: every instance passing {time.monotonic() - started:.1f}s")
        yield plan
    assert control.supervisord_pid(plan) is None


def test_the_profile_runs_and_dc1_sees_dc2s_instances(multi_dc_cluster: ClusterPlan) -> None:
    plan = multi_dc_cluster
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


#: The drill's open-loop load through the gateway and its length: every request (an
#: order created or read) has order-service verify its token with user-service.
RATE, SECONDS, RUNS = 16.0, 22.0, 2
FAULT_AFTER = 3.0  # the load runs this long before the fault


def _verifies(plan: ClusterPlan, program: str) -> int:
    """How many token checks ``program`` (a user-service instance) has answered."""
    try:
        text = (plan.log_dir / f"{program}.log").read_text(errors="replace")
    except OSError:
        return 0
    return text.count("/tokens/verify")


@pytest.mark.parametrize("how", ["stop", "kill -9"])
def test_drill_every_dc1_user_service_down_fails_over_to_dc2_and_back(
    multi_dc_cluster: ClusterPlan, how: str
) -> None:
    """Open-loop load through the real gateway while every dc1 instance of user-service
    goes down (a graceful stop, or kill -9 and held down) and comes back: the resolver's
    failover to dc2 (a config entry, compiled by Consul into the chain order-service
    follows) answers in between. 0 failed requests and no duplicate order, repeated."""
    plan = multi_dc_cluster
    dc1 = f"http://{plan.consul_address}"
    entry = {"Kind": "service-resolver", "Name": "user-service",
             "Failover": {"*": {"Datacenters": ["dc2"]}}}  # fmt: skip
    requests.put(f"{dc1}/v1/config", json=entry, timeout=5).raise_for_status()
    home = [i for i in plan.instances_of("user-service") if i.datacenter == "dc1"]
    away = next(i for i in plan.instances_of("user-service") if i.datacenter == "dc2")
    assert len(home) == 2
    load = drills.GatewayLoad(plan)

    def fault() -> dict[str, float]:
        began = time.monotonic()
        away_before = _verifies(plan, away.program)
        if how == "kill -9":
            for inst in home:
                pid = control.program_pid(plan, inst.program)
                assert pid is not None
                kill_group_and_wait(pid)
        control.stop_in_parallel(plan, [i.program for i in home])  # held down
        down = time.monotonic() - began
        time.sleep(4.0)  # served by dc2 only
        away_during = _verifies(plan, away.program)
        home_before = sum(_verifies(plan, i.program) for i in home)
        restarted = time.monotonic()
        control.start_programs(plan, [i.program for i in home])
        control.wait_passing(plan, home, timeout=60)
        passing = time.monotonic() - restarted
        time.sleep(3.0)  # served by dc1 again
        return {
            "fault_s": time.monotonic() - began,
            "down_s": down,
            "passing_again_s": passing,
            "dc2_checks": away_during - away_before,
            "dc1_checks_after": sum(_verifies(plan, i.program) for i in home) - home_before,
        }

    for run in range(1, RUNS + 1):
        result = drills.run_drill(
            load, f"dc1 user-service {how} #{run}", fault, RATE, SECONDS, FAULT_AFTER
        )
        figures = result.figures
        print(
            f"\n{result.name}: {result.requests} requests, {len(result.failures)} failed, "
            f"{result.duplicates} duplicate orders, p99 {result.p99_ms:.0f} ms; "
            + ", ".join(f"{k} {v:.1f}" for k, v in figures.items())
        )
        assert result.failures == (), result.failures[:5]
        assert result.duplicates == 0
        assert result.requests == int(RATE * SECONDS)
        assert figures["fault_s"] < SECONDS - FAULT_AFTER, "the fault outlasted the load"
        assert figures["dc2_checks"] > 0, "dc2 never answered"
        assert figures["dc1_checks_after"] > 0, "calls never came back to dc1"
    requests.delete(f"{dc1}/v1/config/service-resolver/user-service", timeout=5)
