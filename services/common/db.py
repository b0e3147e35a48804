"""SQLite as a service datastore shared by every instance of the service.

One file per service (path configurable), in WAL mode so readers never block the single
writer, with a busy timeout so instances that write at the same moment wait for each
other instead of failing. Connections are per request (Flask ``g``), opened lazily and
closed at teardown, in autocommit mode: each statement is its own transaction, which
is all the services need (their writes are single statements guarded by constraints).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, Response, current_app, g

from services.common.errors import ApiError, error_response


class DatabaseUnavailableError(Exception):
    """The datastore could not be opened or queried."""


@dataclass(frozen=True, slots=True)
class Database:
    """Where a service's SQLite file lives, its schema, and how to connect to it."""

    path: str
    schema: str
    busy_timeout_ms: int = 5000

    def connect(self) -> sqlite3.Connection:
        """Open a new autocommit connection with the service's pragmas applied."""
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=True,
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise DatabaseUnavailableError(f"cannot open {self.path}: {exc}") from exc
        return conn

    def create_schema(self) -> None:
        """Create the file's directory, switch to WAL, and create tables if missing."""
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnavailableError(f"cannot create the directory of {self.path}") from exc
        conn = self.connect()
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise DatabaseUnavailableError(f"{self.path}: could not enable WAL (got {mode})")
            conn.executescript(self.schema)
        except sqlite3.Error as exc:
            raise DatabaseUnavailableError(f"cannot create schema in {self.path}: {exc}") from exc
        finally:
            conn.close()

    def check(self) -> bool:
        """Health check: the file opens and the schema is readable; raises if not."""
        try:
            conn = sqlite3.connect(
                f"file:{self.path}?mode=rw", uri=True, timeout=self.busy_timeout_ms / 1000
            )
            try:
                tables = conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                ).fetchone()[0]
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise DatabaseUnavailableError(f"{self.path}: {exc}") from exc
        if tables == 0:
            raise DatabaseUnavailableError(f"{self.path}: schema is missing")
        return True


def init_db(app: Flask, database: Database) -> None:
    """Create the schema now and give each request its own connection via ``get_db``."""
    database.create_schema()
    app.extensions["database"] = database

    @app.errorhandler(sqlite3.OperationalError)
    @app.errorhandler(DatabaseUnavailableError)
    def _unavailable(exc: Exception) -> Response:
        app.logger.warning("datastore unavailable: %s", exc)
        return error_response(
            ApiError(503, "datastore_unavailable", "the datastore is unavailable; retry later")
        )

    @app.teardown_appcontext
    def _close(_exc: BaseException | None) -> None:
        conn = g.pop("db_conn", None)
        if conn is not None:
            conn.close()


def get_database(app: Flask) -> Database:
    """The app's Database value (set by ``init_db``)."""
    return app.extensions["database"]


def get_db() -> sqlite3.Connection:
    """This request's connection, opened on first use and closed at teardown."""
    conn = g.get("db_conn")
    if conn is None:
        conn = get_database(current_app).connect()
        g.db_conn = conn
    return conn
