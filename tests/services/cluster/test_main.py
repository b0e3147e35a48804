"""`python -m services.cluster` with no cluster running: every command says how to start it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.cluster.__main__ import main
from services.cluster.plan import REPO_ROOT


@pytest.mark.parametrize(
    ("profile", "argv", "start"),
    [
        ("dev", ["demo"], "`make run-cluster`"),
        ("dev", ["intentions", "list"], "`make run-cluster`"),
        ("dev", ["rolling-restart", "order-service"], "`make run-cluster`"),
        ("secure", ["demo"], "`make run-cluster PROFILE=secure`"),
        ("secure", ["intentions", "list"], "`make run-cluster PROFILE=secure`"),
    ],
)
def test_a_command_on_a_stopped_cluster_says_how_to_start_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    profile: str,
    argv: list[str],
    start: str,
) -> None:
    monkeypatch.setenv("PROFILE", profile)
    monkeypatch.setenv("CLUSTER_RUN_DIR", str(tmp_path))
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == f"error: the cluster is not running; start it with {start}\n"


def test_status_on_a_stopped_cluster_names_the_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROFILE", "secure")
    monkeypatch.setenv("CLUSTER_RUN_DIR", str(tmp_path))
    assert main(["status"]) == 3
    out = capsys.readouterr().out
    assert out == "the cluster is not running (make run-cluster PROFILE=secure starts it)\n"


def test_logs_into_a_reader_that_stops_early_is_quiet(tmp_path: Path) -> None:
    # `make logs | head -1`: the pipe closes after the first line; no BrokenPipeError trace.
    (tmp_path / "logs").mkdir()
    for name in ("a", "b", "c"):
        (tmp_path / "logs" / f"{name}.log").write_text("x" * 200 + "\n" * 5000)
    env = {**os.environ, "PROFILE": "dev", "CLUSTER_RUN_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cluster", "logs", "-n", "5000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO_ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"==> a.log <==\n"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 0, err
    assert err == ""
