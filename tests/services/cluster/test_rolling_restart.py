"""Rolling restarts under steady load lose no request and never duplicate an order or a
stock reservation (inventory-service, FastAPI under uvicorn, restarted too)."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections import Counter

import pytest
import requests

from bench.loadgen import run_open_loop
from services.client import PlatformClient
from services.cluster import control
from services.cluster.plan import ClusterPlan

pytestmark = pytest.mark.slow

RATE = 30.0  # requests per second, mixed GET and POST
DURATION = 60.0  # seconds at most: the load ends TAIL s after the last restart
TAIL = 3.0


def test_rolling_restart_of_every_backend_under_load(small_cluster: ClusterPlan) -> None:
    plan = small_cluster
    users = []
    for n in range(4):
        client = PlatformClient.via_gateway(plan.gateway_url)
        name = f"load-{n}-{uuid.uuid4().hex[:6]}"
        client.register(name, "a long enough password")
        token = client.login(name, "a long enough password")
        users.append(token)
    seed_orders = [PlatformClient.via_gateway(plan.gateway_url) for _ in users]
    for client, token in zip(seed_orders, users, strict=True):
        client.token = token
    first_ids = [c.create_order([("seed", 1)])["id"] for c in seed_orders]

    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=64))
    keys: dict[int, tuple[int, str]] = {}

    def call(seq: int) -> tuple[bool, str]:
        who = (seq // 2) % len(users)  # POSTs and GETs spread over every user
        headers = {"Authorization": f"Bearer {users[who]}"}
        if seq % 2 == 0:
            key = f"k-{seq}-{uuid.uuid4().hex[:8]}"
            keys[seq] = (who, key)
            response = session.post(
                f"{plan.gateway_url}/api/orders",
                json={"items": [{"sku": f"sku-{seq}", "quantity": 1}]},
                headers={**headers, "Idempotency-Key": key},
                timeout=10,
            )
            ok = response.status_code == 201
        else:
            response = session.get(
                f"{plan.gateway_url}/api/orders/{first_ids[who]}", headers=headers, timeout=10
            )
            ok = response.status_code == 200
        return ok, f"{response.status_code} {response.text[:200]}"

    restart_errors: list[BaseException] = []
    stop = threading.Event()
    ended: list[float] = []  # seconds into the load when the last restart was done

    def restarts() -> None:
        try:
            control.rolling_restart(plan, "inventory-service", log=lambda _: None)
            control.rolling_restart(plan, "order-service", log=lambda _: None)
            control.rolling_restart(plan, "user-service", log=lambda _: None)
        except BaseException as exc:
            restart_errors.append(exc)
        finally:
            ended.append(time.monotonic() - load_started)
        time.sleep(TAIL)  # the load goes on a little after the last instance is back
        stop.set()

    restarter = threading.Thread(target=restarts, name="rolling-restart")
    load_started = time.monotonic()
    restarter.start()
    report = run_open_loop(call, rate=RATE, duration=DURATION, stop=stop)
    stop.set()
    restarter.join(timeout=150)

    assert not restarter.is_alive(), "rolling restart did not finish"
    assert not restart_errors, restart_errors
    print(f"rolling restarts ended {ended[0]:.1f}s into the load; {len(report.outcomes)} requests")
    load_end = max(o.intended for o in report.outcomes)
    assert load_end >= ended[0], f"the load ended at {load_end:.1f}s, before the restarts"
    assert len(report.outcomes) >= int(RATE * ended[0])
    assert report.failures == [], report.failures[:5]

    # Every instance is back and passing, and each key made exactly one order.
    assert {row.health for row in control.table(plan)} == {"passing"}
    per_key: Counter[str] = Counter()
    for who, token in enumerate(users):
        listing = session.get(
            f"{plan.gateway_url}/api/orders",
            params={"limit": 500},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        listing.raise_for_status()
        for order in listing.json()["orders"]:
            if order.get("idempotency_key"):
                per_key[order["idempotency_key"]] += 1
        expected = {key for w, key in keys.values() if w == who}
        assert expected <= set(per_key), "some POSTs created no order"
    assert set(per_key.values()) <= {1}, [k for k, n in per_key.items() if n > 1]

    # Each POSTed order reserved its one item exactly once (an order's SKU is its own).
    with sqlite3.connect(plan.data_dir / "inventory.sqlite3") as conn:
        taken = dict(conn.execute("SELECT sku, 1000000 - available FROM stock").fetchall())
    posted = {f"sku-{seq}" for seq in keys}
    assert {sku: taken.get(sku, 0) for sku in posted} == dict.fromkeys(posted, 1)
