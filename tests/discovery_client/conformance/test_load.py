"""peak-EWMA's share to a slow instance: the same bound for every transport.

After the bench's slow_instance (bench/slow_instance.py), short: three gunicorn backends
answering in 10 ms, a fresh client of each transport under open-loop load (a fixed rate,
threads for the blocking ones, asyncio tasks for the async one), and one backend 10x
slower for the middle third. Latency is accounted the same way by every transport (to
the answer's status and headers; a pool made at an instance's first pick no longer stalls
an event loop), so each must keep the slow instance's share of the middle third as low.
"""

from __future__ import annotations

import threading

from consul_discovery.client import ServiceConfig
from tests.discovery_client.conformance.conftest import register

RATE = 60.0  # requests per second
SECONDS = 4.5  # the middle third is slow
DELAY = 0.010
SLOW_FACTOR = 10
MAX_SLOW_SHARE = 0.05  # the threaded client's figure in the full bench is 0.003-0.007


def test_peak_ewma_keeps_a_slow_instance_s_share_low(agent, procs, make):
    for n, proc in enumerate(procs):
        register(agent, "ewma", f"ewma-{n}", proc.port)
        proc.control(delay=DELAY)
    slow = procs[0]
    caller = make(services={"ewma": ServiceConfig(policy="peak_ewma")})
    on = threading.Timer(SECONDS / 3, slow.control, kwargs={"delay": DELAY * SLOW_FACTOR})
    off = threading.Timer(2 * SECONDS / 3, slow.control, kwargs={"delay": DELAY})
    on.start()
    off.start()
    try:
        report = caller.open_loop("ewma", RATE, SECONDS)
    finally:
        for timer in (on, off):
            timer.cancel()
            timer.join()
        for proc in procs:
            proc.control(delay=0)
    assert not report.failures, report.failures[:3]
    # The middle third, with a margin for the control call to land.
    window = [o for o in report.outcomes if SECONDS / 3 + 0.1 <= o.intended < 2 * SECONDS / 3]
    share = sum(1 for o in window if o.detail == slow.id) / len(window)
    assert share <= MAX_SLOW_SHARE, (caller.kind, share, len(window))
