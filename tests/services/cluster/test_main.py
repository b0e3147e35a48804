"""`python -m services.cluster` with no cluster running: every command says how to start it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from services.cluster import control, orphans, supervisor_conf
from services.cluster.__main__ import main
from services.cluster.plan import REPO_ROOT, ClusterPlan
from tests.harness.waiting import wait_for


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


def test_output_into_a_reader_that_stops_early_is_quiet(tmp_path: Path) -> None:
    # `make logs | head -1`: the pipe closes after the first line; no BrokenPipeError trace
    # (any command: `run` catches it around `main`).
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


def _marked_sleeper(run_dir: Path) -> subprocess.Popen[bytes]:
    """A stand-in for a program a dead supervisord left running: it carries the mark."""
    env = {**os.environ, orphans.MARK: str(run_dir)}
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)


def test_the_supervisord_conf_marks_every_program_with_the_run_dir(tmp_path: Path) -> None:
    conf = supervisor_conf.render(ClusterPlan(run_dir=tmp_path), "consul")
    supervisord = conf.split("\n\n", 1)[0]
    assert f'environment={orphans.MARK}="{tmp_path}"' in supervisord.splitlines()


def test_down_after_supervisord_died_stops_what_it_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = _marked_sleeper(tmp_path)
    other = _marked_sleeper(tmp_path / "another-cluster")
    try:
        monkeypatch.setenv("PROFILE", "dev")
        monkeypatch.setenv("CLUSTER_RUN_DIR", str(tmp_path))
        wait_for(
            lambda: mine.pid in orphans.find(ClusterPlan(run_dir=tmp_path)),
            10,
            "the marked process to be found",
            interval=0.05,
        )
        assert other.pid not in orphans.find(ClusterPlan(run_dir=tmp_path))

        assert main(["status"]) == 3
        assert f"(PIDs {mine.pid}): `make stop-cluster` stops them" in capsys.readouterr().out
        with pytest.raises(control.ClusterError, match=f"PIDs {mine.pid}.*make stop-cluster"):
            control.up(ClusterPlan(run_dir=tmp_path))

        assert main(["down"]) == 0
        assert mine.wait(timeout=10) == -signal.SIGTERM
        assert "what its supervisord left running is stopped" in capsys.readouterr().out
        assert other.poll() is None  # another run dir's process is not touched
        assert main(["down"]) == 0
        assert capsys.readouterr().out.endswith("the cluster is not running\n")
    finally:
        for proc in (mine, other):
            proc.kill()
            proc.wait()


def test_the_secure_summary_names_the_profile_in_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.cluster.__main__ import _print_summary

    _print_summary(ClusterPlan(run_dir=tmp_path, profile="secure", mesh=True), [])
    hints = [line for line in capsys.readouterr().out.splitlines() if "make " in line]
    assert len(hints) == 3  # mesh, UI token, logs
    assert all("PROFILE=secure" in line for line in hints), hints


@pytest.mark.parametrize(("mesh", "noted"), [(False, True), (True, False)])
def test_intentions_outside_the_mesh_say_they_decide_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    mesh: bool,
    noted: bool,
) -> None:
    import consul_discovery.mesh.intentions_cli as cli

    ClusterPlan(run_dir=tmp_path, mesh=mesh).save()  # what `up` records
    monkeypatch.setenv("PROFILE", "dev")
    monkeypatch.delenv("MESH", raising=False)
    monkeypatch.setenv("CLUSTER_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(control, "require_running", lambda plan: 4242)
    monkeypatch.setattr(cli, "main", lambda words, conn: 0)
    assert main(["intentions", "deny", "gateway", "order-service"]) == 0
    err = capsys.readouterr().err
    assert ("not in the mesh" in err) is noted, err
    if noted:
        assert "`make stop-cluster`, then `make run-cluster MESH=1`" in err


def test_bad_intentions_words_get_the_make_targets_usage_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``make intentions ARGS=bogus`` printed only the usage of ``python -m
    consul_discovery.mesh intentions``, which a make user does not type."""
    ClusterPlan(run_dir=tmp_path, mesh=True, profile="secure").save()
    monkeypatch.setenv("PROFILE", "secure")
    monkeypatch.setenv("CLUSTER_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(control, "require_running", lambda plan: 4242)
    monkeypatch.setattr("services.cluster.secure.connection", lambda plan, role: None)
    with pytest.raises(SystemExit) as exited:
        main(["intentions", "bogus"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'bogus'" in err, err
    assert 'through make: make intentions PROFILE=secure [ARGS="list [DST]" | ARGS="allow' in err
