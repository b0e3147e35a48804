"""Connection pools per instance: keep-alive survives round robin over 50 instances."""

from __future__ import annotations

import http.server
import os
import threading
from unittest import mock

import pytest
import requests

from bench.many_instances import measure
from consul_discovery.client.pool import InstancePoolAdapter, InstancePools
from tests.discovery_client.fakes import FakeClock


def test_round_robin_over_50_real_servers_reuses_connections() -> None:
    ours, naive = measure(instances=50, n=1000)
    assert ours["requests"] == 1000
    assert ours["reuse_pct"] >= 99.0, ours
    assert naive["reuse_pct"] < 50.0, naive  # the old 8-pool LRU: the test can fail


def test_pools_grow_while_in_use_and_evict_only_idle_ones() -> None:
    clock = FakeClock()
    pools = InstancePools(2, max_pools=8, idle_after=60.0, clock=clock)
    made = {key: mock.Mock(name=key) for key in "abcdefghij"}
    for key in "abc":
        pools[key] = made[key]
    assert pools.capacity == 4 and len(pools) == 3  # grew rather than evict "a"
    clock.advance(61.0)
    pools["d"] = made["d"]
    pools["e"] = made["e"]  # full, and "a" idle for 61 s: evicted and closed
    assert len(pools) == 4 and pools.capacity == 4
    made["a"].close.assert_called_once()
    for key in "fghij":  # "b" and "c" are idle (evicted); then "d" is not: grow
        pools[key] = made[key]
    assert pools.capacity == 8 and len(pools) == 7
    made["b"].close.assert_called_once()
    made["d"].close.assert_not_called()
    for key in "klmn":
        pools[key] = mock.Mock(name=key)
    assert pools.capacity == 8 and len(pools) == 8  # never beyond max_pools


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="max_pools"):
        InstancePools(10, max_pools=5)


class _KeepAlive(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = str(self.client_address[1]).encode()  # the caller's port: its connection
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def test_a_forked_child_gets_its_own_pools_and_the_parent_keeps_its_connection() -> None:
    """A client made before a fork (gunicorn --preload's master) must not share its
    kept-alive sockets with the child: both writing one socket interleaves requests."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KeepAlive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    session = requests.Session()
    session.mount("http://", InstancePoolAdapter())
    try:
        parent_port = session.get(url, timeout=5).text
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report its pools and its connection, then leave at once
            try:
                adapter = session.get_adapter(url)
                empty = len(adapter.poolmanager.pools) == 0
                child_port = session.get(url, timeout=5).text
                os.write(write, f"{empty} {child_port}".encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            empty, child_port = pipe.read().split()
        os.waitpid(pid, 0)
        assert empty == "True"  # the child started with no pool of the parent's
        assert child_port != parent_port  # its own connection
        assert session.get(url, timeout=5).text == parent_port  # the parent's kept alive
    finally:
        session.close()
        server.shutdown()
        server.server_close()
