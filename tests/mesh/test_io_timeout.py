"""MESH_IO_TIMEOUT: how long a blocking mesh server connection may make no progress."""

from __future__ import annotations

import pytest

from consul_discovery.mesh.errors import MeshConfigError
from consul_discovery.mesh.settings import DEFAULT_IO_TIMEOUT, io_timeout


def test_the_default_and_a_given_value() -> None:
    assert io_timeout({}) == DEFAULT_IO_TIMEOUT == 10.0
    assert io_timeout({"MESH_IO_TIMEOUT": " 2.5 "}) == 2.5


@pytest.mark.parametrize("raw", ["0", "-1", "10x", "nan", "inf"])
def test_a_bad_value_is_refused_by_name(raw: str) -> None:
    with pytest.raises(MeshConfigError, match="MESH_IO_TIMEOUT") as info:
        io_timeout({"MESH_IO_TIMEOUT": raw})
    assert info.value.setting == "MESH_IO_TIMEOUT"
