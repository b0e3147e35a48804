"""Live config under ``gunicorn --preload``: the client started in the master before the
fork still updates every worker (it restarts its watches in each forked child)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.config_client.conftest import KV, service_name
from tests.harness.agent import ConsulAgent
from tests.harness.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def _flags(url: str, count: int) -> list[tuple[int, str]]:
    answers = []
    for _ in range(count):
        body = requests.get(url, timeout=2).json()
        answers.append((body["pid"], body["flag"]))
    return answers


def test_a_kv_change_reaches_every_preloaded_worker(
    kv_agent: ConsulAgent, kv: KV, tmp_path: Path
) -> None:
    name = service_name()
    kv.put(f"config/{name}/flag", "one")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env.update({"PYTHONPATH": str(REPO_ROOT), "CONSUL_HTTP_ADDR": kv_agent.address})
    env["PRELOAD_SERVICE"] = name
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "--preload", "--workers", "2",
                "--threads", "4", "-b", f"127.0.0.1:{port}",
                "tests.config_client.preload_app:create_app()",
            ],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/flag"
    try:
        deadline = time.monotonic() + 20
        workers: set[int] = set()
        while len(workers) < 2:  # both workers answer, with the first value
            with contextlib.suppress(requests.RequestException):
                for pid, flag in _flags(url, 5):
                    assert flag == "one"
                    workers.add(pid)
            assert time.monotonic() < deadline, log_path.read_text()
        kv.put(f"config/{name}/flag", "two")
        deadline = time.monotonic() + 10
        updated: set[int] = set()
        while updated != workers:
            for pid, flag in _flags(url, 10):
                if flag == "two":
                    updated.add(pid)
            assert time.monotonic() < deadline, (updated, workers, log_path.read_text())
            time.sleep(0.05)
        assert {flag for _, flag in _flags(url, 20)} == {"two"}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
