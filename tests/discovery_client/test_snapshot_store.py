"""SnapshotStore: atomic, private, versioned, aged files of last known instances."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from consul_discovery.client import snapshot_store
from consul_discovery.client.instance import Instance
from consul_discovery.client.snapshot_store import (
    DEFAULT_MAX_AGE,
    MAX_CLOCK_SKEW,
    Snapshot,
    SnapshotError,
    SnapshotStore,
)

KEY = 'user-service|tag=|dc=|filter=Service.Meta.version == "1"'
INSTANCES = (
    Instance(
        "user-1", "user-service", "10.0.0.1", 8101, tags=("v1",), meta={"zone": "a"},
        weight_passing=10, weight_warning=1, health="passing", node="n1", datacenter="dc1",
    ),
    Instance("user-2", "user-service", "::1", 8102, health="warning", maintenance=False),
)  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> SnapshotStore:
    return SnapshotStore(tmp_path / "snapshots", max_age=3600, clock=clock)


def test_save_then_load_gives_the_same_instances_with_their_age(store, clock):
    store.save("user-service", KEY, 42, INSTANCES)
    clock.now += 90
    snap = store.load("user-service", KEY)
    assert isinstance(snap, Snapshot)
    assert snap.instances == INSTANCES and snap.index == 42
    assert snap.age(clock.now) == 90
    assert snap.instances[0].meta["zone"] == "a" and snap.instances[0].tags == ("v1",)


def test_files_and_directory_are_private_and_hold_no_half_written_state(store):
    path = store.save("user-service", KEY, 1, INSTANCES)
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in store.directory.iterdir()] == [path.name]  # no temp file left


def test_a_save_replaces_the_file_whole(store, clock):
    store.save("user-service", KEY, 1, INSTANCES)
    clock.now += 5
    store.save("user-service", KEY, 2, INSTANCES[:1])
    snap = store.load("user-service", KEY)
    assert snap is not None and snap.index == 2 and snap.instances == INSTANCES[:1]


def test_a_failed_write_leaves_the_old_file_and_no_temp(store, monkeypatch):
    path = store.save("user-service", KEY, 1, INSTANCES)
    before = path.read_bytes()

    def broken_dump(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshot_store.json, "dump", broken_dump)
    with pytest.raises(OSError, match="No space"):
        store.save("user-service", KEY, 2, INSTANCES)
    assert path.read_bytes() == before
    assert [p.name for p in store.directory.iterdir()] == [path.name]


def test_never_older_than_max_age_nor_from_the_future(store, clock):
    store.save("user-service", KEY, 1, INSTANCES)
    clock.now += 3600
    assert store.load("user-service", KEY) is not None
    clock.now += 1
    assert store.load("user-service", KEY) is None
    assert "3601s old (max_age 3600s)" in store.last_rejection
    store.save("user-service", KEY, 1, INSTANCES)
    clock.now -= MAX_CLOCK_SKEW + 10  # the wall clock went back
    assert store.load("user-service", KEY) is None
    assert "in the future" in store.last_rejection


def test_the_default_limit_is_documented_and_checked(tmp_path):
    assert DEFAULT_MAX_AGE == 24 * 3600
    assert SnapshotStore(tmp_path).max_age == DEFAULT_MAX_AGE
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="max_age"):
            SnapshotStore(tmp_path, max_age=bad)


def test_missing_snapshot_is_none_with_a_reason(store):
    assert store.load("user-service", KEY) is None
    assert "no snapshot for 'user-service'" in store.last_rejection


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda body: body.update(version=2), "has version 2, not 1"),
        (lambda body: body.update(format="other"), "is not a consul-discovery-snapshot file"),
        (lambda body: body.update(key="another"), "belongs to another target"),
        (lambda body: body.pop("saved_at"), "malformed"),
        (lambda body: body["instances"][0].update(port=70000), "bad port"),
        (lambda body: body["instances"][0].update(health="sick"), "unknown health"),
        (lambda body: body["instances"][0].pop("address"), "malformed"),
        (lambda body: body.update(instances=["x"]), "malformed"),
        # A file edited or written by something else: refused here, not in a pick or call.
        (lambda body: body.update(saved_at=float("nan")), "is not a time"),
        (lambda body: body["instances"][0].update(weight_passing="10"), "bad weight_passing"),
        (lambda body: body["instances"][0].update(weight_warning=-1), "bad weight_warning"),
        (lambda body: body["instances"][0].update(address=10), "address must be a string"),
        (lambda body: body["instances"][0].update(port=True), "bad port"),
        (lambda body: body["instances"][0].update(tags="v1"), "tags must be a list"),
        (lambda body: body["instances"][0].update(meta={"zone": 1}), "meta must be an object"),
        (lambda body: body["instances"][0].update(maintenance="false"), "maintenance must be"),
    ],
)
def test_other_versions_and_bad_content_are_never_half_used(store, edit, fragment):
    path = store.save("user-service", KEY, 1, INSTANCES)
    body = json.loads(path.read_text())
    edit(body)
    path.write_text(json.dumps(body))
    assert store.load("user-service", KEY) is None
    assert fragment in store.last_rejection


def test_garbage_is_rejected(store):
    path = store.save("user-service", KEY, 1, INSTANCES)
    path.write_text('{"format": "consul-discovery-snap')
    assert store.load("user-service", KEY) is None
    assert "unreadable" in store.last_rejection


def test_a_file_others_may_read_or_write_is_refused(store):
    path = store.save("user-service", KEY, 1, INSTANCES)
    os.chmod(path, 0o644)
    with pytest.raises(SnapshotError, match="may be read by others"):
        store.load("user-service", KEY)
    os.chmod(path, 0o620)
    with pytest.raises(SnapshotError, match="may be written by others"):
        store.load("user-service", KEY)


def test_a_shared_directory_is_refused(tmp_path, clock):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    store = SnapshotStore(shared, clock=clock)
    with pytest.raises(SnapshotError, match=f"snapshot directory {shared} may be written"):
        store.save("user-service", KEY, 1, INSTANCES)


def test_a_file_owned_by_someone_else_is_refused(store, monkeypatch):
    store.save("user-service", KEY, 1, INSTANCES)
    real_uid = os.getuid()
    monkeypatch.setattr(snapshot_store.os, "getuid", lambda: real_uid + 4242)
    with pytest.raises(SnapshotError, match="not by us"):
        store.load("user-service", KEY)


def test_file_names_are_safe_and_distinct_per_target(store):
    evil = store.path_for("../../etc/passwd", KEY)
    assert evil.parent == store.directory and "/" not in evil.name
    assert store.path_for("user-service", KEY) != store.path_for("user-service", KEY + "x")


def test_nothing_but_instance_fields_is_stored(store):
    path = store.save("user-service", KEY, 1, INSTANCES)
    body = json.loads(path.read_text())
    assert set(body) == {"format", "version", "service", "key", "saved_at", "index", "instances"}
    assert set(body["instances"][0]) == set(snapshot_store._FIELDS)
