"""Stock: a FastAPI service, served by uvicorn, that calls the orders service by name.

pip install 'consul-discovery[asgi,uvicorn,httpx]' fastapi
SERVICE_NAME=stock uvicorn services.stock:app --port 8002
"""

from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from consul_discovery.client import AsyncDiscoveryTransport
from consul_discovery.registry.asgi import ConsulRegistry


@asynccontextmanager
async def lifespan(app: FastAPI):
    # One discovery client for the app's life (Consul from CONSUL_HTTP_ADDR): services
    # are addressed by name, http://orders/...; closing it stops its watches.
    async with httpx.AsyncClient(transport=AsyncDiscoveryTransport(), timeout=10) as http:
        app.state.http = http
        yield


app = FastAPI(lifespan=lifespan)
ConsulRegistry().init_app(app)  # GET /health; registers once uvicorn listens, drains on SIGTERM


@app.get("/stock/{item}")
async def stock(item: str) -> dict:
    return {"item": item, "count": 3}


@app.get("/reorder/{item}")
async def reorder(item: str) -> dict:
    response = await app.state.http.get(f"http://orders/orders/{item}")
    response.raise_for_status()
    return {"item": item, "orders": response.json()}
