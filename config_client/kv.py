"""Consul's KV HTTP API through a ``ConsulConnection`` session: read, blocking read, write.

The config client's own Consul source (it needs no py-consul). Requests are built as
values (``consul_connection.exchange``) so the KV watch sends the very same ones, and
answers are judged by the one mapping every Consul client shares
(``consul_connection.refusals``: 403 -> ``KVAccessDenied``, unreachable or 5xx ->
``ConsulKVError``). The token travels in the session's header only; errors name the key
and the agent, never the token.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from consul_discovery.config.errors import CasConflictError, ConsulKVError, KVAccessDenied
from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.exchange import (
    Request,
    Response,
    TransportError,
    blocking_timeout,
    wait_param,
)
from consul_discovery.connection.forking import after_fork_in_child
from consul_discovery.connection.interrupt import PollInterrupter
from consul_discovery.connection.refusals import (
    ErrorKinds,
    answer_error,
    filtered_by_acls,
    transport_error,
)
from consul_discovery.connection.sending import send_with_session
from consul_discovery.connection.server_routing import Attempt
from consul_discovery.connection.server_sending import drive, routing_for

TXN_MAX_OPS = 64  # Consul's limit per transaction (txn_max_req_len aside)
KV_ERRORS = ErrorKinds(unavailable=ConsulKVError, refused=ConsulKVError, denied=KVAccessDenied)


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


def _decode(raw: str | None) -> str | None:
    if raw is None:
        return None
    return base64.b64decode(raw).decode("utf-8", errors="replace")


def _cas_params(cas: int | None) -> tuple[tuple[str, str], ...]:
    """The ``cas`` query parameter (none for None); a ModifyIndex is a whole number >= 0."""
    if cas is None:
        return ()
    if isinstance(cas, bool) or not isinstance(cas, int) or cas < 0:
        raise ValueError(f"cas is a key's ModifyIndex, a whole number >= 0; got {cas!r}")
    return (("cas", str(cas)),)


def _key_path(key: str) -> str:
    return f"/v1/kv/{quote(key, safe='/,')}"


def list_request(prefix: str, index: int, wait: float, read_timeout: float) -> Request:
    """A recursive read of ``prefix``; with ``index`` > 0 a blocking query (``wait`` s)."""
    params: list[tuple[str, str]] = [("recurse", "true")]
    if index > 0:
        params += [("index", str(index)), ("wait", wait_param(wait))]
        read_timeout = blocking_timeout(read_timeout, wait)
    return Request(_key_path(prefix), tuple(params), read_timeout)


def readable_request(prefix: str, read_timeout: float) -> Request:
    """A plain read of ``prefix``'s own key: 403 if the token may not read there."""
    return Request(_key_path(prefix), (), read_timeout)


def check_answer(response: Response, what: str, address: str, *, verb: str = "read") -> None:
    """Raise the config client's error for a KV answer (404 and 409 are answers, not
    errors; an answer ACLs trimmed is a denial: a configuration with some keys silently
    missing is worse than none)."""
    if filtered_by_acls(response.headers):
        raise KVAccessDenied(
            f"Consul at {address} denied part of {verb} {what}: the ACL token may not read "
            "every key there (key_prefix read needed)"
        )
    if response.status in (404, 409):
        return
    error = answer_error(response, what, address, KV_ERRORS, verb=verb)
    if error is not None:
        raise error


def read_listing(response: Response, prefix: str, address: str) -> Listing:
    """The entries of a recursive read (404: none); raises for a refusal."""
    check_answer(response, prefix, address)
    if response.status == 404:
        return Listing(response.index, ())
    entries = tuple(
        Entry(item["Key"], _decode(item.get("Value")), int(item["ModifyIndex"]))
        for item in response.json() or ()
    )
    return Listing(response.index, entries)


