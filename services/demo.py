"""The seed's flow through the gateway: register, log in, create an order (order-service
reserves its items with inventory-service), fetch it, see the stock it took.

    python -m services.demo [--gateway http://127.0.0.1:8080]

Each step prints what it sent and what came back; the exit status is 0 only if every
step succeeded. The username is fresh each run, so the demo can be repeated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from services.client import ClientError, PlatformClient

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


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m services.demo", description=__doc__)
    parser.add_argument("--gateway", default=DEFAULT_GATEWAY, help="gateway base URL")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    args = parser.parse_args(argv)
    print(f"gateway: {args.gateway}", flush=True)
    try:
        run_demo(PlatformClient.via_gateway(args.gateway, timeout=args.timeout))
    except ClientError as exc:
        print(f"demo FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
