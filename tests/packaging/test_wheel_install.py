"""The built wheel, installed as a user would: next to a project with its own `services`
and `registry` packages, with only the core, then extra by extra; and the README's quick
start as written, in a fresh venv with only the extras it names: two services of the
user's own (Flask under gunicorn, FastAPI under uvicorn) register with a real agent,
call each other by name, and deregister on SIGTERM.

pip reaches only the package registry (its cache is fine). The wheel is built once per
session; each test gets a fresh venv.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import requests

import consul_discovery
from consul_discovery.extras import INTEGRATIONS, install_command
from consul_discovery.testing import ConsulAgent
from tests.docs.blocks import Block, in_section, steps
from tests.docs.session import DocSession
from tests.harness.binary import REPO_ROOT
from tests.packaging.venvs import BEFORE_DISTRIBUTIONS, BEFORE_MEGABYTES, Venv
from tests.testing.test_readme_example import plugin_example

pytestmark = pytest.mark.slow

TOY = Path(__file__).with_name("toy_project")
FOOTPRINT = Path(__file__).with_name("footprint.py")
CORE = [
    "certifi",
    "charset-normalizer",
    "consul-discovery",
    "idna",
    "py-consul",
    "requests",
    "tenacity",
    "urllib3",
]


def build_wheel(source: Path, out: Path, *flags: str) -> Path:
    """``python -m build`` ``source`` into ``out``; the one wheel it made."""
    build = subprocess.run(
        [sys.executable, "-m", "build", *flags, "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert build.returncode == 0, f"python -m build failed:\n{build.stdout}\n{build.stderr}"
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout (sdist first, then the wheel from it)."""
    return build_wheel(REPO_ROOT, tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def toy_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's toy project, built into a wheel of its own."""
    source = tmp_path_factory.mktemp("toy") / "toy_project"
    shutil.copytree(TOY, source, ignore=shutil.ignore_patterns("__pycache__"))
    return build_wheel(source, tmp_path_factory.mktemp("toy-dist"), "--wheel")


@pytest.fixture
def shop(toy_wheel: Path, tmp_path: Path) -> tuple[Venv, Path]:
    """A fresh venv holding the user's toy project (a real distribution owning the
    top-level `services` and `registry`), and a neutral working directory."""
    venv = Venv.create(tmp_path / "venv")
    venv.pip("install", "--no-deps", str(toy_wheel))
    work = tmp_path / "work"
    work.mkdir()
    return venv, work


def check(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"{result.args}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


def toy_intact(venv: Venv, work: Path, files: dict[str, str]) -> None:
    """The toy's files are all there, unchanged, and its packages import as its own."""
    assert venv.dist_files("toy-shop", work) == files
    check(
        venv.python_ok(
            """
        import registry, services
        assert services.OWNER == registry.OWNER == "toy-shop", (services, registry)
        assert registry.CATEGORIES == ("fruit", "tools")
        """,
            work,
        )
    )


def test_wheel_metadata(wheel: Path) -> None:
    check(
        subprocess.run(
            [sys.executable, "-m", "twine", "check", "--strict", str(wheel)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    )
    assert wheel.name == f"consul_discovery-{consul_discovery.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = f"consul_discovery-{consul_discovery.__version__}.dist-info"
        metadata = archive.read(f"{dist_info}/METADATA").decode()
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"consul_discovery", dist_info}, tops
    required = ["py.typed", "testing/dev.hcl", "testing/server.hcl"]
    for name in [*(f"consul_discovery/{r}" for r in required), f"{dist_info}/licenses/LICENSE"]:
        assert name in names
    assert "License-Expression: Apache-2.0" in metadata
    assert "Description-Content-Type: text/markdown" in metadata
    assert "## Install" in metadata  # the README is the long description
    assert "Project-URL" not in metadata  # no invented hosts
    assert "consul-discovery = consul_discovery.client.cli:main" in entry_points
    assert "consul-config = consul_discovery.config.cli:main" in entry_points
    assert "pytest11" not in entry_points  # the plugin is opt-in


def test_core_install_is_lean_and_leaves_the_users_packages_alone(
    wheel: Path, shop: tuple[Venv, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    venv, work = shop
    toy_files = venv.dist_files("toy-shop", work)
    assert {f.split("/")[0] for f in toy_files} >= {"services", "registry"}

    venv.pip("install", str(wheel))
    toy_intact(venv, work, toy_files)
    installed = venv.dist_files("consul-discovery", work)
    outside = {f for f in installed if not f.startswith(("consul_discovery/", "consul_discovery-"))}
    assert outside == {"../../../bin/consul-discovery", "../../../bin/consul-config"}, outside

    core = venv.footprint(work)
    with capsys.disabled():
        print(f"\n  {core.line('core install')}: {', '.join(core.distributions)}")
        print(
            f"  before the extras, every install: {BEFORE_DISTRIBUTIONS} distributions, "
            f"{BEFORE_MEGABYTES:.1f} MB"
        )
    assert [d.lower() for d in core.distributions] == CORE
    assert core.megabytes < BEFORE_MEGABYTES / 4

    # Every core module imports with no extra installed at all, and loads none.
    report = json.loads(check(venv.run("python", "-I", str(FOOTPRINT), "--core", cwd=work)))
    broken = {name: r["message"] for name, r in report["results"].items() if not r["ok"]}
    assert broken == {}
    # Each integration names the extra it needs.
    report = json.loads(check(venv.run("python", "-I", str(FOOTPRINT), *INTEGRATIONS, cwd=work)))
    for module, extra in INTEGRATIONS.items():
        result = report["results"][module]
        assert result["type"] == "ExtraMissingError", (module, result)
        assert install_command(extra) in result["message"], result
    check(
        venv.python_ok(
            """
        from consul_discovery.config.errors import ConfigValueError
        from consul_discovery.config.layers import parse_document
        doc = '{"retry": {"budget": 0.2}}'
        assert parse_document("config/a/data", doc) == {"retry.budget": 0.2}
        try:
            parse_document("config/a/data", "retry: {budget: 0.2}")
        except ConfigValueError as exc:
            assert "pip install 'consul-discovery[yaml]'" in str(exc), exc
        else:
            raise AssertionError("YAML parsed without PyYAML")
        """,
            work,
        )
    )
    check(
        venv.python_ok(  # the registry registers without prometheus_client, publishing nothing
            """
        from consul_discovery.registry.metrics import PROMETHEUS, RegistrarMetrics
        assert not PROMETHEUS
        metrics = RegistrarMetrics(registrar=None)
        assert metrics.start() is metrics and not metrics.enabled
        metrics.stop()
        """,
            work,
        )
    )
    for script in ("consul-discovery", "consul-config"):
        assert "usage:" in check(venv.run(str(venv.bin(script)), "--help", cwd=work))

    venv.pip("uninstall", "--yes", "consul-discovery")
    toy_intact(venv, work, toy_files)
    gone = venv.python_ok("import consul_discovery", work)
    assert gone.returncode != 0 and "No module named 'consul_discovery'" in gone.stderr


# extra -> a check that passes only once the extra is installed (python code, or a command)
EXTRA_CHECKS: list[tuple[str, str | list[str]]] = [
    (
        "asgi",
        """
        import sys
        import consul_discovery.config.asgi, consul_discovery.registry.asgi
        assert not {"flask", "starlette", "fastapi"} & set(sys.modules), sorted(sys.modules)
     """,
    ),
    ("flask", "import consul_discovery.registry.flask, consul_discovery.config.flask"),
    (
        "httpx",
        """
        import consul_discovery.client.aio, consul_discovery.client.httpx_pools
        from consul_discovery.client import AsyncDiscoveryTransport, DiscoveryTransport
     """,
    ),
    (
        "prometheus",
        """
        import consul_discovery.client.metrics
        from consul_discovery.registry import metrics
        assert metrics.PROMETHEUS
     """,
    ),
    (
        "yaml",
        """
        from consul_discovery.config.layers import parse_document
        assert parse_document("k", "retry: {budget: 0.2}") == {"retry.budget": 0.2}
     """,
    ),
    (
        "tracing",
        """
        from consul_discovery.client import propagation
        assert propagation._otel_propagate is not None
     """,
    ),
    ("gunicorn", ["gunicorn", "--version"]),
    ("uvicorn", ["uvicorn", "--version"]),
    ("testing", "import consul_discovery.pytest_plugin"),
]


def run_check(venv: Venv, work: Path, what: str | list[str]) -> subprocess.CompletedProcess[str]:
    if isinstance(what, str):
        return venv.python_ok(what, work)
    path = venv.bin(what[0])
    if not path.exists():
        return subprocess.CompletedProcess(what, 127, "", f"{path} is not installed")
    return venv.run(str(path), *what[1:], cwd=work)


def test_each_extra_brings_its_integration_and_the_installed_plugin_runs(
    wheel: Path,
    shop: tuple[Venv, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    venv, work = shop
    toy_files = venv.dist_files("toy-shop", work)
    venv.pip("install", str(wheel))
    for extra, what in EXTRA_CHECKS:
        before = run_check(venv, work, what)
        assert (before.returncode == 0) == (extra == "asgi"), (extra, before.stderr)
        venv.pip("install", f"{wheel}[{extra}]")
        check(run_check(venv, work, what))
    everything = venv.footprint(work)
    with capsys.disabled():
        print(f"\n  {everything.line('core + every extra but platform')}")
    toy_intact(venv, work, toy_files)

    # The README's plugin example, run by the installed plugin (its agent configs come
    # from the wheel).
    (work / "test_stock.py").write_text(plugin_example())
    result = venv.run(
        "python",
        "-m",
        "pytest",
        "-p",
        "consul_discovery.pytest_plugin",
        "-q",
        "test_stock.py",
        cwd=work,
        timeout=180,
    )
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr


#: The README section the quick-start test runs, as written.
QUICK_START = "Quick start: two services of your own"


def test_the_readme_quick_start_runs_in_a_fresh_venv_with_only_its_extras(
    wheel: Path,
    shop: tuple[Venv, Path],
    consul_agent: ConsulAgent,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The top-level README's quick start, block by block, in a fresh venv next to the
    toy project: its ``pip install`` lines (the built wheel standing in for
    consul-discovery, so only the extras it names), its two files, its gunicorn and
    uvicorn commands (served until the end, registered as passing), its CLI calls by
    name; then every gunicorn worker answers through a client made in that worker, and
    on SIGTERM both services drain and deregister (``DocSession.close`` checks)."""
    venv, work = shop
    toy_files = venv.dist_files("toy-shop", work)
    quick_start = in_section(steps(REPO_ROOT / "README.md"), QUICK_START)
    kinds = {step.action for step in quick_start if isinstance(step, Block)}
    assert {"install", "file", "serve", "run"} <= kinds, kinds
    session = DocSession(consul_agent, work, bin_dir=venv.path / "bin", wheel=wheel)
    try:
        session.run(quick_start)
        assert [b.where for b, _ in session.not_run] == [], session.not_run  # all of it ran
        orders = session.ports[8001]
        workers = set()
        for _ in range(10):  # Flask -> FastAPI by name, through each worker's own client
            answer = requests.get(f"http://127.0.0.1:{orders}/orders/apple", timeout=10)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["in_stock"] is True and body["item"] == "apple"
            assert body["client"] == body["worker"]  # made in the worker, after the fork
            workers.add(body["worker"])
        stock = session.ports[8002]  # FastAPI -> Flask -> FastAPI, the async transport
        answer = requests.get(f"http://127.0.0.1:{stock}/reorder/pear", timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["orders"]["in_stock"] is True
    finally:
        session.close()
        with capsys.disabled():
            ran = ", ".join(b.where for b in session.ran)
            print(f"\n  quick start: ran {len(session.ran)} block(s): {ran}")
    toy_intact(venv, work, toy_files)
