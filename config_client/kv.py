"""Consul's KV HTTP API through a ``ConsulConnection`` session: read, blocking read, write.

The config client's own Consul source (it needs no py-consul). The token travels in the
session's header only; errors name the key and the agent, never the token.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from consul_discovery.config.errors import CasConflictError, ConsulKVError, KVAccessDenied
from consul_discovery.connection import ConsulConnection, acl_denial, filtered_by_acls

TXN_MAX_OPS = 64  # Consul's limit per transaction (txn_max_req_len aside)


@dataclass(frozen=True, slots=True)
class Entry:
    """One KV pair: its key, decoded value (None: empty or a folder) and ModifyIndex."""

    key: str
    value: str | None
    modify_index: int


@dataclass(frozen=True, slots=True)
class Listing:
    """A prefix read: ``X-Consul-Index`` (None when missing) and the entries (404: none)."""

    index: int | None
    entries: tuple[Entry, ...]

    def values(self) -> dict[str, str | None]:
        """Key -> value."""
        return {e.key: e.value for e in self.entries}


@dataclass(frozen=True, slots=True)
class Write:
    """One write for ``KVStore.apply``: set (``value``) or delete (``value`` None).

    ``cas`` is the ModifyIndex the key must still have (0: must not exist yet); None
    writes unconditionally.
    """

    key: str
    value: str | None
    cas: int | None = None


def _wait_param(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _decode(raw: str | None) -> str | None:
    if raw is None:
        return None
    return base64.b64decode(raw).decode("utf-8", errors="replace")


class KVStore:
    """Reads and writes one agent's KV store; safe to share between threads.

    One requests Session per thread (a blocking query holds its connection for the
    whole wait; a session is not shared across threads).
    """

    def __init__(self, connection: ConsulConnection) -> None:
        self.connection = connection
        self._local = threading.local()  # each thread's own Session
        self._sessions: list[requests.Session] = []  # guarded by _lock, closed by close()
        self._lock = threading.Lock()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self.connection.session()
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        """Close every session (a blocking read in progress fails)."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def _url(self, key: str) -> str:
        return f"{self.connection.base_url}/v1/kv/{quote(key, safe='/,')}"

    def _send(self, method: str, url: str, what: str, *, wait: float = 0.0, **kw: Any):
        timeout = (self.connection.connect_timeout, self.connection.read_timeout + wait)
        try:
            response = self._session().request(method, url, timeout=timeout, **kw)
        except requests.RequestException as exc:
            raise ConsulKVError(
                f"Consul at {self.connection.address} unreachable ({what}): {type(exc).__name__}"
            ) from exc
        if response.status_code == 403:
            denial = acl_denial(response.text, what)
            raise KVAccessDenied(f"{denial} (agent {self.connection.address})")
        if filtered_by_acls(response.headers):
            # A configuration with some keys silently missing is worse than none.
            raise KVAccessDenied(
                f"Consul at {self.connection.address} denied part of {what}: the ACL token "
                "may not read every key there (key_prefix read needed)"
            )
        if response.status_code >= 400 and response.status_code not in (404, 409):
            raise ConsulKVError(
                f"Consul at {self.connection.address} answered {response.status_code} to "
                f"{what}: {response.text.strip()[:200]}"
            )
        return response

    def list(self, prefix: str, index: int = 0, wait: float = 0.0) -> Listing:
        """Every entry under ``prefix``; with ``index`` > 0 a blocking query (``wait`` s)."""
        params: dict[str, str] = {"recurse": "true"}
        if index > 0:
            params["index"] = str(index)
            params["wait"] = _wait_param(wait)
        response = self._send(
            "GET", self._url(prefix), f"read of {prefix}", wait=wait if index else 0, params=params
        )
        raw_index = response.headers.get("X-Consul-Index")
        returned = int(raw_index) if raw_index and raw_index.isdigit() else None
        if response.status_code == 404:
            return Listing(returned, ())
        entries = tuple(
            Entry(item["Key"], _decode(item.get("Value")), int(item["ModifyIndex"]))
            for item in response.json()
        )
        return Listing(returned, entries)

    def check_readable(self, prefix: str) -> None:
        """Raise ``KVAccessDenied`` unless the token may read ``prefix`` itself.

        A recursive read the token may not make answers 404, like an empty prefix (no
        filtered-results header either, seen on 1.22): a plain read of the prefix's own
        key tells the two apart (403 vs 404).
        """
        self._send("GET", self._url(prefix), f"read of {prefix}")

    def get(self, key: str) -> Entry | None:
        """One key, or None if it does not exist."""
        response = self._send("GET", self._url(key), f"read of {key}")
        if response.status_code == 404:
            return None
        item = response.json()[0]
        return Entry(item["Key"], _decode(item.get("Value")), int(item["ModifyIndex"]))

    def put(self, key: str, value: str, cas: int | None = None) -> None:
        """Write one key (``cas``: only if its ModifyIndex is still that; 0: only if new)."""
        params = {} if cas is None else {"cas": str(cas)}
        response = self._send(
            "PUT", self._url(key), f"write of {key}", params=params, data=value.encode()
        )
        if response.text.strip() != "true":
            raise CasConflictError([key], f"its ModifyIndex is no longer {cas}")

    def delete(self, key: str, cas: int | None = None) -> None:
        """Delete one key (``cas`` as for ``put``)."""
        params = {} if cas is None else {"cas": str(cas)}
        response = self._send("DELETE", self._url(key), f"delete of {key}", params=params)
        if response.text.strip() != "true":
            raise CasConflictError([key], f"its ModifyIndex is no longer {cas}")

    def apply(self, writes: Iterable[Write]) -> int:
        """Apply ``writes`` in transactions of up to 64 (each all-or-nothing); return the count.

        A check-and-set that fails aborts its transaction: ``CasConflictError`` names the
        keys and nothing of that transaction is written.
        """
        writes = list(writes)
        for start in range(0, len(writes), TXN_MAX_OPS):
            chunk = writes[start : start + TXN_MAX_OPS]
            response = self._send(
                "PUT",
                f"{self.connection.base_url}/v1/txn",
                f"transaction of {len(chunk)} write(s)",
                json=[{"KV": _txn_op(w)} for w in chunk],
            )
            if response.status_code == 409:
                errors = (response.json() or {}).get("Errors") or []
                keys = [chunk[e["OpIndex"]].key for e in errors if "OpIndex" in e]
                detail = "; ".join(e.get("What", "") for e in errors) or "rolled back"
                raise CasConflictError(keys, detail)
        return len(writes)


def _txn_op(write: Write) -> Mapping[str, Any]:
    if write.value is None:
        if write.cas is None:
            return {"Verb": "delete", "Key": write.key}
        return {"Verb": "delete-cas", "Key": write.key, "Index": write.cas}
    value = base64.b64encode(write.value.encode()).decode()
    if write.cas is None:
        return {"Verb": "set", "Key": write.key, "Value": value}
    return {"Verb": "cas", "Key": write.key, "Value": value, "Index": write.cas}
