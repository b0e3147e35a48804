"""peak-EWMA's share to a slow instance: the same bound for every transport.

After the bench's slow_instance (bench/slow_instance.py), short: three gunicorn backends
answering in 10 ms, a fresh client of each transport under open-loop load (a fixed rate,
threads for the blocking ones, asyncio tasks for the async one), and one backend 20x
slower for the last two thirds. Latency is accounted the same way by every transport: to
the answer's status and headers; without the time the client's own process was stopped
in garbage collection (an asyncio client makes enough garbage for a full collection
mid-run, 100-300 ms here, and every call in flight would measure it); with nothing slow
on the event loop at a first pick; and a stale peak gives way to fresh answers. So each
must keep the slow instance's share as low. The share is counted from shortly after the
slow instance's first slow answer (the switch itself, when no client can know yet, is not
what is measured; nor is a run where the slowdown was late to take effect).

The instance made slow is the one that served the most calls of the run so far
(tests/harness/backends.py, SlowDown): a fixed one may have had one slow moment early (a
first connection, a stalled thread) and then no call at all, since power-of-two-choices
never picks the highest estimate of three until it decays (seen in CI: "the slowdown
never took effect").
"""

from __future__ import annotations

import threading
import time

from consul_discovery.client import ServiceConfig
from tests.discovery_client.conformance.conftest import register
from tests.harness.backends import SlowDown

RATE = 80.0  # requests per second
SECONDS = 3.6  # normal for the first third, then one instance slow
DELAY = 0.010
SLOW_FACTOR = 20
SETTLE = 0.3  # seconds after the first slow answer was due before counting
MAX_SLOW_SHARE = 0.05  # the threaded client's figure in the full bench is 0.003-0.007


ATTEMPTS = 2  # a run whose slowdown took effect too late to leave a second is run again


def test_peak_ewma_keeps_a_slow_instance_s_share_low(agent, procs, make):
    for n, proc in enumerate(procs):
        register(agent, "ewma", f"ewma-{n}", proc.port)
    for attempt in range(1, ATTEMPTS + 1):
        for proc in procs:
            proc.control(delay=DELAY)
        caller = make(services={"ewma": ServiceConfig(policy="peak_ewma")})
        slowdown = SlowDown(procs, DELAY * SLOW_FACTOR)
        on = threading.Timer(SECONDS / 3, slowdown.switch)
        stalls = StallMonitor()
        on.start()
        try:
            with stalls:
                report = caller.open_loop("ewma", RATE, SECONDS)
        finally:
            on.cancel()
            on.join()
            for proc in procs:
                proc.control(delay=0)
        assert not report.failures, report.failures[:3]
        slow = slowdown.backend
        assert slow is not None, "the switch did not run"
        slow_answers = [
            o.intended
            for o in report.outcomes
            if o.detail == slow.id
            and o.latency >= DELAY * SLOW_FACTOR
            and o.intended >= SECONDS / 3
        ]
        assert slow_answers, "the slowdown never took effect"
        window = [o for o in report.outcomes if o.intended >= min(slow_answers) + SETTLE]
        if len(window) >= RATE or attempt == ATTEMPTS:
            break
        # Not what is measured (see the module): the switch came late (seen once in CI:
        # the first slow answer over 1 s after the switch was due), so measure again.
        print(f"\n{caller.kind}: first slow answer at {min(slow_answers):.2f}s, only "
              f"{len(window)} calls after it; longest stall {stalls.longest * 1e3:.0f} ms: "
              "measuring again")  # fmt: skip
    assert len(window) >= RATE, (len(window), min(slow_answers), stalls.longest)
    share = sum(1 for o in window if o.detail == slow.id) / len(window)
    print(f"\n{caller.kind}: slow instance's share {share:.3f} of {len(window)} calls; "
          f"longest stall of this process {stalls.longest * 1e3:.0f} ms")  # fmt: skip
    assert share <= MAX_SLOW_SHARE, (caller.kind, share, len(window), stalls.longest)


class StallMonitor:
    """The longest time a thread of this process that asked to sleep 10 ms did not run.

    Diagnostics: a process stopped (a full garbage collection holds every thread; a machine
    so loaded it is not scheduled) inflates every latency in flight, on every instance at
    once; a failure says how long the longest such stop was.
    """

    def __init__(self) -> None:
        self.longest = 0.0  # written by the monitor thread, read after it is joined
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-monitor")

    def _run(self) -> None:
        while True:
            before = time.monotonic()
            if self._stop.wait(0.010):
                return
            self.longest = max(self.longest, time.monotonic() - before - 0.010)

    def __enter__(self) -> StallMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)
