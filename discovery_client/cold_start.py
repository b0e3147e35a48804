"""Cold start without Consul: the sources' use of ``snapshot_store`` (opt-in).

``ColdStart`` is what a source's ``WatchTable`` holds when snapshots are on
(a source's ``snapshots=`` directory, or ``DISCOVERY_SNAPSHOT_DIR`` for every client):

- **Written after each new live Resolution**, off the watch's path: ``saved`` hands it
  to ``SnapshotWriter``, one daemon thread that coalesces by target and writes each
  target at most once per ``min_interval`` (1 s), so a flapping service costs one fsync
  a second at most and an unchanged poll none (the watch only emits changes). Stale
  marks and snapshots themselves are never written back.
- **Used only at start**: ``load`` is asked only when a target has no live value yet
  and its first resolve failed because Consul cannot be reached
  (``ConsulUnavailableError``, or no answer within the resolve's timeout). It returns a
  Resolution with ``from_snapshot`` and ``stale`` set, ``error`` saying so and why,
  and ``fetched_at`` back-dated to the save so ``age()`` is the snapshot's age. A file
  older than the store's ``max_age`` (24 h by default, ``DISCOVERY_SNAPSHOT_MAX_AGE``)
  is never used. Once loaded it is kept in memory (one disk read per target) and
  served, whatever the watch's later errors, until...
- **the first live answer replaces it** (``live``): the watch publishes its first
  value as for any target, listeners hear it, and the snapshot is forgotten; the watch
  was told of the snapshot (``pin``), so self-preservation holds its instances that
  Consul's first answer after the outage forgot (an agent restarted empty).

Instances served from a snapshot are a process's last-known-good set like any stale
set: once loaded they are used until Consul answers (the age limit applies when the
file is read).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from consul_discovery.client.instance import Resolution
from consul_discovery.client.snapshot_store import (
    DEFAULT_MAX_AGE,
    SnapshotError,
    SnapshotStore,
)
from consul_discovery.client.source import WatchKey
from consul_discovery.connection.durations import duration_seconds

log = logging.getLogger(__name__)

SNAPSHOT_DIR_ENV = "DISCOVERY_SNAPSHOT_DIR"
SNAPSHOT_MAX_AGE_ENV = "DISCOVERY_SNAPSHOT_MAX_AGE"


def store_from_env(environ: Mapping[str, str] | None = None) -> SnapshotStore | None:
    """The store ``DISCOVERY_SNAPSHOT_DIR`` names (None: snapshots off), with the
    duration ``DISCOVERY_SNAPSHOT_MAX_AGE`` ("12h", "3600") as its limit (default 24 h)."""
    env = os.environ if environ is None else environ
    directory = env.get(SNAPSHOT_DIR_ENV, "").strip()
    if not directory:
        return None
    raw = env.get(SNAPSHOT_MAX_AGE_ENV, "").strip()
    try:
        max_age = duration_seconds(raw, positive=True) if raw else DEFAULT_MAX_AGE
    except ValueError as exc:
        raise ValueError(f"{SNAPSHOT_MAX_AGE_ENV}: {exc}") from None
    return SnapshotStore(directory, max_age=max_age)


#: Target fields added after snapshots were first written: left out of a key while they
#: hold their default, so the files of Targets that do not use them keep their names.
_LATER_FIELDS = {"only_passing": False, "prepared_query": None}


def target_key(key: WatchKey) -> str:
    """The file key of a watch: every Target field (what selects the instances)."""
    fields = dataclasses.asdict(key.target)
    for name, default in _LATER_FIELDS.items():
        if fields.get(name) == default:
            del fields[name]
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


class SnapshotWriter:
    """Writes Resolutions to a store from one daemon thread, coalesced and rate-bounded.

    ``submit`` never blocks on disk (it is called from watch threads and event loops);
    ``flush`` writes what is pending now (``close`` calls it). A store that refuses to
    write (``SnapshotError``: not private) is reported once and writing stops.
    """

    def __init__(
        self,
        store: SnapshotStore,
        *,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._min_interval = min_interval
        self._clock = clock
        self._lock = threading.Condition()  # replaced in a forked child
        self._pending: dict[str, tuple[Resolution, float]] = {}  # under _lock: key -> due
        self._last: dict[str, float] = {}  # under _lock: key -> when last written
        self._thread: threading.Thread | None = None  # started by submit, under _lock
        self._closed = False  # under _lock
        self._broken = False  # written by the writer thread; no more writes once set
        self.writes = 0  # writer thread only (read by tests and stats): files written

    def submit(self, key: str, resolution: Resolution) -> None:
        """Save ``resolution`` as ``key``'s snapshot soon (the latest one wins)."""
        with self._lock:
            if self._closed or self._broken:
                return
            due = max(self._clock(), self._last.get(key, float("-inf")) + self._min_interval)
            self._pending[key] = (resolution, due)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="discovery-snapshots", daemon=True
                )
                self._thread.start()
            self._lock.notify()

    def flush(self) -> None:
        """Write every pending snapshot now, on the caller's thread."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for key, (resolution, _due) in pending.items():
            self._write(key, resolution)

    def close(self, timeout: float = 2.0) -> None:
        """Write what is pending and stop the thread (bounded by ``timeout``)."""
        with self._lock:
            self._closed = True
            self._lock.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.flush()

    def after_fork(self) -> None:
        """In a forked child: the parent's thread is gone; start afresh (no I/O)."""
        self._lock = threading.Condition()
        self._thread = None

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._ready():
                    self._lock.wait(self._wait())
                if self._closed:
                    return
                now = self._clock()
                ready = {k: v for k, v in self._pending.items() if v[1] <= now}
                for key in ready:
                    del self._pending[key]
                    self._last[key] = now
            for key, (resolution, _due) in ready.items():
                self._write(key, resolution)

    def _ready(self) -> bool:
        now = self._clock()
        return any(due <= now for _r, due in self._pending.values())

    def _wait(self) -> float | None:
        if not self._pending:
            return None
        return max(0.0, min(due for _r, due in self._pending.values()) - self._clock())

    def _write(self, key: str, resolution: Resolution) -> None:
        if self._broken:
            return
        try:
            self.store.save(resolution.service, key, resolution.index, resolution.instances)
            self.writes += 1
        except SnapshotError as exc:
            with self._lock:  # the thread and a flush may both fail: report once
                reported, self._broken = self._broken, True
            if not reported:
                log.error("discovery snapshots off: %s", exc)
        except OSError as exc:
            log.warning("could not save the snapshot of %s: %s", resolution.service, exc)


