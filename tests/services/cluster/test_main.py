"""`python -m services.cluster` with no cluster running: every command says how to start it."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cluster.__main__ import main


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
