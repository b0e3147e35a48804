"""The relay's wire format: one JSON object per line over a Unix socket (no I/O here).

A gunicorn master watches each target once for all its workers
(``consul_discovery.client.relay``); this module is what travels between them:

- the master says ``{"hello": 1, "pid": P, "salt": S}``; the worker proves it holds the
  same ACL token without sending it (``{"auth": HMAC-SHA256(S, token), "address": A}``,
  ``token_proof``) and names the agent it would ask; the master answers ``{"ok": true}``
  or ``{"refused": why}`` (another token or agent: the worker watches by itself);
- the worker asks ``{"watch": N, "key": K}`` (``encode_key``: the Target plus the config
  fields that shape its Resolution); asking again keeps an unresolved watch alive, and
  ``"pin": true`` keeps it for good (the worker serves a cold-start snapshot meanwhile);
- the worker asks ``{"chain_watch": N, "service": S}`` to follow a service's discovery
  chain; the master pushes ``{"id": N, "chain": BODY}`` (Consul's answer, which the
  worker reads and compiles itself) for each new chain;
- the master pushes ``{"id": N, "resolution": R, "refresh": F, "error": E, "stats":
  [requests, errors, index, rate_limited]}`` with whichever changed: a Resolution whose
  instances, panic or held set changed, whole (``encode_resolution``); one whose
  index, ``fetched_at``, ``stale`` or ``error`` only changed, as those four fields
  (``refresh``: an unchanged poll costs a few bytes, not the instance list); a first
  error (``encode_error``); the watch's counters.

``fetched_at`` is CLOCK_MONOTONIC, one clock for every process of the host, so a
worker's ``age()`` of a relayed Resolution is right.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from dataclasses import fields
from typing import Any

from consul_discovery.client.errors import (
    ConsulPermissionError,
    ConsulQueryError,
    ConsulRateLimitedError,
    ConsulUnavailableError,
    DiscoveryError,
    UnknownServiceError,
)
from consul_discovery.client.instance import Instance, Resolution
from consul_discovery.client.source import WatchKey
from consul_discovery.client.target import Target
from consul_discovery.connection.exchange import loads

try:  # the speedups extra
    import orjson
except ImportError:
    orjson = None

#: Set by the gunicorn master (``relay.start_master_relay``): the relay's socket path.
RELAY_ENV = "CONSUL_DISCOVERY_RELAY"
#: ``false`` turns the relay off (the master runs none; workers watch by themselves).
SHARED_WATCHES_ENV = "DISCOVERY_SHARED_WATCHES"

_INSTANCE_FIELDS = tuple(f.name for f in fields(Instance))
_ERRORS: dict[str, type[DiscoveryError]] = {
    cls.__name__: cls
    for cls in (
        ConsulRateLimitedError,
        ConsulUnavailableError,
        ConsulPermissionError,
        ConsulQueryError,
        DiscoveryError,
    )
}


class RelayProtocolError(ValueError):
    """A relay message that does not parse or says something impossible."""


def line(message: dict[str, Any]) -> bytes:
    """``message`` as one line of the wire format (orjson when installed)."""
    if orjson is not None:
        return orjson.dumps(message) + b"\n"  # type: ignore[no-any-return]
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def parse(raw: bytes) -> dict[str, Any]:
    """One line of the wire format as a dict (raises RelayProtocolError)."""
    try:
        message = loads(raw)
    except ValueError as exc:
        raise RelayProtocolError(f"not JSON: {raw[:60]!r}") from exc
    if not isinstance(message, dict):
        raise RelayProtocolError(f"not an object: {raw[:60]!r}")
    return message


def token_proof(salt: str, token: str | None) -> str:
    """HMAC-SHA256 of the token under the master's salt (the token never travels)."""
    return hmac.new(salt.encode(), (token or "").encode(), hashlib.sha256).hexdigest()


def encode_key(key: WatchKey) -> dict[str, Any]:
    """A WatchKey as JSON data."""
    target = key.target
    return {
        "service": target.service,
        "dc": target.datacenter,
        "filter": target.filter,
        "tag": target.tag,
        "connect": target.connect,
        "only_passing": target.only_passing,
        "query": target.prepared_query,
        "panic": key.panic_threshold,
        "grace": key.vanish_grace,
    }