@dataclass(frozen=True, slots=True)
class Loaded:
    """A snapshot in use for one target: its Resolution and its age when loaded."""

    resolution: Resolution
    age: float


class ColdStart:
    """Snapshots for one source's watches: save live answers, load at a cold start.

    Thread-safe: one lock around the loaded snapshots, never held across disk I/O.
    """

    def __init__(self, store: SnapshotStore, *, writer: SnapshotWriter | None = None) -> None:
        self.store = store
        self.writer = writer or SnapshotWriter(store)
        self._lock = threading.Lock()  # replaced in a forked child
        self._loaded: dict[WatchKey, Loaded] = {}  # under _lock: snapshots being served
        self._missing: set[WatchKey] = set()  # under _lock: no usable snapshot at start

    def live(self, key: WatchKey, resolution: Resolution) -> None:
        """A Resolution the watch published: forget the snapshot, save a live one."""
        if resolution.from_snapshot:
            return
        with self._lock:
            replaced = self._loaded.pop(key, None)
            self._missing.discard(key)
        if replaced is not None:
            log.warning(
                "Consul answered about %s: its live set of %d instance(s) replaces the "
                "snapshot's %d",
                key.target,
                len(resolution.instances),
                len(replaced.resolution.instances),
            )
        if not resolution.stale:
            self.writer.submit(target_key(key), resolution)

    def serving(self, key: WatchKey) -> Loaded | None:
        """The snapshot served for ``key`` now, if any (no I/O)."""
        with self._lock:
            return self._loaded.get(key)

    def load(self, key: WatchKey, why: BaseException | str, now: float) -> Resolution | None:
        """The snapshot of ``key`` as a Resolution, read once (None: none usable).

        Call only when ``key`` has no live value and Consul could not be reached;
        ``now`` is the watch's monotonic clock (the Resolution's ``fetched_at`` is
        back-dated on it by the snapshot's age).
        """
        with self._lock:
            loaded = self._loaded.get(key)
            if loaded is not None:
                return loaded.resolution
            if key in self._missing:
                return None
        service = key.target.service
        try:
            snapshot = self.store.load(service, target_key(key))
        except SnapshotError as exc:
            log.error("discovery snapshot of %s not used: %s", key.target, exc)
            snapshot = None
        if snapshot is None:
            with self._lock:
                self._missing.add(key)
            if self.store.last_rejection:
                log.info("no snapshot for %s: %s", key.target, self.store.last_rejection)
            return None
        age = snapshot.age(time.time())
        resolution = Resolution(
            service,
            snapshot.instances,
            snapshot.index,
            now - age,
            stale=True,
            error=f"from snapshot, {age:.0f}s old (Consul unreachable: {why})",
            from_snapshot=True,
        )
        with self._lock:
            loaded = self._loaded.setdefault(key, Loaded(resolution, age))
        log.warning(
            "Consul unreachable at start: serving %d instance(s) of %s from the snapshot "
            "saved %.0fs ago (%s)",
            len(resolution.instances),
            key.target,
            age,
            why,
        )
        return loaded.resolution

    def close(self) -> None:
        """Write pending snapshots and stop the writer."""
        self.writer.close()

    def after_fork(self) -> None:
        """In a forked child: fresh locks and writer thread (no I/O)."""
        self._lock = threading.Lock()
        self.writer.after_fork()
