"""The built wheel, installed as a user would: next to a project with its own `services`
and `registry` packages, with only the core, then extra by extra; then two services of
the user's own (Flask under gunicorn, FastAPI under uvicorn, written as the quick start
shows) register with a real agent, call each other by name, and deregister on SIGTERM.

pip reaches only the package registry (its cache is fine). The wheel is built once per
session; each test gets a fresh venv.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

import consul_discovery
from consul_discovery.extras import INTEGRATIONS, install_command
from consul_discovery.testing import ConsulAgent, free_port
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


def wait_until(done: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = done()
        except requests.RequestException:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_each_extra_brings_its_integration_and_two_user_services_call_each_other(
    wheel: Path,
    shop: tuple[Venv, Path],
    consul_agent: ConsulAgent,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
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

    venv.pip("install", "fastapi")  # the FastAPI service's own framework
    run_user_services(venv, work, consul_agent, tmp_path)


def run_user_services(venv: Venv, work: Path, agent: ConsulAgent, logs: Path) -> None:
    """orders (Flask, gunicorn, 2 workers) and stock (FastAPI, uvicorn) from the toy
    project, registered with ``agent``, calling each other by name; SIGTERM deregisters."""
    orders_port, stock_port = free_port(), free_port()
    common = {
        "CONSUL_HTTP_ADDR": agent.address,
        "SERVICE_ADDRESS": "127.0.0.1",
        "SERVICE_CHECK_INTERVAL": "1s",
        "SERVICE_DRAIN_SECONDS": "1",
    }
    commands = {
        "orders": (
            [
                str(venv.bin("gunicorn")),
                "-c",
                "python:consul_discovery.registry.gunicorn_conf",
                "--workers",
                "2",
                "services.orders:create_app()",
            ],
            {**common, "SERVICE_NAME": "orders", "SERVICE_PORT": str(orders_port)},
        ),
        "stock": (
            [
                str(venv.bin("uvicorn")),
                "services.stock:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(stock_port),
            ],
            {**common, "SERVICE_NAME": "stock", "SERVICE_PORT": str(stock_port)},
        ),
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, (cmd, env) in commands.items():
            with open(logs / f"{name}.log", "wb") as log:
                processes[name] = subprocess.Popen(
                    cmd,
                    cwd=work,
                    env=venv.env(**env),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

        def passing(service: str) -> list[dict[str, Any]]:
            for name, process in processes.items():
                assert process.poll() is None, f"{name} exited:\n{tail(logs / f'{name}.log')}"
            url = f"{agent.url}/v1/health/service/{service}?passing=true"
            return requests.get(url, timeout=5).json()

        for service in ("orders", "stock"):
            wait_until(lambda s=service: passing(s), f"{service} passing in Consul", 60)
        assert passing("orders")[0]["Service"]["Port"] == orders_port
        assert passing("stock")[0]["Service"]["Port"] == stock_port

        # Flask -> FastAPI by name, through each gunicorn worker's own ServiceClient.
        for _ in range(10):
            answer = requests.get(f"http://127.0.0.1:{orders_port}/orders/apple", timeout=10)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["in_stock"] is True and body["item"] == "apple"
            assert body["client_created_in"] == body["worker"]  # made after the fork
        # FastAPI -> Flask -> FastAPI by name, through the async httpx transport.
        answer = requests.get(f"http://127.0.0.1:{stock_port}/reorder/pear", timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["orders"]["in_stock"] is True

        for process in processes.values():
            os.kill(process.pid, signal.SIGTERM)
        for name, process in processes.items():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} did not stop on SIGTERM:\n{tail(logs / f'{name}.log')}")
        for service in ("orders", "stock"):
            url = f"{agent.url}/v1/catalog/service/{service}"
            assert requests.get(url, timeout=5).json() == [], f"{service} still registered"
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: gunicorn's workers too
                process.wait(timeout=10)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
