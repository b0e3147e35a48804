"""The service's own health: named check functions evaluated into a ``HealthReport``.

A check function returns None or True when its dependency is fine; it fails by
returning False or raising. Under ASGI it may be an ``async def`` function, awaited on
the app's event loop (``HealthChecks(asynchronous=True)``); elsewhere that is refused
when the check is added, as is anything that is not callable. ``/health`` (Flask
extension) and the TTL heartbeat both use the same evaluation, so Consul sees what
``/health`` says.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from consul_discovery.registry.inherited import forget_in_children

PASSING = "passing"
CRITICAL = "critical"

CheckFn = Callable[[], object]


@dataclass(frozen=True)
class HealthReport:
    """The result of one evaluation: overall status plus one entry per named check."""

    status: str
    checks: dict[str, dict[str, str]] = field(default_factory=dict)  # read-only by convention

    @property
    def passing(self) -> bool:
        """True when every check passed."""
        return self.status == PASSING

    def to_json(self) -> dict[str, Any]:
        """The body ``/health`` returns."""
        return {"status": self.status, "checks": self.checks}

    def output(self) -> str:
        """A one-line summary for Consul's check Output."""
        failing = [
            f"{n}: {c.get('error', 'failed')}"
            for n, c in self.checks.items()
            if c["status"] != PASSING
        ]
        return "; ".join(failing) if failing else "all checks passing"


class HealthChecks:
    """A thread-safe set of named check functions.

    ``asynchronous`` (the ASGI registry's): ``async def`` checks are taken too, and run
    by ``evaluate_async`` on the event loop (or by ``evaluate``'s ``run``). Otherwise a
    coroutine function is refused by ``add``: nothing would await it. A check that is
    not callable is refused either way, naming it.
    """

    def __init__(self, *, asynchronous: bool = False) -> None:
        self.asynchronous = asynchronous
        self._lock = threading.Lock()
        self._checks: dict[str, CheckFn] = {}  # guarded by _lock; written by app setup code

    def add(self, name: str, fn: CheckFn) -> None:
        """Add (or replace) the check called ``name``; TypeError for one that cannot run here."""
        if not callable(fn):
            raise TypeError(
                f"check {name!r} must be a function of no arguments; got {type(fn).__name__} {fn!r}"
            )
        if is_async_check(fn) and not self.asynchronous:
            raise TypeError(
                f"check {name!r} is an async function, and these checks run synchronously "
                "(Flask, the TTL heartbeat): give a plain function, or serve the app with "
                "consul_discovery.registry.asgi, which awaits async checks"
            )
        with self._lock:
            self._checks[name] = fn

    def evaluate(self, run: Callable[[Awaitable[object]], object] | None = None) -> HealthReport:
        """Run every check now and summarise; ``run`` waits for an async check's result
        (without it, a check that returns an awaitable fails, saying so)."""
        return _summarise(_outcomes(self._items(), run))

    async def evaluate_async(self) -> HealthReport:
        """Run every check now: the plain ones in a worker thread (a slow one never blocks
        the event loop), the async ones awaited on this loop, together; then summarise."""
        items = self._items()
        plain = [(name, fn) for name, fn in items if not is_async_check(fn)]
        waiting = [(name, fn) for name, fn in items if is_async_check(fn)]
        in_thread = asyncio.to_thread(_outcomes, plain)
        results, *awaited = await asyncio.gather(in_thread, *(_awaited(*item) for item in waiting))
        results.update(awaited)
        return _summarise({name: results[name] for name, _fn in items})

    def _items(self) -> list[tuple[str, CheckFn]]:
        with self._lock:
            return list(self._checks.items())


def is_async_check(fn: object) -> bool:
    """True for an ``async def`` function, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _summarise(results: dict[str, dict[str, str]]) -> HealthReport:
    """The report of these per-check results: passing when every one passed."""
    overall = PASSING if all(r["status"] == PASSING for r in results.values()) else CRITICAL
    return HealthReport(overall, results)


def _verdict(ok: object) -> dict[str, str]:
    """A check's result as its entry: None or True pass, anything else fails."""
    if ok is None or ok is True:
        return {"status": PASSING}
    return {"status": CRITICAL, "error": f"returned {ok!r}"}


def _failure(exc: BaseException) -> dict[str, str]:
    """A check that raised, as its entry (a check's failure is data, not an error)."""
    return {"status": CRITICAL, "error": f"{type(exc).__name__}: {exc}"}


def _outcomes(
    items: list[tuple[str, CheckFn]], run: Callable[[Awaitable[object]], object] | None = None
) -> dict[str, dict[str, str]]:
    return {name: _outcome(fn, run) for name, fn in items}


def _outcome(fn: CheckFn, run: Callable[[Awaitable[object]], object] | None) -> dict[str, str]:
    try:
        ok = fn()
        if inspect.isawaitable(ok):
            if run is None:
                close_unawaited(ok)
                return {"status": CRITICAL, "error": "returned an awaitable, not awaited here"}
            ok = run(ok)
    except Exception as exc:
        return _failure(exc)
    return _verdict(ok)


async def _awaited(name: str, fn: CheckFn) -> tuple[str, dict[str, str]]:
    try:
        ok = await fn()  # type: ignore[misc]
    except Exception as exc:
        return name, _failure(exc)
    return name, _verdict(ok)


def close_unawaited(awaitable: Awaitable[object]) -> None:
    """Close a coroutine nobody will await (no "never awaited" warning)."""
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


def http_probe(
    url: str, timeout: float = 2.0, session: requests.Session | None = None
) -> Callable[[], HealthReport]:
    """A health function that GETs ``url`` (e.g. the instance's own /health over loopback).

    Used by the gunicorn master, which has no app loaded: 200 is passing, anything
    else (or no answer) is critical. ``session``: a Connect-native instance's mesh session.
    """
    session = session or requests.Session()
    parts = urlsplit(url)
    if parts.hostname is not None:  # a worker forked mid-probe must not keep it open
        forget_in_children(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))

    def probe() -> HealthReport:
        try:
            response = session.get(url, timeout=timeout)
        except requests.RequestException as exc:
            return HealthReport(CRITICAL, {"http": {"status": CRITICAL, "error": str(exc)}})
        try:
            body = response.json()
            checks = body.get("checks", {}) if isinstance(body, dict) else {}
        except ValueError:
            checks = {}
        if response.status_code == 200:
            return HealthReport(PASSING, checks)
        checks = checks or {"http": {"status": CRITICAL, "error": f"HTTP {response.status_code}"}}
        return HealthReport(CRITICAL, checks)

    return probe
