"""Check functions (registry/health.py) and how each registry takes them: a check that is
not callable is refused at add_check everywhere; an ``async def`` check is awaited by the
ASGI registry (``/health`` on the app's loop, ``health()`` from another thread through
that loop) and refused by Flask's, where nothing would await it. No Consul: nothing here
registers (no uvicorn server, no gunicorn)."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from fastapi import FastAPI
from flask import Flask

from consul_discovery.registry import HealthChecks
from consul_discovery.registry.asgi import ConsulRegistry as AsgiRegistry
from consul_discovery.registry.flask import ConsulRegistry as FlaskRegistry


async def _fine() -> bool:
    await asyncio.sleep(0)
    return True


@pytest.mark.parametrize("checks", [HealthChecks(), HealthChecks(asynchronous=True)])
def test_a_check_that_is_not_callable_is_refused_naming_it(checks: HealthChecks):
    with pytest.raises(TypeError, match="check 'x' must be a function of no arguments; got int"):
        checks.add("x", 5)  # type: ignore[arg-type]


def test_every_registry_refuses_a_check_that_is_not_callable():
    for registry in (FlaskRegistry(Flask(__name__), environ={}), AsgiRegistry(environ={})):
        with pytest.raises(TypeError, match="check 'x'"):
            registry.add_check("x", 5)  # type: ignore[arg-type]


def test_flask_refuses_an_async_check_at_add_check():
    registry = FlaskRegistry(Flask(__name__), environ={})
    with pytest.raises(TypeError, match=r"check 'async_db' is an async function.*registry\.asgi"):
        registry.add_check("async_db", _fine)

    class Pinger:
        async def __call__(self) -> bool:
            return True

    with pytest.raises(TypeError, match="async function"):
        registry.add_check("pinger", Pinger())
    assert registry.health().passing  # nothing was added


def test_a_plain_check_returning_a_coroutine_fails_without_a_warning(recwarn):
    checks = HealthChecks()
    checks.add("sneaky", lambda: _fine())
    report = checks.evaluate()
    assert report.checks["sneaky"] == {
        "status": "critical",
        "error": "returned an awaitable, not awaited here",
    }
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


async def _get_health(app: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as http:
        return await http.get("/health")


def test_asgi_health_awaits_async_checks_on_the_apps_loop():
    registry = AsgiRegistry(environ={})
    app = FastAPI()
    registry.init_app(app)
    state = {"ok": True}
    loops: list[asyncio.AbstractEventLoop] = []
    threads: list[str] = []

    async def db() -> bool:
        loops.append(asyncio.get_running_loop())
        return state["ok"]

    def plain() -> None:
        threads.append(threading.current_thread().name)

    registry.add_check("async_db", db)
    registry.add_check("plain", plain)

    async def serve() -> None:
        async with registry.lifespan():  # the app's loop: this one
            ok = await _get_health(app)
            assert ok.status_code == 200, ok.json()
            assert ok.json() == {
                "status": "passing",
                "checks": {"async_db": {"status": "passing"}, "plain": {"status": "passing"}},
            }
            state["ok"] = False
            bad = await _get_health(app)
            assert bad.status_code == 503
            error = {"status": "critical", "error": "returned False"}
            assert bad.json()["checks"]["async_db"] == error
            # health() from another thread (the TTL heartbeat's): awaited on this loop
            state["ok"] = True
            assert (await asyncio.to_thread(registry.health)).passing
            assert loops[-1] is asyncio.get_running_loop()

    asyncio.run(serve())
    assert len(loops) == 3 and loops[0] is loops[1] is loops[2]
    main = threading.current_thread().name
    assert len(threads) == 3 and main not in threads[:2]  # /health: in a worker thread


def test_asgi_wrap_answers_health_with_async_checks_too():
    registry = AsgiRegistry(environ={})

    async def broken() -> None:
        raise ConnectionError("db down")

    registry.add_check("db", broken)

    async def inner(scope, receive, send) -> None:
        raise AssertionError("not for /health")

    answer = asyncio.run(_get_health(registry.wrap(inner)))
    assert answer.status_code == 503
    assert answer.json()["checks"]["db"] == {
        "status": "critical",
        "error": "ConnectionError: db down",
    }


def test_asgi_health_before_the_app_runs_awaits_on_a_loop_of_its_own():
    registry = AsgiRegistry(environ={})
    registry.add_check("async_db", _fine)
    assert registry.health().passing


def test_asgi_health_called_on_an_event_loop_says_to_await_health_async(recwarn):
    registry = AsgiRegistry(environ={})
    registry.add_check("async_db", _fine)

    async def blocking_call() -> None:
        report = registry.health()
        assert report.checks["async_db"]["status"] == "critical"
        assert "await health_async()" in report.checks["async_db"]["error"]
        assert (await registry.health_async()).passing

    asyncio.run(blocking_call())
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
