"""The user-service datastore: users and their password hashes, in SQLite."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT    NOT NULL,
    created_at    REAL    NOT NULL
);
"""


class UsernameTakenError(Exception):
    """Another user already has this username (case-insensitively)."""


@dataclass(frozen=True, slots=True)
class User:
    """A stored user (the hash never leaves the service)."""

    id: int
    username: str
    password_hash: str
    created_at: float

    def public(self) -> dict[str, object]:
        """The user as the API shows it."""
        return {"id": self.id, "username": self.username, "created_at": self.created_at}


def _user(row: sqlite3.Row | None) -> User | None:
    if row is None:
        return None
    return User(row["id"], row["username"], row["password_hash"], row["created_at"])


def create_user(conn: sqlite3.Connection, username: str, password_hash: str) -> User:
    """Insert a user; UsernameTakenError when the name exists."""
    now = time.time()
    try:
        cur = conn.execute(
            "INSERT INTO users (username, password_hash, created_at) VALUES (?, ?, ?)",
            (username, password_hash, now),
        )
    except sqlite3.IntegrityError as exc:
        raise UsernameTakenError(username) from exc
    return User(int(cur.lastrowid or 0), username, password_hash, now)


def user_by_name(conn: sqlite3.Connection, username: str) -> User | None:
    """The user with this username, if any."""
    return _user(conn.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone())


def user_by_id(conn: sqlite3.Connection, user_id: int) -> User | None:
    """The user with this id, if any."""
    return _user(conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone())
