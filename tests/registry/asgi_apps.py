"""ASGI apps for registry tests: a FastAPI app and a plain ASGI app, both under
``consul_discovery.registry.asgi.ConsulRegistry``, steerable like tests.registry.apps
(HEALTH_CONTROL)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from consul_discovery.registry.asgi import ConsulRegistry


def _control() -> bool:
    path = os.environ.get("HEALTH_CONTROL")
    mode = Path(path).read_text().strip() if path and Path(path).exists() else "ok"
    if mode == "fail":
        raise RuntimeError("forced failure (fail)")
    return True


def create_app() -> FastAPI:
    """FastAPI: /hello, /slow?s=N, /health (the registry's)."""
    app = FastAPI()
    registry = ConsulRegistry()
    registry.add_check("control", _control)
    registry.init_app(app)

    @app.get("/hello")
    async def hello() -> dict[str, Any]:
        return {"pid": os.getpid(), "service_id": os.environ.get("SERVICE_ID")}

    @app.get("/slow")
    async def slow(s: float = 1.0) -> dict[str, Any]:
        await asyncio.sleep(s)
        return {"done": True}

    return app


async def _plain(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI app that knows nothing of lifespan: /hello only."""
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope {scope['type']}")
    body = json.dumps({"pid": os.getpid(), "service_id": os.environ.get("SERVICE_ID")}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


_plain_registry = ConsulRegistry()
_plain_registry.add_check("control", _control)
plain_app = _plain_registry.wrap(_plain)


async def _quiet(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI app in the shortest common style: it returns, silently, for any
    scope but http (so for lifespan too), and knows /hello only (404 elsewhere)."""
    if scope["type"] != "http":
        return
    if scope["path"].removeprefix(scope.get("root_path") or "") != "/hello":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not found"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


quiet_app = ConsulRegistry().wrap(_quiet)
