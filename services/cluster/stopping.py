"""How long a stop may take, derived from what each program does on SIGTERM.

supervisord stops a program with SIGTERM and, when it has not exited ``stopwaitsecs``
later, SIGKILLs its whole process group. So a stop is over within the program's
``stopwaitsecs`` of the signal, whatever the program does, and that is the bound a
caller waits for. An instance's ``stopwaitsecs`` is what its own SIGTERM takes at
most: the drain (``SERVICE_DRAIN_SECONDS``: maintenance, still serving), then the
server's graceful stop (gunicorn's ``--graceful-timeout``, uvicorn's
``--timeout-graceful-shutdown``: in-flight requests finish), then deregistration and
exit. The supervisord config (``supervisor_conf``) and every wait for a stop
(``control.stop_in_parallel``, the drills) take their numbers from here, so neither
can be shorter than the other.

Stopping several programs at once (``control.stop_in_parallel``) takes the longest
``stopwaitsecs`` among them, not their sum (each has its own deadline), plus the time
to ask supervisord to stop each one (one request each, in turn) and supervisord's own
latency to notice a deadline and SIGKILL (its loop wakes about once a second; on a
loaded machine, and with the killed processes' exits, a few seconds).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from services.cluster.plan import ClusterPlan

#: gunicorn ``--graceful-timeout`` and uvicorn ``--timeout-graceful-shutdown``: how long
#: in-flight requests may take to finish once the drain is over.
GRACEFUL_SECONDS = 20
#: After the graceful stop: deregistering from Consul (an HTTP call with its own
#: timeouts) and the process's exit.
EXIT_SECONDS = 10
#: A Consul agent's stop (a client agent leaves the cluster first).
AGENT_STOP_WAIT = 15
#: Prometheus' stop (it flushes its head block) and the targets bridge's.
PROMETHEUS_STOP_WAIT = 15
TARGETS_STOP_WAIT = 5
#: supervisord's latency to act on a stop deadline (SIGKILL) and the group's exit.
SUPERVISOR_SLACK = 5.0
#: Asking supervisord to stop one program (one XML-RPC request over its socket).
STOP_REQUEST_SECONDS = 0.5
#: How long an autorestart program stays EXITED after dying before supervisord starts
#: it again (its next loop, about a second): EXITED for longer is for good.
AUTORESTART_SECONDS = 2.0


def instance_stop_wait(plan: ClusterPlan) -> int:
    """An instance's ``stopwaitsecs``: its drain, the server's graceful stop, then exit."""
    return math.ceil(plan.drain_seconds) + GRACEFUL_SECONDS + EXIT_SECONDS


def stop_wait(plan: ClusterPlan, program: str) -> int:
    """The ``stopwaitsecs`` supervisord is given for ``program`` (an instance, an agent,
    Prometheus, the targets bridge or Prometheus' mesh identity); ValueError for a
    program the plan does not have."""
    if any(inst.program == program for inst in plan.instances()):
        return instance_stop_wait(plan)
    if any(agent.program == program for agent in plan.agents()):
        return AGENT_STOP_WAIT
    if program == "prometheus":
        return PROMETHEUS_STOP_WAIT
    if program == "prometheus-targets" or (plan.mesh and program == "prometheus-identity"):
        return TARGETS_STOP_WAIT
    raise ValueError(f"{program!r} is not a program of this cluster")


def parallel_stop_bound(plan: ClusterPlan, programs: Iterable[str]) -> float:
    """The longest that stopping ``programs`` all at once can take (seconds)."""
    names = list(programs)
    if not names:
        return 0.0
    longest = max(stop_wait(plan, name) for name in names)
    return longest + SUPERVISOR_SLACK + STOP_REQUEST_SECONDS * len(names)
