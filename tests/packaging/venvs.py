"""Fresh virtual environments for the install tests: create, pip install, run, measure.

pip reaches only the package registry (its cache is fine); nothing here starts a server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

# What `pip install .` brought before the extras, measured with `Venv.footprint` on
# commit e596383 (every dependency in the core list) in a fresh python3.11 venv.
BEFORE_DISTRIBUTIONS = 35
BEFORE_MEGABYTES = 35.8

# The venv's own tools and the user's toy project are not part of an install's footprint.
NOT_COUNTED = {"pip", "setuptools", "wheel", "toy-shop"}


@dataclass(frozen=True)
class Footprint:
    """Distributions installed in a venv (besides pip/setuptools/the toy) and their size."""

    distributions: tuple[str, ...]
    megabytes: float

    def line(self, what: str) -> str:
        """One line for the test output."""
        return f"{what}: {len(self.distributions)} distributions, {self.megabytes:.1f} MB"


_MEASURE = textwrap.dedent(
    """
    import json, os
    from importlib import metadata
    skip = set(json.loads(os.environ["NOT_COUNTED"]))
    names, total = [], 0
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name.lower() in skip:
            continue
        names.append(name)
        for file in dist.files or []:
            try:
                total += os.path.getsize(dist.locate_file(file))
            except OSError:
                pass
    print(json.dumps({"names": sorted(names, key=str.lower), "bytes": total}))
    """
)


@dataclass(frozen=True)
class Venv:
    """One virtual environment under ``path``, driven through its own interpreter."""

    path: Path

    @classmethod
    def create(cls, path: Path) -> Venv:
        """A new venv (with pip) made from the interpreter running the tests."""
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
        return cls(path)

    @property
    def python(self) -> str:
        """The venv's interpreter."""
        return str(self.path / "bin" / "python")

    def bin(self, name: str) -> Path:
        """A console script installed into the venv."""
        return self.path / "bin" / name

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment for the venv's processes (no project paths leak in)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTEST_ADDOPTS")
        }
        env["PATH"] = f"{self.path / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        env.update(extra)
        return env

    def pip(self, *args: str, timeout: float = 600) -> str:
        """Run ``pip`` in the venv; fail with its output when it fails."""
        result = subprocess.run(
            [self.python, "-m", "pip", "--no-input", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            check=False,
        )
        assert result.returncode == 0, (
            f"pip {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
        return result.stdout

    def run(
        self, *args: str, cwd: Path, timeout: float = 120, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run a command with the venv first on PATH (``python`` is the venv's)."""
        cmd = [self.python if args[0] == "python" else args[0], *args[1:]]
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env=self.env(**env),
            check=False,
        )

    def python_ok(self, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        """Run ``code`` in isolated mode (-I: no current dir on sys.path)."""
        return self.run("python", "-I", "-c", textwrap.dedent(code), cwd=cwd)

    def footprint(self, cwd: Path) -> Footprint:
        """What is installed, measured by the files each distribution's RECORD lists."""
        out = self.run(
            "python", "-I", "-c", _MEASURE, cwd=cwd, NOT_COUNTED=json.dumps(sorted(NOT_COUNTED))
        )
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        return Footprint(tuple(data["names"]), round(data["bytes"] / 1e6, 1))

    def dist_files(self, dist: str, cwd: Path) -> dict[str, str]:
        """Path (relative to site-packages) -> sha256 of each file ``dist`` installed."""
        code = f"""
            import hashlib, json
            from importlib import metadata
            files = {{}}
            for f in metadata.distribution({dist!r}).files or []:
                path = f.locate()
                if path.is_file() and "__pycache__" not in f.parts:
                    files[str(f)] = hashlib.sha256(path.read_bytes()).hexdigest()
            print(json.dumps(files))
        """
        out = self.python_ok(code, cwd)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)