class KVStore:
    """Reads and writes one agent's KV store; safe to share between threads.

    One requests Session per thread (a blocking query holds its connection for the
    whole wait; a session is not shared across threads). With several addresses (or
    stale reads), each request goes through ``consul_connection.server_routing``: the
    next server takes it at once when one fails, and an index is trusted only where
    it is known.
    """

    def __init__(self, connection: ConsulConnection) -> None:
        self.connection = connection
        # Fixed at construction (None: one address, as before); thread-safe itself.
        self._routing = routing_for(connection) if connection.routed else None
        self._local = threading.local()  # each thread's own Session
        self._sessions: list[requests.Session] = []  # guarded by _lock, closed by close()
        # Tracks the sessions' connections in use, so close() can end a blocking read.
        self._interrupter = PollInterrupter()  # replaced by close(), under _lock
        self._lock = threading.Lock()  # replaced in a forked child
        after_fork_in_child(self._after_fork)

    def _session(self) -> requests.Session:
        local = self._local
        session = getattr(local, "session", None)
        if session is None:
            session = self.connection.session()
            with self._lock:
                self._interrupter.install(session)
                self._sessions.append(session)
            local.session = session
        return session

    def _after_fork(self) -> None:
        # The parent's sessions hold the parent's connections: forget them, never close.
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sessions = []
        self._interrupter = PollInterrupter()
        if self._routing is not None:  # its lock may be held by a lost thread; new shuffle
            self._routing = routing_for(self.connection)

    def close(self) -> None:
        """Close every session; a blocking read in progress ends at once (it fails).

        A later request opens a new session, as the first one did.
        """
        with self._lock:
            sessions, self._sessions = self._sessions, []
            interrupter, self._interrupter = self._interrupter, PollInterrupter()
            self._local = threading.local()
        interrupter.interrupt()
        for session in sessions:
            session.close()

    def send(self, request: Request) -> Response:
        """Send ``request`` on this thread's session (TransportError if no answer)."""
        connection = self.connection
        if self._routing is not None:
            return drive(self._routing.route(request), self._send_to)
        return send_with_session(
            self._session(), connection.base_url, connection.connect_timeout, request
        )

    def _send_to(self, attempt: Attempt) -> Response:
        """One attempt of a routed request: this thread's session, that server."""
        return send_with_session(
            self._session(),
            attempt.server.base_url,
            self.connection.connect_timeout,
            attempt.request,
        )

    def _call(self, request: Request, what: str, verb: str = "read") -> Response:
        try:
            response = self.send(request)
        except TransportError as exc:
            mapped = transport_error(exc, what, self.connection.address, KV_ERRORS)
            raise mapped from mapped.__cause__
        check_answer(response, what, self.connection.address, verb=verb)
        return response

    def list(self, prefix: str, index: int = 0, wait: float = 0.0) -> Listing:
        """Every entry under ``prefix``; with ``index`` > 0 a blocking query (``wait`` s)."""
        request = list_request(prefix, index, wait, self.connection.read_timeout)
        return read_listing(self._call(request, prefix), prefix, self.connection.address)

    def check_readable(self, prefix: str) -> None:
        """Raise ``KVAccessDenied`` unless the token may read ``prefix`` itself.

        A recursive read the token may not make answers 404, like an empty prefix (no
        filtered-results header either, seen on 1.22): a plain read of the prefix's own
        key tells the two apart (403 vs 404).
        """
        self._call(readable_request(prefix, self.connection.read_timeout), prefix)

    def get(self, key: str) -> Entry | None:
        """One key, or None if it does not exist."""
        response = self._call(Request(_key_path(key), (), self.connection.read_timeout), key)
        if response.status == 404:
            return None
        item = response.json()[0]
        return Entry(item["Key"], _decode(item.get("Value")), int(item["ModifyIndex"]))

    def put(self, key: str, value: str, cas: int | None = None) -> None:
        """Write one key (``cas``: only if its ModifyIndex is still that; 0: only if new)."""
        params = _cas_params(cas)
        request = Request(
            _key_path(key), params, self.connection.read_timeout, "PUT", body=value.encode()
        )
        response = self._call(request, key, "write")
        if response.text.strip() != "true":
            raise CasConflictError([key], f"its ModifyIndex is no longer {cas}")

    def delete(self, key: str, cas: int | None = None) -> None:
        """Delete one key (``cas`` as for ``put``)."""
        request = Request(_key_path(key), _cas_params(cas), self.connection.read_timeout, "DELETE")
        response = self._call(request, key, "delete")
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
            body = json.dumps([{"KV": _txn_op(w)} for w in chunk]).encode()
            request = Request("/v1/txn", (), self.connection.read_timeout, "PUT", body=body)
            response = self._call(request, f"a transaction of {len(chunk)} key(s)", "write")
            if response.status == 409:
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
