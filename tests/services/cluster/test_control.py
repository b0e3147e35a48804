"""Pure pieces of the cluster control: plans, pidfile liveness, the health table."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.cluster import control
from services.cluster.plan import (
    CANARY_VERSION,
    STABLE_VERSION,
    ClusterConfigError,
    ClusterPlan,
    InstancePlan,
)
from services.cluster.supervisor_conf import instance_env


def plan_in(tmp_path: Path, **kwargs: object) -> ClusterPlan:
    return ClusterPlan(run_dir=tmp_path, **kwargs)  # type: ignore[arg-type]


def test_supervisord_pid_reads_a_live_supervisord(tmp_path: Path) -> None:
    plan = plan_in(tmp_path)
    assert control.supervisord_pid(plan) is None  # no pidfile
    # Anything whose command line names supervisord stands in for it.
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "supervisord"])
    try:
        plan.supervisor_pidfile.write_text(f"{fake.pid}\n")
        assert control.supervisord_pid(plan) == fake.pid
    finally:
        fake.kill()
        fake.wait()
    plan.supervisor_pidfile.write_text("not a pid")
    assert control.supervisord_pid(plan) is None


def test_supervisord_pid_ignores_a_reused_pid(tmp_path: Path) -> None:
    plan = plan_in(tmp_path)
    plan.supervisor_pidfile.write_text(str(os.getpid()))  # alive, but not supervisord
    assert control.supervisord_pid(plan) is None


def test_supervisord_pid_ignores_a_zombie(tmp_path: Path) -> None:
    plan = plan_in(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        stat = Path(f"/proc/{child.pid}/stat")
        while stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z":
            assert time.monotonic() < deadline, "child never exited"
            time.sleep(0.01)
        plan.supervisor_pidfile.write_text(str(child.pid))
        assert control.supervisord_pid(plan) is None
    finally:
        child.wait()


def test_plan_counts_ports_and_ids(tmp_path: Path) -> None:
    plan = plan_in(tmp_path, users=2, orders=1)
    assert [i.program for i in plan.instances()] == [
        "gateway-1",
        "user-service-1",
        "user-service-2",
        "order-service-1",
        "inventory-service-1",
        "inventory-service-2",
    ]
    assert plan.instances_of("user-service")[1] == InstancePlan(
        "user-service-2", "user-service", 8102
    )
    assert plan.instances_of("order-service")[0].instance_id == "order-service-127.0.0.1-8201"
    assert plan.ports()["consul http"] == 8500


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"USERS": "0"}, "USERS must be between 1 and 20; got 0"),
        ({"ORDERS": "many"}, "ORDERS must be a whole number; got 'many'"),
        ({"USERS": "21"}, "USERS must be between 1 and 20; got 21"),
        ({"ORDERS": "2", "CANARIES": "3"}, "CANARIES must be between 0 and ORDERS \\(2\\); got 3"),
    ],
)
def test_bad_counts_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ClusterConfigError, match=message):
        ClusterPlan.from_env(env)


def test_the_dev_profile_runs_one_order_service_canary_by_default() -> None:
    plan = ClusterPlan.from_env({})
    assert [(i.program, i.version) for i in plan.instances_of("order-service")] == [
        ("order-service-1", STABLE_VERSION),
        ("order-service-2", STABLE_VERSION),
        ("order-service-3", CANARY_VERSION),
    ]
    assert {i.version for i in plan.instances() if i.service != "order-service"} == {STABLE_VERSION}
    assert instance_env(plan, plan.instances_of("order-service")[2])["SERVICE_VERSION"] == (
        CANARY_VERSION
    )
    assert ClusterPlan.from_env({"ORDERS": "1"}).order_canaries == 0
    assert ClusterPlan.from_env({"CANARIES": "0"}).order_canaries == 0
    assert ClusterPlan.from_env({"PROFILE": "secure"}).order_canaries == 0
    assert ClusterPlan().order_canaries == 0  # test plans: none unless asked


def test_unknown_service_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(
        ClusterConfigError, match="gateway, inventory-service, order-service, user-service"
    ):
        plan_in(tmp_path).instances_of("billing")


def test_saved_counts_win_for_later_commands(tmp_path: Path) -> None:
    plan_in(tmp_path, users=4, orders=2, order_canaries=1).save()
    later = plan_in(tmp_path).with_saved_counts()
    assert (later.users, later.orders, later.order_canaries) == (4, 2, 1)


def test_format_table_aligns_columns() -> None:
    row = control.InstanceStatus("gateway", "gateway-127.0.0.1-8080", "127.0.0.1:8080", "passing")
    rows = [row]
    lines = control.format_table(rows).splitlines()
    assert lines[0].split() == ["SERVICE", "INSTANCE", "ADDRESS", "HEALTH"]
    assert lines[0].index("HEALTH") == lines[1].index("passing")


def test_secure_plan_spreads_instances_over_the_hosts(tmp_path: Path) -> None:
    plan = plan_in(tmp_path, profile="secure", users=3, orders=2)
    hosts = {i.program: i.host for i in plan.instances()}
    assert hosts == {
        "gateway-1": "127.0.0.2",
        "user-service-1": "127.0.0.2",
        "user-service-2": "127.0.0.3",
        "user-service-3": "127.0.0.2",
        "order-service-1": "127.0.0.2",
        "order-service-2": "127.0.0.3",
        "inventory-service-1": "127.0.0.2",
        "inventory-service-2": "127.0.0.3",
    }
    assert plan.instances_of("user-service")[1].instance_id == "user-service-127.0.0.3-8102"
    assert [a.program for a in plan.agents()] == [
        "consul-server-1", "consul-server-2", "consul-server-3", "consul-host-1", "consul-host-2",
    ]  # fmt: skip
    assert plan.consul_ui_url == "https://127.0.0.11:8501/ui/"
    assert plan.gateway_url == "http://127.0.0.2:8080"
    assert plan.agent_address("127.0.0.3") == "https://127.0.0.3:8501"
    endpoints = plan.endpoints()
    assert endpoints["consul-server-2 server rpc"] == ("127.0.0.12", 8300)
    assert endpoints["consul-host-1 https"] == ("127.0.0.2", 8501)
    assert "consul-host-1 server rpc" not in endpoints  # client agents serve no RPC


def test_profile_and_port_offset_from_the_environment() -> None:
    plan = ClusterPlan.from_env({"PROFILE": "secure", "PORT_OFFSET": "1000"})
    assert plan.secure and plan.run_dir.name == "secure"
    assert (plan.consul.https, plan.gateway_port, plan.user_base_port) == (9501, 9080, 9101)
    assert ClusterPlan.from_env({}).profile == "dev"
    with pytest.raises(ClusterConfigError, match="PROFILE must be one of dev, secure"):
        ClusterPlan.from_env({"PROFILE": "prod"})
    with pytest.raises(ClusterConfigError, match="PORT_OFFSET must be a whole number"):
        ClusterPlan.from_env({"PORT_OFFSET": "x"})


def test_busy_ports_names_the_address(tmp_path: Path) -> None:
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.3", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        taken = control.busy_ports({"consul-host-2 https": ("127.0.0.3", port), "free": 0})
    assert taken == [f"127.0.0.3:{port} (consul-host-2 https)"]


def test_up_on_a_taken_port_says_how_to_move_the_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    def would_start() -> None:
        raise AssertionError("up went past the port check")

    monkeypatch.setattr(control.prometheus, "prometheus_binary", would_start)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(control.PortInUseError) as caught:
            control.up(plan_in(tmp_path, gateway_port=port))
    message = str(caught.value)  # other default ports may be taken too (a running cluster)
    assert message.startswith("cannot start the cluster, these ports are in use: ")
    assert f"{port} (gateway-1)" in message
    assert message.endswith(
        "; stop what holds them, or move every port of the cluster:"
        " `make run-cluster PORT_OFFSET=1000` (any offset from 1 to 20000)"
    )


def test_make_command_names_the_profile() -> None:
    assert control.make_command(ClusterPlan(), "run-cluster") == "make run-cluster"
    assert control.make_command(ClusterPlan(profile="secure"), "run-cluster") == (
        "make run-cluster PROFILE=secure"
    )


def test_saved_ports_win_for_later_commands(tmp_path: Path) -> None:
    started = ClusterPlan.from_env({"CLUSTER_RUN_DIR": str(tmp_path), "PORT_OFFSET": "700"})
    started.run_dir.mkdir(exist_ok=True)
    started.save()
    later = ClusterPlan.from_env({"CLUSTER_RUN_DIR": str(tmp_path)}).with_saved_counts()
    assert later.gateway_url == "http://127.0.0.1:8780"
    assert later.consul == started.consul and later.consul.http == 9200


@pytest.mark.parametrize(("profile", "suffix"), [("dev", ""), ("secure", " PROFILE=secure")])
def test_already_running_names_the_commands_of_its_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, profile: str, suffix: str
) -> None:
    monkeypatch.setattr(control, "supervisord_pid", lambda plan: 4242)
    with pytest.raises(control.AlreadyRunningError) as caught:
        control.up(plan_in(tmp_path, profile=profile))
    assert str(caught.value) == (
        f"the cluster is already running (supervisord PID 4242); `make status{suffix}` shows"
        f" it, `make stop-cluster{suffix}` stops it"
    )
