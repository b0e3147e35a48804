"""One call by service name over requests: the shell around ``attempt.AttemptPlan``.

The plan (discovery_client/attempt.py) picks, accounts and decides; this module only
sends a ``requests.PreparedRequest`` to each picked instance, classifies requests'
exceptions (``retry.classify_error``) and sleeps between attempts on the calling thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests

from consul_discovery.client.attempt import AttemptPlan, Outcome
from consul_discovery.client.retry import ErrorKind, classify_error
from consul_discovery.client.state import ServiceState

Timeout = float | tuple[float | None, float | None] | None

__all__ = ["Call", "ServiceState", "Timeout"]


class Call:
    """The attempts of one call; lives on the calling thread only."""

    def __init__(
        self,
        plan: AttemptPlan,
        session: requests.Session,
        prepared: requests.PreparedRequest,
        timeout: Timeout,
        send_kwargs: dict[str, Any],
    ) -> None:
        self.plan = plan
        self.session = session
        self.prepared = prepared
        self.timeout = timeout
        self.send_kwargs = send_kwargs
        parts = urlsplit(prepared.url or "/")
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.response: requests.Response | None = None  # the latest response, if any

    def run(self, sleep: Callable[[float], None]) -> requests.Response:
        """Make attempts until one is final; return the response or raise."""
        plan = self.plan
        self.attempt()
        while plan.decide():
            sleep(plan.delay)
            self.attempt()
        if self.response is not None:
            return self.response
        plan.raise_failure()

    def attempt(self) -> None:
        """Pick an instance not yet tried and send the request to it once."""
        plan = self.plan
        endpoint = plan.next_endpoint()
        if endpoint is None:
            return
        request = self.prepared.copy()
        request.url = endpoint.instance.base_url + self.path
        try:
            response = self.session.send(request, timeout=self._timeout(), **self.send_kwargs)
        except (requests.RequestException, OSError) as exc:
            kind = classify_error(exc)
            plan.record(Outcome.failure(kind, exc))
            if kind is ErrorKind.FATAL:
                raise
            return
        except BaseException:  # a hook or an interrupt: keep the in-flight count right
            plan.abandon()
            raise
        plan.record(Outcome.answer(response.status_code, response.headers))
        if self.response is not None:
            self.response.close()
        self.response = response

    def _timeout(self) -> tuple[float, float]:
        if isinstance(self.timeout, tuple):
            connect, read = self.timeout
        else:
            connect = read = self.timeout
        return self.plan.cap(connect), self.plan.cap(read)
