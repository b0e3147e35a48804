"""Finding the Consul binary: CONSUL_BIN, then PATH (new enough), then the cached pinned
build; otherwise an error that says how to get one (fake binaries: pure lookup logic)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from consul_discovery.testing.binary import (
    MINIMUM_VERSION,
    PINNED_VERSION,
    ConsulBinaryMissing,
    cached_build,
    find_consul,
)
from tests.harness.binary import REPO_ROOT


def fake_consul(directory: Path, version: str) -> Path:
    """An executable named consul that answers `consul version` like the real one."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "consul"
    path.write_text(f'#!/bin/sh\necho "Consul v{version}"\necho "Revision 0000000"\n')
    path.chmod(0o755)
    return path


def test_the_pinned_version_is_the_repository_pin() -> None:
    assert (REPO_ROOT / "consul" / "VERSION").read_text().strip() == PINNED_VERSION
    ensure = (REPO_ROOT / "consul" / "ensure-consul").read_text()
    assert f'minimum="{MINIMUM_VERSION}"' in ensure


def test_consul_bin_wins_and_must_be_executable(tmp_path: Path) -> None:
    binary = fake_consul(tmp_path / "bin", "1.20.0")
    on_path = fake_consul(tmp_path / "path", "1.22.3")
    env = {"CONSUL_BIN": str(binary), "PATH": str(on_path.parent), "HOME": str(tmp_path)}
    assert find_consul(env) == str(binary)

    plain = tmp_path / "not-executable"
    plain.write_text("")
    with pytest.raises(ConsulBinaryMissing, match=f"CONSUL_BIN={plain} is not an executable"):
        find_consul({**env, "CONSUL_BIN": str(plain)})


def test_a_consul_bin_that_is_not_consul_or_too_old_is_named(tmp_path: Path) -> None:
    """CONSUL_BIN=/bin/true started an 'agent' that exited 0 with an empty log."""
    env = {"CONSUL_BIN": "/bin/true", "HOME": str(tmp_path)}
    with pytest.raises(ConsulBinaryMissing, match="CONSUL_BIN=/bin/true does not answer `version`"):
        find_consul(env)
    old = fake_consul(tmp_path / "old", "1.16.2")
    with pytest.raises(
        ConsulBinaryMissing, match=f"is Consul 1.16.2, older than {MINIMUM_VERSION}"
    ):
        find_consul({**env, "CONSUL_BIN": str(old)})


def test_a_new_enough_consul_on_path_is_used(tmp_path: Path) -> None:
    on_path = fake_consul(tmp_path / "path", "1.17.0")
    assert find_consul({"PATH": str(on_path.parent), "HOME": str(tmp_path)}) == str(on_path)


def test_an_old_consul_on_path_gives_way_to_the_cached_build(tmp_path: Path) -> None:
    old = fake_consul(tmp_path / "path", "1.16.2")
    env = {"PATH": str(old.parent), "CONSUL_CACHE_DIR": str(tmp_path / "cache")}
    cached = cached_build(env)
    assert cached == tmp_path / "cache" / f"consul-{PINNED_VERSION}" / "consul"
    fake_consul(cached.parent, PINNED_VERSION)
    assert find_consul(env) == str(cached)


def test_the_cache_follows_xdg_cache_home(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    assert (
        cached_build(env) == tmp_path / "consul-discovery" / f"consul-{PINNED_VERSION}" / "consul"
    )


def test_no_consul_anywhere_says_how_to_get_one(tmp_path: Path) -> None:
    old = fake_consul(tmp_path / "path", "1.16.2")
    env = {"PATH": str(old.parent), "CONSUL_CACHE_DIR": str(tmp_path / "empty")}
    with pytest.raises(ConsulBinaryMissing) as caught:
        find_consul(env)
    message = str(caught.value)
    assert f"ignored {old}: version 1.16.2 < {MINIMUM_VERSION}" in message
    assert "CONSUL_BIN=" in message
    assert "make consul" in message
    assert str(tmp_path / "empty" / f"consul-{PINNED_VERSION}" / "consul") in message
    assert not os.path.exists(tmp_path / "empty")
