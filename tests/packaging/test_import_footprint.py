"""The core imports with no extra installed, and each integration needs only its own extra.

Each case runs ``footprint.py`` in a fresh interpreter that refuses every top-level
package an install of ``consul-discovery[<extras>]`` would not have (worked out from the
installed metadata: ``installed.py``), so this checks, in seconds and in the project's
venv, what ``test_wheel_install.py`` checks for real in fresh venvs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from consul_discovery.extras import EXTRAS, INTEGRATIONS, install_command
from tests.harness.binary import REPO_ROOT
from tests.packaging.installed import closure, extras_declared, import_names

FOOTPRINT = Path(__file__).with_name("footprint.py")

# Packages of the example platform that no library module may ever load.
PLATFORM_ONLY = {"fastapi", "starlette", "pydantic", "supervisor", "itsdangerous", "uvicorn"}


def allowed(extras: Iterable[str] = ()) -> set[str]:
    """Top-level import names present in an install of consul-discovery[extras]."""
    return set(import_names(closure(extras)))


def packages() -> list[str]:
    """The package's subpackages, as pyproject.toml lists them (an editable install maps
    each from its own folder)."""
    with (REPO_ROOT / "pyproject.toml").open("rb") as handle:
        return list(tomllib.load(handle)["tool"]["setuptools"]["packages"])


def footprint(extras: Iterable[str], *modules: str, core: bool = False) -> dict[str, Any]:
    """Import ``modules`` (and every core module with ``core``) as if only the core and
    ``extras`` were installed; what each import did and what got loaded."""
    names = allowed(extras)
    cmd = [sys.executable, "-I", str(FOOTPRINT), "--allow", ",".join(sorted(names))]
    if core:
        cmd += ["--core", "--packages", ",".join(packages())]
    out = subprocess.run(
        [*cmd, *modules],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=FOOTPRINT.parent,
    )
    report = json.loads(out.stdout)
    known = names | PLATFORM_ONLY | {top for e in EXTRAS for top in allowed([e])}
    report["packages"] = sorted(set(report["loaded"]) & known)  # drops C-extension internals
    return report


def failures(report: dict[str, Any]) -> dict[str, str]:
    return {name: r["message"] for name, r in report["results"].items() if not r["ok"]}


def test_core_distributions_are_only_what_the_core_needs() -> None:
    core = closure()
    assert core == {
        "certifi",
        "charset-normalizer",
        "idna",
        "py-consul",
        "requests",
        "tenacity",
        "urllib3",
    }, sorted(core)


def test_every_core_module_imports_with_no_extra_installed() -> None:
    report = footprint((), core=True)
    assert len(report["results"]) > 40, "the core module list looks wrong"
    assert failures(report) == {}, (
        "core modules must import with only the core's dependencies; move the import of "
        "an optional package into the function that needs it, or the module into an "
        "integration (consul_discovery.extras.INTEGRATIONS)"
    )
    assert set(report["packages"]) <= allowed(), report["packages"]


@pytest.mark.parametrize("module", sorted(INTEGRATIONS))
def test_an_integration_without_its_extra_names_the_extra(module: str) -> None:
    extra = INTEGRATIONS[module]
    result = footprint((), module)["results"][module]
    assert not result["ok"], f"{module} imported without {EXTRAS[extra]}"
    assert result["type"] == "ExtraMissingError", result
    assert result["extra"] == extra
    assert result["message"].startswith(f"{module} needs {EXTRAS[extra]}: ")
    assert install_command(extra) in result["message"]


@pytest.mark.parametrize("module", sorted(INTEGRATIONS))
def test_an_integration_needs_nothing_beyond_its_own_extra(module: str) -> None:
    extra = INTEGRATIONS[module]
    report = footprint([extra], module)
    assert failures(report) == {}
    assert set(report["packages"]) <= allowed([extra]) | allowed(["tracing", "prometheus"])


@pytest.mark.parametrize(
    "module", ["consul_discovery.registry.asgi", "consul_discovery.config.asgi"]
)
def test_the_asgi_integrations_load_no_web_framework(module: str) -> None:
    report = footprint([], module)  # the 'asgi' extra is empty: the core is enough
    assert failures(report) == {}
    loaded = set(report["packages"])
    assert not loaded & ((allowed(["flask"]) - allowed()) | PLATFORM_ONLY), sorted(loaded)


def test_the_extras_table_is_the_package_metadata() -> None:
    declared = extras_declared()
    assert set(EXTRAS) <= declared, sorted(set(EXTRAS) - declared)
    assert set(INTEGRATIONS.values()) <= set(EXTRAS)
    assert declared - set(EXTRAS) == {"asgi", "platform", "dev", "bench"}
    assert closure(["asgi"]) == closure(), "the plain ASGI integration must need nothing"
    for extra, package in EXTRAS.items():
        brought = {top.lower() for top in import_names(closure([extra]) - closure())}
        assert brought, f"the {extra!r} extra installs nothing ({package} expected)"
