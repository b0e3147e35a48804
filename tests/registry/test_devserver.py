"""The Flask dev server (plain ``app.run()``) registers too, and drains on SIGTERM;
gunicorn refuses to start on bad config, naming the setting."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.registry.conftest import (
    REPO_ROOT,
    in_maintenance,
    instance_status,
    service_env,
    wait_until,
)


@pytest.mark.parametrize(
    ("server", "ignore_sigint"), [("dev", False), ("flask-cli", False), ("dev", True)]
)
def test_dev_server_registers_and_drains(
    consul_agent, consul_client, start_service, server, ignore_sigint
):
    """SIGTERM drains, then stops and deregisters, also in a process that inherited an
    ignored SIGINT (a shell's background job, nohup): the stop is not a SIGINT."""
    svc = start_service(
        consul_agent.address, server=server, drain_seconds=2, ignore_sigint=ignore_sigint
    )
    wait_until(lambda: instance_status(consul_client, "regtest", svc.service_id) == "passing", 4)
    svc.signal(signal.SIGTERM)
    sent = time.monotonic()
    wait_until(lambda: in_maintenance(consul_client, "regtest", svc.service_id), 1.0, 0.05)
    assert svc.answers(), "dev server stopped serving during the drain"
    # A bound on "eventually", not on speed (seen: over 5 s beside another test worker).
    wait_until(lambda: instance_status(consul_client, "regtest", svc.service_id) is None, 15, 0.05)
    assert time.monotonic() - sent >= 1.9, "deregistered before the drain delay"
    assert svc.wait_exit(10) is not None


def test_gunicorn_refuses_bad_config(tmp_path):
    env = service_env("127.0.0.1:1", 1, check_interval="200ms")
    env["SERVICE_PORT"] = ""
    cmd = [
        sys.executable, "-m", "gunicorn", "-c", "python:consul_discovery.registry.gunicorn_conf",
        "-b", "127.0.0.1:0", "tests.registry.apps:create_app()",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "SERVICE_CHECK_INTERVAL: 0.2s is below Consul's minimum of 1s" in result.stderr
