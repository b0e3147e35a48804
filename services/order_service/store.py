"""The order-service datastore: orders, with at most one order per (user, Idempotency-Key).

The unique constraint on ``(user_id, idempotency_key)`` is what makes a retried POST
create exactly one order, across threads, workers and instances sharing the file: the
losing insert fails and reads the winner's row instead. ``request_hash`` remembers the
body the key was first used with, so a reuse with a different body is detected.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         INTEGER NOT NULL,
    items           TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    created_at      REAL    NOT NULL,
    idempotency_key TEXT,
    request_hash    TEXT    NOT NULL,
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, id);
"""


class IdempotencyKeyReusedError(Exception):
    """The Idempotency-Key was already used by this user with a different request body."""

    def __init__(self, existing: Order) -> None:
        super().__init__(f"idempotency key already used for order {existing.id}")
        self.existing = existing


@dataclass(frozen=True, slots=True)
class Order:
    """A stored order."""

    id: int
    user_id: int
    items: tuple[dict[str, Any], ...]
    status: str
    created_at: float
    idempotency_key: str | None
    request_hash: str

    def public(self) -> dict[str, Any]:
        """The order as the API shows it."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "items": list(self.items),
            "status": self.status,
            "created_at": self.created_at,
            "idempotency_key": self.idempotency_key,
        }


def _order(row: sqlite3.Row) -> Order:
    return Order(
        id=row["id"],
        user_id=row["user_id"],
        items=tuple(json.loads(row["items"])),
        status=row["status"],
        created_at=row["created_at"],
        idempotency_key=row["idempotency_key"],
        request_hash=row["request_hash"],
    )


def _by_key(conn: sqlite3.Connection, user_id: int, key: str) -> Order | None:
    row = conn.execute(
        "SELECT * FROM orders WHERE user_id = ? AND idempotency_key = ?", (user_id, key)
    ).fetchone()
    return _order(row) if row is not None else None


def order_by_key(conn: sqlite3.Connection, user_id: int, key: str) -> Order | None:
    """The user's order created with Idempotency-Key ``key``, if any."""
    return _by_key(conn, user_id, key)


def create_order(
    conn: sqlite3.Connection,
    user_id: int,
    items: list[dict[str, Any]],
    request_hash: str,
    idempotency_key: str | None = None,
) -> tuple[Order, bool]:
    """Insert an order; with a key already used, return that order and False instead.

    Raises IdempotencyKeyReusedError when the key's first request had another body.
    """
    if idempotency_key is not None:
        existing = _by_key(conn, user_id, idempotency_key)
        if existing is not None:
            return _replay(existing, request_hash), False
    now = time.time()
    try:
        cur = conn.execute(
            "INSERT INTO orders (user_id, items, status, created_at, idempotency_key,"
            " request_hash) VALUES (?, ?, 'created', ?, ?, ?)",
            (user_id, json.dumps(items), now, idempotency_key, request_hash),
        )
    except sqlite3.IntegrityError:
        if idempotency_key is None:
            raise
        existing = _by_key(conn, user_id, idempotency_key)
        if existing is None:
            raise
        return _replay(existing, request_hash), False
    order = Order(
        int(cur.lastrowid or 0),
        user_id,
        tuple(items),
        "created",
        now,
        idempotency_key,
        request_hash,
    )
    return order, True


def _replay(existing: Order, request_hash: str) -> Order:
    if existing.request_hash != request_hash:
        raise IdempotencyKeyReusedError(existing)
    return existing


def order_by_id(conn: sqlite3.Connection, order_id: int) -> Order | None:
    """The order with this id, whoever owns it."""
    row = conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
    return _order(row) if row is not None else None


def orders_of(conn: sqlite3.Connection, user_id: int, limit: int) -> list[Order]:
    """A user's orders, oldest first, at most ``limit``."""
    rows = conn.execute(
        "SELECT * FROM orders WHERE user_id = ? ORDER BY id LIMIT ?", (user_id, limit)
    ).fetchall()
    return [_order(row) for row in rows]
