"""Everything a run produces: the printed table, latest.json and one PNG per benchmark."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.result import Chart, Result
from consul_discovery.client.table import format_table

REPO_ROOT = Path(__file__).resolve().parents[1]


def fmt(value: Any) -> str:
    """A table cell: floats to 3 significant figures (more digits left of the point kept)."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if math.isnan(value):
        return "nan"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as an aligned text table; columns in first-seen order, blanks where missing."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    cells = [[fmt(row.get(c, "")) for c in columns] for row in rows]
    numeric = [all(isinstance(row.get(c, 0), int | float) for row in rows) for c in columns]
    return format_table(columns, cells, right_aligned=numeric)


def render(results: Sequence[Result]) -> str:
    """Every benchmark's table, then every target with its figure and verdict."""
    parts = []
    for r in results:
        parts.append(f"== {r.title}  [{r.seconds:.0f} s]\n{table(r.rows)}")
        parts += [f"   note: {n}" for n in r.notes]
    checks = [
        {
            "benchmark": r.name,
            "target": c.name,
            "measured": c.value,
            "aim": c.target,
            "met": "yes" if c.met else "NO",
            **({"note": c.note} if c.note else {}),
        }
        for r in results
        for c in r.checks
    ]
    parts.append("== Targets\n" + table(checks))
    return "\n\n".join(parts)


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable ({exc})"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def environment() -> dict[str, Any]:
    """Machine, versions and date of this run."""
    from bench.haproxy import haproxy_binary
    from tests.harness.binary import consul_binary

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages = ("requests", "py-consul", "gunicorn", "flask", "matplotlib")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()},
        "versions": {
            "python": platform.python_version(),
            "consul": _version([consul_binary(), "version"]),
            "haproxy": _version([haproxy_binary(), "-v"]),
            **{p: metadata.version(p) for p in packages},
        },
        "commit": _version(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"]),
    }


def write_json(results: Sequence[Result], path: Path, env: dict[str, Any], size: str) -> None:
    """Write the run (environment, size, every result without its charts) as JSON."""
    body = {**env, "size": size, "benchmarks": {}}
    for r in results:
        data = dataclasses.asdict(r)
        data.pop("charts")
        body["benchmarks"][r.name] = data
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=2, allow_nan=True, default=str) + "\n")


def write_charts(results: Sequence[Result], outdir: Path) -> list[Path]:
    """One PNG per benchmark (a panel per chart); returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for r in results:
        if not r.charts:
            continue
        fig, axes = plt.subplots(1, len(r.charts), figsize=(7 * len(r.charts), 4.5), squeeze=False)
        for ax, chart in zip(axes[0], r.charts, strict=True):
            _draw(ax, chart)
        fig.suptitle(r.title, fontsize=10)
        fig.tight_layout()
        path = outdir / f"{r.name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _draw(ax: Any, chart: Chart) -> None:
    if chart.kind == "cdf":
        for name, samples in chart.series.items():
            ordered = sorted(samples)
            n = len(ordered)
            ax.step(ordered, [(i + 1) / n for i in range(n)], where="post", label=name)
        ax.set_xlabel(chart.ylabel)
        ax.set_ylabel("fraction")
    else:
        count = max(1, len(chart.series))
        width = 0.8 / count
        for k, (name, heights) in enumerate(chart.series.items()):
            xs = [i + (k - (count - 1) / 2) * width for i in range(len(heights))]
            ax.bar(xs, heights, width=width, label=name)
        ax.set_xticks(range(len(chart.labels)), chart.labels)
        ax.set_ylabel(chart.ylabel)
        if chart.log:
            ax.set_yscale("log")
    ax.set_title(chart.title, fontsize=9)
    ax.legend(fontsize=7)
