"""Last-known instances on disk, for a cold start while Consul cannot be reached (opt-in).

A service that restarts during a Consul outage has no instances to call: its watches
cannot answer. ``SnapshotStore`` keeps each watched target's last known instances in a
file of its own, so that the source can start from them *only* when Consul cannot be
reached at start, marked stale, until the first live answer replaces them (part 2 wires
that into the sources, metrics and the CLI). The rules:

- **Opt-in**: nothing is written unless a store is given a directory.
- **Atomic**: a write goes to a temporary file in the same directory (mode 0600),
  is flushed and fsynced, then ``os.replace``-d over the old one, and the directory is
  fsynced; a reader sees the old file or the new one, never half of one.
- **Private**: the directory is created 0700; a directory or file that another user
  owns, or that group or others may write, is refused (``SnapshotError`` naming it):
  instance lists steer traffic, so nobody else may plant one.
- **Versioned**: each file names its format and ``version``; a file of another format
  or version, a different target key, or bad content is ignored (``load`` returns None
  and says why in ``last_rejection``), never half-used.
- **Aged**: each file carries ``saved_at`` (wall-clock seconds: an age must survive a
  restart, which a monotonic clock does not). ``load`` never returns a snapshot older
  than ``max_age`` (default ``DEFAULT_MAX_AGE``, 24 h: long enough for a night's
  outage, short enough that a fleet that changed since is not called blind), nor one
  from more than ``MAX_CLOCK_SKEW`` in the future.

Only what calls need is stored (ids, addresses, ports, tags, meta, weights, health,
node, datacenter, maintenance, locality); never tokens or anything of the connection.
(``region``/``zone`` came after version 1's first files: a file without them reads as
"no locality".)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consul_discovery.client.instance import Instance

FORMAT = "consul-discovery-snapshot"
VERSION = 1
DEFAULT_MAX_AGE = 24 * 3600.0
MAX_CLOCK_SKEW = 300.0
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_FIELDS = (
    "id", "service", "address", "port", "tags", "meta", "weight_passing", "weight_warning",
    "health", "node", "datacenter", "maintenance", "region", "zone", "connect_native",
)  # fmt: skip


class SnapshotError(Exception):
    """The snapshot directory or a file in it is unsafe or unusable; names the path."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One target's last known instances, as saved: when, at which Consul index."""

    service: str
    key: str
    saved_at: float  # wall-clock seconds (time.time())
    index: int
    instances: tuple[Instance, ...]

    def age(self, now: float) -> float:
        """Seconds since it was saved (``now``: wall-clock seconds)."""
        return max(0.0, now - self.saved_at)


