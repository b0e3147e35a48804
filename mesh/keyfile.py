"""Loading a leaf certificate and its private key into an ``ssl.SSLContext``.

Python's ``ssl`` only loads a key from a file (``load_cert_chain``). The key therefore
touches a file system for the time of one call, and only this way: a fresh directory
made by ``mkdtemp`` (mode 0700, random name) under a memory-backed base (``/dev/shm``,
else ``$XDG_RUNTIME_DIR``, else the temp dir), the key written with ``O_EXCL`` and mode
0600, loaded, then both files and the directory removed, whatever happened. Errors say
which part failed and never include the key.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from consul_discovery.mesh.errors import MeshError
from consul_discovery.mesh.identity import Leaf

PREFIX = "consul-discovery-mesh-"


class _ChainLoader(Protocol):
    def load_cert_chain(self, certfile: str, keyfile: str) -> None: ...


def private_base() -> str:
    """Where the private directories go: memory-backed when the system has one."""
    for candidate in ("/dev/shm", os.environ.get("XDG_RUNTIME_DIR", "")):
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return tempfile.gettempdir()


def write_private(path: Path, text: str) -> None:
    """Create ``path`` (which must not exist, nor be a link) 0600 with ``text`` in it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, text.encode("ascii"))
    finally:
        os.close(fd)


@contextlib.contextmanager
def private_files(
    cert_pem: str, key_pem: str, base: str | None = None
) -> Iterator[tuple[str, str]]:
    """A 0700 directory holding the certificate and the 0600 key; removed on exit."""
    directory = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base or private_base()))
    cert_path, key_path = directory / "leaf.pem", directory / "leaf.key"
    try:
        write_private(cert_path, cert_pem)
        write_private(key_path, key_pem)
        yield str(cert_path), str(key_path)
    finally:
        for path in (key_path, cert_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        directory.rmdir()


def load_leaf(context: _ChainLoader, leaf: Leaf, base: str | None = None) -> None:
    """Load ``leaf``'s certificate chain and private key into ``context``."""
    with private_files(leaf.cert_pem, leaf.private_key.reveal(), base) as (cert, key):
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise MeshError(
                f"the leaf certificate of {leaf.service!r} (serial {leaf.serial}) and its "
                f"private key do not load: {reason}"
            ) from None
