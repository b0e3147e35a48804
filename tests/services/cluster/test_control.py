"""Pure pieces of the cluster control: plans, pidfile liveness, the health table."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.cluster import control
from services.cluster.plan import ClusterConfigError, ClusterPlan, InstancePlan


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
    ],
)
def test_bad_counts_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ClusterConfigError, match=message):
        ClusterPlan.from_env(env)


def test_unknown_service_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(
        ClusterConfigError, match="gateway, inventory-service, order-service, user-service"
    ):
        plan_in(tmp_path).instances_of("billing")


def test_saved_counts_win_for_later_commands(tmp_path: Path) -> None:
    plan_in(tmp_path, users=4, orders=2).save()
    later = plan_in(tmp_path).with_saved_counts()
    assert (later.users, later.orders) == (4, 2)


def test_format_table_aligns_columns() -> None:
    row = control.InstanceStatus("gateway", "gateway-127.0.0.1-8080", "127.0.0.1:8080", "passing")
    rows = [row]
    lines = control.format_table(rows).splitlines()
    assert lines[0].split() == ["SERVICE", "INSTANCE", "ADDRESS", "HEALTH"]
    assert lines[0].index("HEALTH") == lines[1].index("passing")
