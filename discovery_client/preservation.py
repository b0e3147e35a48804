"""Self-preservation: what a registry suddenly forgets is suspect (after Eureka).

A Consul agent that restarts without its state (a dev agent, a lost data dir) answers
"no instances" or "instance critical" for services whose instances never stopped
serving; their registrars put them back within their reconcile period. Believing that
answer turns an agent restart into failed requests. Believing everything forever would
keep dead instances. The rule, per watched service:

**When is an answer suspect?** Only right after a *discontinuity* in what we watch: the
first successful answer after one or more failed polls, or an answer whose index went
backwards (Consul's state was reset). On a continuous index, Consul's word is final.
The signal is the discontinuity, not the size of the shrinkage: registrars re-register
one by one, so after a restart anything from 0 to all instances may be back.

**What is held?** After a discontinuity a *suspect window* of ``grace`` seconds opens.
While it is open, an instance we last knew as healthy (passing or warning) that Consul
now reports missing, or critical without being in maintenance, is *held*: kept in the
set with its last-known-good description, on trust. A held instance is released as
soon as Consul reports it healthy again; the window closes early once nothing is held,
and when it ends every instance still not vouched for is dropped.

**What always propagates at once?** Maintenance mode (``_service_maintenance:<id>`` or
``_node_maintenance`` critical: a drain, even inside a window), and, outside a window,
any deregistration or critical check. Such a removal reaches the picker with the next
watch answer (milliseconds).

**The cost.** A deregistration or a failure that happens inside a window (within
``grace`` seconds after Consul came back) is seen only when the window ends. A held
instance that really died fails fast at connect and is retried elsewhere, and passive
ejection takes it out, so this trades a short, bounded doubt for no failed request.

**Grace.** The registrar re-registers within half its check interval (default 10 s,
so 5 s) after the agent is back, and a fresh registration stays critical until its first
check passes (up to one interval); 20 s covers both with margin. ``grace=0`` turns the
rule off (Consul's every answer is final). Set per service: ``ServiceConfig.vanish_grace``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from consul_discovery.client.instance import Instance

DEFAULT_GRACE = 20.0


def _vouched(instance: Instance) -> bool:
    return instance.health != "critical"


class SelfPreservation:
    """The suspect-window rule of one watched service; pure, with an injected clock.

    Owned by one watch and called from its thread only.
    """

    def __init__(self, grace: float, clock: Callable[[], float]) -> None:
        if grace < 0:
            raise ValueError(f"grace must be >= 0 seconds; got {grace!r}")
        self.grace = grace
        self._clock = clock
        self._known: dict[str, Instance] = {}  # last healthy description of each instance
        self._window_until: float | None = None  # end of the open suspect window

    def know(self, instances: Sequence[Instance]) -> None:
        """Take ``instances`` as the last healthy set when none is known yet: a cold-start
        snapshot served before any live answer, so that Consul's first answer after the
        outage (an agent restarted empty) is suspect like any other. One store: safe
        from the thread that serves the snapshot."""
        if not self._known:
            self._known = {i.id: i for i in instances if _vouched(i)}

    @property
    def window_until(self) -> float | None:
        """When the open suspect window ends (None: no window, Consul's word is final)."""
        return self._window_until

    def apply(
        self, registered: Sequence[Instance], *, continuous: bool
    ) -> tuple[tuple[Instance, ...], tuple[str, ...]]:
        """The instances to believe, and the ids held on trust, for one Consul answer.

        ``registered`` is every instance Consul reported (any health); ``continuous`` is
        False for the first answer after a failed poll or an index reset.
        """
        now = self._clock()
        if not continuous and self._known and self.grace > 0:
            self._window_until = now + self.grace
        if self._window_until is not None and now >= self._window_until:
            self._window_until = None
        held: list[Instance] = []
        if self._window_until is not None:
            current = {i.id: i for i in registered}
            for ident, good in self._known.items():
                now_seen = current.get(ident)
                if now_seen is None or (not _vouched(now_seen) and not now_seen.maintenance):
                    held.append(good)
            if not held:
                self._window_until = None  # everything is back: trust Consul again
        held_ids = {i.id for i in held}
        believed = tuple(i for i in registered if i.id not in held_ids) + tuple(held)
        self._known = {i.id: i for i in believed if _vouched(i)}
        return believed, tuple(sorted(held_ids))