def decode_key(data: Any) -> WatchKey:
    """The WatchKey ``encode_key`` made (raises RelayProtocolError for bad data)."""
    try:
        target = Target(
            data["service"],
            datacenter=data.get("dc"),
            filter=data.get("filter"),
            tag=data.get("tag"),
            connect=bool(data.get("connect", False)),
            only_passing=bool(data.get("only_passing", False)),
            prepared_query=data.get("query"),
        )
        panic = data.get("panic")
        grace = float(data["grace"])
        return WatchKey(target, None if panic is None else float(panic), grace)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RelayProtocolError(f"bad watch key {data!r}: {exc}") from exc


def encode_resolution(resolution: Resolution) -> dict[str, Any]:
    """A Resolution as JSON data (every field; instances as objects)."""
    return {
        "service": resolution.service,
        "instances": [_encode_instance(i) for i in resolution.instances],
        "index": resolution.index,
        "fetched_at": resolution.fetched_at,
        "stale": resolution.stale,
        "error": resolution.error,
        "panic": resolution.panic,
        "held": list(resolution.held),
    }


def decode_resolution(data: Any, previous: Resolution | None = None) -> Resolution:
    """The Resolution ``encode_resolution`` made; instances equal to one of ``previous``
    are that same object (a flip rebuilds one instance, not a hundred)."""
    try:
        known = {i.id: i for i in previous.instances} if previous is not None else {}
        instances = []
        for item in data["instances"]:
            instance = Instance(**{name: item[name] for name in _INSTANCE_FIELDS if name in item})
            old = known.get(instance.id)
            instances.append(old if old is not None and old == instance else instance)
        return Resolution(
            str(data["service"]),
            tuple(instances),
            int(data["index"]),
            float(data["fetched_at"]),
            stale=bool(data.get("stale", False)),
            error=data.get("error"),
            panic=bool(data.get("panic", False)),
            held=tuple(str(h) for h in data.get("held", ())),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RelayProtocolError(f"bad resolution: {exc}") from exc


def refresh_of(resolution: Resolution) -> list[Any]:
    """The fields an unchanged poll refreshes: index, fetched_at, stale, error."""
    return [resolution.index, resolution.fetched_at, resolution.stale, resolution.error]


def apply_refresh(resolution: Resolution, refresh: Any) -> Resolution:
    """``resolution`` with ``refresh_of``'s four fields replaced."""
    try:
        index, fetched_at, stale, error = refresh
        return dataclasses.replace(
            resolution,
            index=int(index),
            fetched_at=float(fetched_at),
            stale=bool(stale),
            error=None if error is None else str(error),
        )
    except (TypeError, ValueError) as exc:
        raise RelayProtocolError(f"bad refresh {refresh!r}: {exc}") from exc


def encode_error(error: BaseException) -> dict[str, Any]:
    """A watch's first error as JSON data (its class by name, its message)."""
    if isinstance(error, UnknownServiceError):
        return {"type": "UnknownServiceError", "service": error.service, "known": list(error.known)}
    if not isinstance(error, DiscoveryError):
        return {"type": "ConsulQueryError", "message": f"cannot read Consul's answer: {error!r}"}
    name = next((n for n, cls in _ERRORS.items() if type(error) is cls), "DiscoveryError")
    return {"type": name, "message": str(error)}


def decode_error(data: Any) -> DiscoveryError:
    """The error ``encode_error`` described, as the same class."""
    try:
        if data["type"] == "UnknownServiceError":
            return UnknownServiceError(str(data["service"]), [str(k) for k in data["known"]])
        cls = _ERRORS.get(str(data["type"]), DiscoveryError)
        return cls(str(data["message"]))
    except (KeyError, TypeError) as exc:
        raise RelayProtocolError(f"bad error {data!r}: {exc}") from exc


def _encode_instance(instance: Instance) -> dict[str, Any]:
    values = {name: getattr(instance, name) for name in _INSTANCE_FIELDS}
    values["tags"] = list(instance.tags)
    values["meta"] = dict(instance.meta)
    return values
