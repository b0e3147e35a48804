"""`make bench-quick` in CI: every benchmark runs end to end at tiny size.

Real Consul, gunicorn backends and HAProxy; no timing assertions, only that every
benchmark finished and produced its rows, checks, JSON and chart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import BENCHMARKS

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_every_benchmark_runs_at_quick_size(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,  # a bound on a hang, not on speed: ~3 min alone, slower beside a worker
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    out = tmp_path / "quick"
    data = json.loads((out / "latest.json").read_text())
    assert data["size"] == "quick"
    assert set(data["benchmarks"]) == set(BENCHMARKS)
    for name, result in data["benchmarks"].items():
        assert result["rows"], name
        assert result["checks"], name
        assert (out / f"{name}.png").stat().st_size > 0, name
    assert "== Targets" in proc.stdout
