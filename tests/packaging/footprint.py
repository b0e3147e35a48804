"""Import consul_discovery modules and report what they loaded, as JSON (run as a script).

    python -I footprint.py [--allow NAME,NAME...] [--core [--packages P,P...]] MODULE...

``--allow`` simulates an install holding only those top-level packages (besides the
standard library and consul_discovery itself): importing anything else raises
ModuleNotFoundError, as in a venv without it. Without ``--allow`` nothing is refused (a
real venv). ``--core`` adds every core module (each module of the package that
``consul_discovery.extras.INTEGRATIONS`` does not list) to the modules to import; the
package's subpackages are ``--packages`` (an editable install maps them from folders of
their own, which no walk finds) or, by default, every package found under
``consul_discovery`` (an installed wheel).

Stand-alone on purpose (standard library and consul_discovery only): it runs in the
project's venv and in the fresh venvs of the install test.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.util
import json
import pkgutil
import sys
from collections.abc import Sequence


class Refuse(importlib.abc.MetaPathFinder):
    """Makes every top-level package outside ``allowed`` look absent."""

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed | set(sys.stdlib_module_names) | {"consul_discovery"}

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        """None (let the real finders look) for allowed names; refuse the rest."""
        if fullname.partition(".")[0] in self.allowed:
            return None
        raise ModuleNotFoundError(f"No module named {fullname!r} (refused)", name=fullname)


def installed_packages() -> list[str]:
    """``consul_discovery`` and every package under it, as a wheel installs them."""
    spec = importlib.util.find_spec("consul_discovery")
    assert spec is not None and spec.submodule_search_locations, "consul_discovery is missing"
    found = pkgutil.walk_packages(spec.submodule_search_locations, "consul_discovery.")
    return ["consul_discovery", *(info.name for info in found if info.ispkg)]


def package_modules(packages: Sequence[str]) -> list[str]:
    """Every module of ``packages``, found without importing any module of them."""
    names = []
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        names.append(package)
        for info in pkgutil.iter_modules(spec.submodule_search_locations):
            if not info.ispkg and info.name != "__main__":
                names.append(f"{package}.{info.name}")
    return names


def core_modules(packages: Sequence[str]) -> list[str]:
    """The package's modules that must import with the core's dependencies alone."""
    from consul_discovery.extras import INTEGRATIONS

    return [name for name in package_modules(packages) if name not in INTEGRATIONS]


def try_import(name: str) -> dict[str, object]:
    """Import ``name``; how it went, and the extra named by an ExtraMissingError."""
    try:
        importlib.import_module(name)
    except ImportError as exc:
        return {
            "ok": False,
            "type": type(exc).__name__,
            "message": str(exc),
            "extra": getattr(exc, "extra", None),
        }
    return {"ok": True}


def main(argv: Sequence[str] | None = None) -> int:
    """Import the modules asked for; print one JSON document on stdout."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--allow", default=None, help="comma list of top-level packages")
    parser.add_argument("--core", action="store_true", help="also import every core module")
    parser.add_argument("--packages", default=None, help="comma list of the subpackages")
    parser.add_argument("modules", nargs="*")
    args = parser.parse_args(argv)
    before = {name.partition(".")[0] for name in sys.modules}
    if args.allow is not None:
        sys.meta_path.insert(0, Refuse({n for n in args.allow.split(",") if n}))
    packages = args.packages.split(",") if args.packages else installed_packages()
    modules = [*(core_modules(packages) if args.core else []), *args.modules]
    results = {name: try_import(name) for name in modules}
    loaded = {name.partition(".")[0] for name in sys.modules} - before
    third_party = sorted(
        n for n in loaded if n not in sys.stdlib_module_names and n != "consul_discovery"
    )
    json.dump({"results": results, "loaded": third_party}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
