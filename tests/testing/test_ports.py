"""Free ports: each pytest-xdist worker draws from its own share, below the ephemeral range."""

from __future__ import annotations

import itertools
import socket

import pytest

from consul_discovery.testing import ports


def test_outside_xdist_the_whole_range_below_the_ephemeral_ports_is_drawn_from() -> None:
    share = ports.port_share({})
    assert share.start == ports.LOWEST
    assert share.stop == ports.ephemeral_start()


def test_workers_have_disjoint_shares_that_cover_the_range() -> None:
    shares = [
        ports.port_share({"PYTEST_XDIST_WORKER": f"gw{i}", "PYTEST_XDIST_WORKER_COUNT": "3"})
        for i in range(3)
    ]
    assert shares[0].start == ports.LOWEST
    for left, right in itertools.pairwise(shares):
        assert left.stop == right.start
    assert shares[-1].stop <= ports.ephemeral_start()
    assert len(shares[0]) == len(shares[2])


def test_too_many_workers_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="run fewer workers"):
        ports.port_share({"PYTEST_XDIST_WORKER": "gw0", "PYTEST_XDIST_WORKER_COUNT": "1000"})


def test_free_ports_come_from_this_workers_share_and_can_be_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    share = ports.port_share()
    found = ports.free_ports(20)
    assert len(set(found)) == 20
    assert all(port in share for port in found)
    assert all(port < ports.ephemeral_start() for port in found)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", found[0]))


def test_a_bound_port_is_not_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.free_port()))
        sock.listen()
        assert not ports.is_free(sock.getsockname()[1])


def test_blocks_fit_inside_the_share() -> None:
    share = ports.port_share()
    for base in ports.block_bases(100, step=100, attempts=50):
        assert base % 100 == 0
        assert share.start <= base and base + 100 <= share.stop
