"""The seed's flow through the gateway: register, log in, create an order (order-service
reserves its items with inventory-service), fetch it, see the stock it took.

    python -m services.demo [--gateway http://127.0.0.1:8080] [--no-live-config]

Each step prints what it sent and what came back; the exit status is 0 only if every
step succeeded. The username is fresh each run, so the demo can be repeated. Then a
live setting: ``orders.max_items`` is lowered to 1 in Consul KV (CONSUL_HTTP_ADDR), a
2-item order is refused with 422 without any redeploy, the setting is restored and the
same order goes through.

In a cluster run with ``MESH=1``, ``mesh_refusal_demo`` then shows a direct call to a
mesh instance, around the gateway and without a certificate, refused at the TLS
handshake (``python -m services.cluster demo`` runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from consul_discovery.config.errors import ConfigError
from consul_discovery.config.kv import KVStore
from consul_discovery.connection import ConsulConnection
from services.client import ApiError, ClientError, PlatformClient

DEFAULT_GATEWAY = os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080")


def run_demo(client: PlatformClient, out: TextIO | None = None) -> dict[str, Any]:
    """Run the five steps with ``client``, printing each (to stdout); returns the order."""
    out = out or sys.stdout
    username = f"demo-{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex

    def step(number: int, title: str, action: Callable[[], Any]) -> Any:
        print(f"[{number}/5] {title}", file=out, flush=True)
        result = action()
        shown = {"token": f"{result[:16]}..."} if isinstance(result, str) else result
        print("      -> " + json.dumps(shown, sort_keys=True), file=out, flush=True)
        return result

    step(1, f"register user {username!r}", lambda: client.register(username, password))
    step(2, f"log in as {username!r}", lambda: client.login(username, password))
    key = uuid.uuid4().hex
    before = client.stock("book")
    order = step(
        3,
        f"create an order (Idempotency-Key {key})",
        lambda: client.create_order([("book", 2), ("pen", 1)], idempotency_key=key),
    )
    fetched = step(4, f"fetch order {order['id']}", lambda: client.get_order(order["id"]))
    if fetched["id"] != order["id"] or fetched["items"] != order["items"]:
        raise ClientError(f"fetched order {fetched} differs from created {order}")
    after = step(5, "stock of 'book' in inventory-service", lambda: client.stock("book"))
    if after > before - 2:  # other clients may reserve too, never give back
        raise ClientError(f"the order reserved no stock: {before} before, {after} after")
    print("demo OK", file=out, flush=True)
    return fetched


MAX_ITEMS_KEY = "config/order-service/orders/max_items"


def live_config_demo(
    client: PlatformClient, store: KVStore, out: TextIO | None = None, timeout: float = 10.0
) -> None:
    """Lower ``orders.max_items`` in KV, show the 422, restore it, show the 201."""
    out = out or sys.stdout
    items = [("book", 1), ("pen", 1)]
    before = store.get(MAX_ITEMS_KEY)

    def until(accepted: bool) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.create_order(items, idempotency_key=uuid.uuid4().hex)
                outcome = "201"
            except ApiError as exc:
                if exc.status != 422:
                    raise
                outcome = f"422 {exc.code}"
            if outcome.startswith("201") == accepted:
                return outcome
            if time.monotonic() > deadline:
                raise ClientError(f"max_items did not take effect in {timeout}s ({outcome})")
            time.sleep(0.05)

    print(f"[live] put {MAX_ITEMS_KEY} = 1 in Consul KV", file=out, flush=True)
    store.put(MAX_ITEMS_KEY, "1")
    try:
        print(f"      -> POST /orders with 2 items: {until(False)}", file=out, flush=True)
    finally:
        if before is None or before.value is None:
            store.delete(MAX_ITEMS_KEY)
        else:
            store.put(MAX_ITEMS_KEY, before.value)
    print(f"[live] restored {MAX_ITEMS_KEY}", file=out, flush=True)
    print(f"      -> POST /orders with 2 items: {until(True)}", file=out, flush=True)
    print("live config OK", file=out, flush=True)


def mesh_refusal_demo(service: str, host: str, port: int, out: TextIO | None = None) -> str:
    """Call ``service``'s instance at ``host:port`` directly over TLS with no client
    certificate; return how it was refused (ClientError if it answered)."""
    out = out or sys.stdout
    print(f"[mesh] GET /health on {service} at {host}:{port}, no certificate", file=out)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we present nothing and check nothing
    try:
        with (
            socket.create_connection((host, port), timeout=5) as raw,
            context.wrap_socket(raw) as tls,
        ):
            # TLS 1.3: the server checks the (missing) certificate after its Finished;
            # its refusal (an alert, or the connection closed) comes on the first read.
            tls.sendall(b"GET /health HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
            answer = tls.recv(1024)
    except (ssl.SSLError, ConnectionError) as exc:
        refused = f"refused at the TLS handshake ({type(exc).__name__}: {exc})"
    else:
        if answer:
            raise ClientError(f"{service} answered a caller without a certificate: {answer!r}")
        refused = "refused at the TLS handshake (closed without an answer)"
    print(f"      -> {refused}", file=out, flush=True)
    print("mesh OK: only callers with a mesh certificate get in", file=out, flush=True)
    return refused


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m services.demo", description=__doc__)
    parser.add_argument("--gateway", default=DEFAULT_GATEWAY, help="gateway base URL")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument(
        "--no-live-config", action="store_true", help="skip the live KV setting step"
    )
    args = parser.parse_args(argv)
    print(f"gateway: {args.gateway}", flush=True)
    try:
        client = PlatformClient.via_gateway(args.gateway, timeout=args.timeout)
        run_demo(client)
        if not args.no_live_config:
            store = KVStore(ConsulConnection.from_env())
            try:
                live_config_demo(client, store)
            finally:
                store.close()
    except (ClientError, ConfigError) as exc:
        print(f"demo FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
