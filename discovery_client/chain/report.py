"""Say once, clearly, that a service's chain is not honoured and the plain service is used.

A watch delivers a new router on every change of the chain; the same problems must not
be logged again and again, yet a new problem (or the chain becoming usable again) must
be. ``ChainReporter`` remembers the last problems reported per service.
"""

from __future__ import annotations

import logging
import threading

from consul_discovery.client.chain.decide import ChainRouter

log = logging.getLogger("consul_discovery.client.chain")


class ChainReporter:
    """Logs a service's unhonoured chain once per distinct set of problems."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._log = logger
        self._lock = threading.Lock()
        self._reported: dict[str, tuple[str, ...]] = {}  # under _lock: service -> problems

    def report(self, router: ChainRouter) -> bool:
        """Log ``router``'s problems if they are new for its service; True if logged."""
        service, problems = router.service, router.problems
        with self._lock:
            before = self._reported.get(service, ())
            if problems == before:
                return False
            self._reported[service] = problems
        if problems:
            self._log.warning(
                "the discovery chain of %s is not honoured (%s); calling %s as a plain "
                "service, without its routes, splits and resolver settings",
                service,
                "; ".join(problems),
                service,
            )
        else:
            self._log.info("the discovery chain of %s is honoured again", service)
        return True
