"""The inventory datastore: stock per SKU and reservations, one per Idempotency-Key.

A reservation takes stock for every item of an order in one transaction
(``BEGIN IMMEDIATE``: one writer at a time across every instance sharing the file), so
either all items are reserved or none. The primary key on ``reservations.key`` makes a
retried reservation take stock once: a repeat returns the first reservation, a repeat
with a different body is an error. A SKU seen for the first time starts with the
configured initial stock.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (
    sku       TEXT    PRIMARY KEY,
    available INTEGER NOT NULL CHECK (available >= 0)
);
CREATE TABLE IF NOT EXISTS reservations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    key          TEXT    NOT NULL UNIQUE,
    items        TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    created_at   REAL    NOT NULL
);
"""


class KeyReusedError(Exception):
    """The reservation key was already used with a different request body."""


class InsufficientStockError(Exception):
    """A SKU has less stock than the reservation asks for."""

    def __init__(self, sku: str, available: int, wanted: int) -> None:
        super().__init__(f"{sku}: {available} available, {wanted} wanted")
        self.sku = sku
        self.available = available
        self.wanted = wanted


@dataclass(frozen=True, slots=True)
class Reservation:
    """A stored reservation."""

    id: int
    key: str
    items: tuple[dict[str, Any], ...]
    created_at: float

    def public(self) -> dict[str, Any]:
        """The reservation as the API shows it."""
        return {"id": self.id, "key": self.key, "items": list(self.items)}


def _reservation(row: sqlite3.Row) -> Reservation:
    return Reservation(row["id"], row["key"], tuple(json.loads(row["items"])), row["created_at"])


def _by_key(conn: sqlite3.Connection, key: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM reservations WHERE key = ?", (key,)).fetchone()


def reserve(
    conn: sqlite3.Connection,
    key: str,
    items: list[dict[str, Any]],
    request_hash: str,
    initial_stock: int,
) -> tuple[Reservation, bool]:
    """Take stock for ``items`` under ``key``; a repeated key returns the first (False)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = _by_key(conn, key)
        if row is not None:
            if row["request_hash"] != request_hash:
                raise KeyReusedError(key)
            conn.execute("COMMIT")
            return _reservation(row), False
        wanted: dict[str, int] = {}
        for item in items:
            wanted[item["sku"]] = wanted.get(item["sku"], 0) + int(item["quantity"])
        for sku, quantity in sorted(wanted.items()):
            conn.execute(
                "INSERT OR IGNORE INTO stock (sku, available) VALUES (?, ?)", (sku, initial_stock)
            )
            available = conn.execute(
                "SELECT available FROM stock WHERE sku = ?", (sku,)
            ).fetchone()[0]
            if available < quantity:
                raise InsufficientStockError(sku, available, quantity)
            conn.execute(
                "UPDATE stock SET available = available - ? WHERE sku = ?", (quantity, sku)
            )
        now = time.time()
        cur = conn.execute(
            "INSERT INTO reservations (key, items, request_hash, created_at) VALUES (?, ?, ?, ?)",
            (key, json.dumps(items), request_hash, now),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return Reservation(int(cur.lastrowid or 0), key, tuple(items), now), True


def available(conn: sqlite3.Connection, sku: str, initial_stock: int) -> int:
    """The stock of ``sku`` (the initial stock if it was never reserved)."""
    row = conn.execute("SELECT available FROM stock WHERE sku = ?", (sku,)).fetchone()
    return initial_stock if row is None else int(row[0])


def reservation_count(conn: sqlite3.Connection, key: str) -> int:
    """How many reservations carry ``key`` (0 or 1; for tests and checks)."""
    return int(
        conn.execute("SELECT count(*) FROM reservations WHERE key = ?", (key,)).fetchone()[0]
    )
