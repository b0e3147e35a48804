"""The private key's only way to a file system: 0700 dir, 0600 file, removed at once."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from consul_discovery.mesh.errors import MeshError
from consul_discovery.mesh.identity import Leaf
from consul_discovery.mesh.keyfile import PREFIX, load_leaf, private_base, private_files

KEY = "-----BEGIN EC PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END EC PRIVATE KEY-----\n"
CERT = "-----BEGIN CERTIFICATE-----\nbm90LWEtcmVhbC1jZXJ0\n-----END CERTIFICATE-----\n"


def _leaf(key: str = KEY) -> Leaf:
    return Leaf.from_json(
        {
            "Service": "web",
            "ServiceURI": "spiffe://td.consul/ns/default/dc/dc1/svc/web",
            "SerialNumber": "0a",
            "CertPEM": CERT,
            "PrivateKeyPEM": key,
            "ValidAfter": "2026-01-01T00:00:00Z",
            "ValidBefore": "2026-01-04T00:00:00Z",
            "ModifyIndex": 7,
        }
    )


class Recorder:
    """Stands in for an SSLContext: records what load_cert_chain found on disk."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.seen: dict[str, object] = {}

    def load_cert_chain(self, certfile: str, keyfile: str) -> None:
        directory = Path(keyfile).parent
        self.seen = {
            "dir": directory,
            "dir_mode": stat.S_IMODE(directory.stat().st_mode),
            "key_mode": stat.S_IMODE(os.stat(keyfile).st_mode),
            "cert_mode": stat.S_IMODE(os.stat(certfile).st_mode),
            "key": Path(keyfile).read_text(),
        }
        if self.fail:
            import ssl

            raise ssl.SSLError(9, "[SSL] PEM lib")


def test_the_key_lives_in_a_private_file_only_while_it_loads(tmp_path: Path) -> None:
    recorder = Recorder()
    load_leaf(recorder, _leaf(), str(tmp_path))
    assert recorder.seen["dir_mode"] == 0o700
    assert recorder.seen["key_mode"] == 0o600
    assert recorder.seen["cert_mode"] == 0o600
    assert recorder.seen["key"] == KEY
    assert Path(str(recorder.seen["dir"])).name.startswith(PREFIX)
    assert list(tmp_path.iterdir()) == []  # nothing remains


def test_nothing_remains_when_loading_fails_and_the_error_has_no_key(tmp_path: Path) -> None:
    with pytest.raises(MeshError) as caught:
        load_leaf(Recorder(fail=True), _leaf(), str(tmp_path))
    assert "do not load" in str(caught.value)
    assert "c2VjcmV0" not in str(caught.value) and "PRIVATE KEY" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is not None
    assert list(tmp_path.iterdir()) == []


def test_nothing_remains_when_the_body_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), private_files(CERT, KEY, str(tmp_path)):
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_the_default_base_is_memory_backed_here() -> None:
    # /dev/shm exists on the Linux hosts we run on: keys never reach a disk.
    assert private_base() == "/dev/shm"


def test_the_private_key_never_shows_in_a_repr_str_or_pickle() -> None:
    import pickle

    leaf = _leaf()
    for text in (repr(leaf), str(leaf), repr(leaf.private_key), str(leaf.private_key), f"{leaf}"):
        assert "c2VjcmV0" not in text and "PRIVATE KEY" not in text
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(leaf.private_key)
