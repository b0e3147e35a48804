"""The mesh's watches on the shared engine: one event loop, closing cuts long polls, forks.

The leaf, roots and intentions watches are tasks on the process's loop thread
(``mesh/watches.py``): no thread of their own; ``close()`` ends a blocking query in
flight at once (not after its wait); an identity or an authorizer made before a fork
(the gunicorn master's) goes on in the child on the child's own loop, and sees changes
made after the fork (``after_fork="restart"``), or stops there (``"close"``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from consul_discovery.connection.blocking import WatchTiming
from consul_discovery.connection.loop_thread import process_loop
from consul_discovery.mesh import Authorizer, ServiceIdentity
from tests.harness.agent import ConsulAgent
from tests.harness.connect import delete_intentions, write_intentions
from tests.harness.forking import in_child
from tests.mesh.conftest import connection, rotate_ca

#: A long blocking wait: a close that waited for it would take 30 s.
LONG = WatchTiming(wait=30.0, min_interval=0.05, min_change_interval=0.01, backoff_base=0.05,
                   backoff_cap=0.5)  # fmt: skip


def _blocking(states: list[object], timeout: float = 5.0) -> None:
    """Wait until every watch has sent its first blocking query (index > 0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(s.index > 0 and s.requests >= 2 for s in states):  # type: ignore[attr-defined]
            time.sleep(0.2)  # the blocking query is on the wire
            return
        time.sleep(0.02)
    raise AssertionError("the watches never started blocking")


def test_the_watches_run_on_the_process_loop_without_threads_of_their_own(
    agent: ConsulAgent,
) -> None:
    before = {t.name for t in threading.enumerate()}
    ident = ServiceIdentity("loop-api", connection(agent), timing=LONG).start().wait_ready()
    authz = Authorizer("loop-api", connection(agent), timing=LONG).start().wait_ready()
    try:
        new = {t.name for t in threading.enumerate()} - before
        assert new <= {process_loop()._thread.name}, new
        assert ident._watches.loop is process_loop() is authz._watches.loop
    finally:
        ident.close()
        authz.close()


def test_closing_cuts_the_long_polls_in_flight_short(agent: ConsulAgent) -> None:
    ident = ServiceIdentity("close-api", connection(agent), timing=LONG).start().wait_ready()
    authz = Authorizer("close-api", connection(agent), timing=LONG).start().wait_ready()
    _blocking([ident._leaf_state, ident._roots_state, authz._state])
    tasks = list(ident._watches._tasks) + list(authz._watches._tasks)
    assert len(tasks) == 3 and all(t.alive for t in tasks)
    started = time.monotonic()
    ident.close()
    authz.close()
    took = time.monotonic() - started
    assert took < 1.0, f"close waited {took:.2f}s for the blocking queries"
    assert not any(t.alive for t in tasks)
    assert ident.closed and ident.ready  # the contexts in force stay usable
    ident.client_tls.context_for("other")


def _until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_an_identity_and_authorizer_made_before_a_fork_go_on_in_the_child(
    agent: ConsulAgent,
) -> None:
    fast = WatchTiming(wait=5.0, min_interval=0.05, min_change_interval=0.01)
    ident = ServiceIdentity("forked", connection(agent), timing=fast).start().wait_ready()
    authz = Authorizer("forked", connection(agent), timing=fast).start().wait_ready()
    roots_before = ident.roots.active_root_id  # type: ignore[union-attr]

    def child() -> bool:
        assert ident.ready and authz.intentions is not None
        assert ident._watches.loop.pid == os.getpid()  # the child's own loop
        generation = ident.client_tls.generation
        # The parent rotates the CA and writes an intention after the fork.
        rotated = _until(
            lambda: (
                ident.client_tls.generation > generation
                and ident.roots.active_root_id != roots_before
            ),  # type: ignore[union-attr]
            30,
        )
        allowed = _until(
            lambda: (
                authz.intentions is not None
                and any(i.source_name == "api" for i in authz.intentions.intentions)
            ),
            30,
        )
        print(f"child: rotated={rotated} intention seen={allowed}", flush=True)
        return rotated and allowed

    def parent() -> None:
        time.sleep(0.3)
        rotate_ca(agent)
        write_intentions(agent.url, "forked", [{"Name": "api", "Action": "allow"}])

    try:
        in_child(child, parent, 40.0, "the child saw frozen watches")
    finally:
        ident.close()
        authz.close()
        delete_intentions(agent.url, "forked")


def test_after_fork_close_stops_the_watches_in_the_child(agent: ConsulAgent) -> None:
    ident = ServiceIdentity(
        "fork-close", connection(agent), timing=LONG, after_fork="close"
    ).start()
    ident.wait_ready()

    def child() -> bool:
        return ident.closed and ident.ready and not ident._watches._tasks

    try:
        in_child(child, lambda: None, 40.0, "the child saw frozen watches")
        assert not ident.closed  # the parent's go on
    finally:
        ident.close()
