"""One warning when a dependency goes away and one when it is back; the rest at debug.

During an outage a retry loop fails every second or so. ``OutageLog`` turns that into
two lines: a warning at the first failure (with its cause) and a warning when the next
success ends it, with the outage's duration and how many failures it saw. Every other
failure goes to debug. The registrar uses it for the Consul agent, services for the
services they call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class OutageLog:
    """Logs the start and end of outages of ``what`` on ``logger``; thread-safe."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self._clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None  # under _lock: when the current outage began
        self._failures = 0  # under _lock: failures seen in the current outage

    @property
    def down(self) -> bool:
        """Whether an outage is in progress."""
        return self._since is not None

    def failed(self, detail: object) -> None:
        """Record one failure: a warning if it starts an outage, else a debug line."""
        with self._lock:
            self._failures += 1
            first = self._since is None
            if first:
                self._since = self._clock()
            count = self._failures
        if first:
            self.logger.warning("%s is unavailable: %s", self.what, detail)
        else:
            self.logger.debug("%s still unavailable (failure %d): %s", self.what, count, detail)

    def ok(self) -> None:
        """Record a success: a warning with duration and count if it ends an outage."""
        if self._since is None:  # the common case, without the lock
            return
        with self._lock:
            since, count = self._since, self._failures
            self._since, self._failures = None, 0
        if since is not None:
            self.logger.warning(
                "%s is back after %.1fs (%d failed attempts)",
                self.what,
                self._clock() - since,
                count,
            )