class SnapshotStore:
    """A directory of per-target snapshot files: ``save`` atomically, ``load`` within age.

    ``clock`` is wall-clock seconds (injected for tests). One store may be shared by
    every watch of a process: each target has its own file, and a save replaces a file
    atomically, so concurrent saves of different targets never meet.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_age: float = DEFAULT_MAX_AGE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not max_age > 0:
            raise ValueError(f"max_age must be > 0 seconds, not {max_age!r}")
        self.directory = Path(directory)
        self.max_age = max_age
        self._clock = clock
        self.last_rejection: str | None = None  # written by load(); for logs and metrics

    # -- where ------------------------------------------------------------------------

    def path_for(self, service: str, key: str) -> Path:
        """The file of the target ``key`` (readable name, hashed key: no path tricks)."""
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        name = _SAFE.sub("_", service)[:64] or "service"
        return self.directory / f"{name}-{digest}.json"

    def _ensure_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise SnapshotError(f"cannot create {self.directory}: {exc.strerror}") from exc
        _check_private(self.directory, "snapshot directory")

    # -- save -------------------------------------------------------------------------

    def save(self, service: str, key: str, index: int, instances: Sequence[Instance]) -> Path:
        """Write the target's instances atomically; returns the file written."""
        self._ensure_directory()
        body = {
            "format": FORMAT,
            "version": VERSION,
            "service": service,
            "key": key,
            "saved_at": self._clock(),
            "index": int(index),
            "instances": [_encode(i) for i in instances],
        }
        path = self.path_for(service, key)
        fd, tmp = tempfile.mkstemp(prefix=".snapshot-", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp: mode 0600
                json.dump(body, handle, separators=(",", ":"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_directory(self.directory)
        return path

    # -- load -------------------------------------------------------------------------

    def load(self, service: str, key: str) -> Snapshot | None:
        """The target's snapshot if there is a usable one within ``max_age``, else None.

        None with ``last_rejection`` saying why for a file that is missing, of another
        format or version, for another target, malformed, too old or from the future.
        Raises SnapshotError for a directory or file that is not private.
        """
        path = self.path_for(service, key)
        self.last_rejection = None
        if not self.directory.exists() or not path.exists():
            return self._reject(f"no snapshot for {service!r} in {self.directory}")
        _check_private(self.directory, "snapshot directory")
        _check_private(path, "snapshot file")
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return self._reject(f"{path} is unreadable: {exc}")
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            return self._reject(f"{path} is not a {FORMAT} file")
        if body.get("version") != VERSION:
            return self._reject(f"{path} has version {body.get('version')!r}, not {VERSION}")
        if body.get("service") != service or body.get("key") != key:
            return self._reject(f"{path} belongs to another target")
        try:
            saved_at, index = float(body["saved_at"]), int(body["index"])
            if not math.isfinite(saved_at):
                raise ValueError(f"saved_at {body['saved_at']!r} is not a time")
            instances = tuple(_decode(item) for item in body["instances"])
        except (KeyError, TypeError, ValueError) as exc:
            return self._reject(f"{path} is malformed: {exc!r}")
        now = self._clock()
        if saved_at > now + MAX_CLOCK_SKEW:
            return self._reject(f"{path} was saved {saved_at - now:.0f}s in the future")
        if now - saved_at > self.max_age:
            return self._reject(
                f"{path} is {now - saved_at:.0f}s old (max_age {self.max_age:.0f}s)"
            )
        return Snapshot(service, key, saved_at, index, instances)

    def _reject(self, why: str) -> None:
        self.last_rejection = why
        return None


def _encode(instance: Instance) -> dict[str, Any]:
    values = {name: getattr(instance, name) for name in _FIELDS}
    values["tags"] = list(instance.tags)
    values["meta"] = dict(instance.meta)
    return values


_TEXT_FIELDS = ("id", "service", "address", "node", "datacenter", "region", "zone")
_FLAG_FIELDS = ("maintenance", "connect_native")


def _decode(item: Any) -> Instance:
    """One stored instance, each field of the type an Instance holds (a file edited or
    written by something else must fail here, not in a pick or a call)."""
    if not isinstance(item, dict):
        raise TypeError(f"an instance must be an object, not {type(item).__name__}")
    values = {name: item[name] for name in _FIELDS if name in item}
    for name in ("id", "service", "address", "port"):
        if name not in values:
            raise KeyError(name)
    for name in _TEXT_FIELDS:
        if name in values and not isinstance(values[name], str):
            raise ValueError(f"{name} must be a string, not {values[name]!r}")
    for name in _FLAG_FIELDS:
        if name in values and not isinstance(values[name], bool):
            raise ValueError(f"{name} must be true or false, not {values[name]!r}")
    if values.get("health", "passing") not in ("passing", "warning", "critical"):
        raise ValueError(f"unknown health {values['health']!r}")
    if not _is_int(values["port"]) or not 0 < values["port"] < 65536:
        raise ValueError(f"bad port {values['port']!r}")
    for name in ("weight_passing", "weight_warning"):
        if name in values and not (_is_int(values[name]) and values[name] >= 0):
            raise ValueError(f"bad {name} {values[name]!r}")
    tags, meta = values.get("tags", []), values.get("meta", {})
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError(f"tags must be a list of strings, not {tags!r}")
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError(f"meta must be an object of strings, not {meta!r}")
    values["tags"] = tuple(tags)
    return Instance(**values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_private(path: Path, what: str) -> None:
    info = path.stat()
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise SnapshotError(f"{what} {path} is owned by uid {info.st_uid}, not by us")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SnapshotError(f"{what} {path} may be written by others (mode {info.st_mode:o})")
    if path.is_file() and info.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        raise SnapshotError(f"{what} {path} may be read by others (mode {info.st_mode:o})")


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
