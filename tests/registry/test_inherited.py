"""A worker forked while the master's probe is in flight must not keep that connection."""

from __future__ import annotations

import os
import socket

from consul_discovery.registry.inherited import forget_in_children


def test_a_child_forked_mid_probe_drops_the_probe_connection_and_keeps_the_others():
    probed = socket.create_server(("127.0.0.1", 0))
    other = socket.create_server(("127.0.0.1", 0))
    port = probed.getsockname()[1]
    forget_in_children("127.0.0.1", port)
    probe = socket.create_connection(("127.0.0.1", port))  # the master's, in flight
    served, _ = probed.accept()  # the instance's end, in some worker
    unrelated = socket.create_connection(other.getsockname())
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: the unrelated connection must still be its own
        try:
            socket.socket(fileno=os.dup(unrelated.fileno())).getpeername()
            os.write(ready_w, b"k")
        except OSError:
            os.write(ready_w, b"x")
        os.read(done_r, 1)  # alive (holding whatever it inherited) until the test ends
        os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"k", "the child lost a connection that was not the probe's"
        probe.close()  # the master gives up on its probe
        served.settimeout(3)
        # EOF: no process holds the probe's end any more (without the drop, the child's
        # copy keeps it open and this read waits for a request that never comes).
        assert served.recv(1) == b""
    finally:
        os.write(done_w, b"x")
        os.waitpid(pid, 0)
        for s in (probed, other, served, unrelated):
            s.close()
        for fd in (ready_r, ready_w, done_r, done_w):
            os.close(fd)
