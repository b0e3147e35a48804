"""The relay's wire format and a worker's mirror of a relayed watch (no sockets)."""

from __future__ import annotations

import pytest

from consul_discovery.client.errors import (
    ConsulPermissionError,
    ConsulQueryError,
    ConsulRateLimitedError,
    UnknownServiceError,
)
from consul_discovery.client.instance import Instance, Resolution
from consul_discovery.client.relay_client import RelayedState
from consul_discovery.client.relay_protocol import (
    RelayProtocolError,
    decode_error,
    decode_key,
    decode_resolution,
    encode_error,
    encode_key,
    encode_resolution,
    line,
    parse,
    refresh_of,
    token_proof,
)
from consul_discovery.client.source import WatchKey
from consul_discovery.client.target import Target


def resolution(*ids: str, index: int = 7, **kwargs: object) -> Resolution:
    instances = tuple(
        Instance(i, "web", "10.0.0.1", 8000 + n, tags=("v1",), meta={"zone": "a"})
        for n, i in enumerate(ids)
    )
    return Resolution("web", instances, index, 12.5, **kwargs)  # type: ignore[arg-type]


def test_a_resolution_travels_whole_and_unchanged_instances_stay_the_same_objects():
    first = resolution("a", "b", held=("b",), stale=True, error="ConsulUnavailableError: x")
    wire = parse(line({"resolution": encode_resolution(first)}))["resolution"]
    got = decode_resolution(wire)
    assert got == first
    second = resolution("a", "c", index=8)
    again = decode_resolution(parse(line({"r": encode_resolution(second)}))["r"], got)
    assert again.instances[0] is got.instances[0]  # "a" is unchanged: reused
    assert again.instances[1].id == "c" and again.index == 8


def test_keys_round_trip():
    key = WatchKey(
        Target("web", datacenter="dc2", filter='Service.Meta.v == "2"', tag="t"), 0.5, 3.0
    )
    assert decode_key(parse(line({"key": encode_key(key)}))["key"]) == key
    with pytest.raises(RelayProtocolError):
        decode_key({"dc": "dc1"})


def test_errors_keep_their_class_and_what_they_say():
    unknown = decode_error(encode_error(UnknownServiceError("wbe", ["web", "db"])))
    assert isinstance(unknown, UnknownServiceError) and unknown.known == ("db", "web")
    for error in (ConsulRateLimitedError("limited"), ConsulPermissionError("denied")):
        back = decode_error(encode_error(error))
        assert type(back) is type(error) and str(back) == str(error)
    odd = decode_error(encode_error(KeyError("Service")))
    assert type(odd) is ConsulQueryError and "KeyError" in str(odd)


def test_the_token_proof_needs_the_same_token_and_salt():
    assert token_proof("s1", "tok") == token_proof("s1", "tok")
    assert token_proof("s1", "tok") != token_proof("s2", "tok")
    assert token_proof("s1", "tok") != token_proof("s1", "other")
    assert "tok" not in token_proof("s1", "tok")


def test_bad_lines_are_protocol_errors():
    for raw in (b"not json\n", b"[1, 2]\n"):
        with pytest.raises(RelayProtocolError):
            parse(raw)


def test_a_relayed_state_mirrors_the_masters_watch():
    touched: list[tuple[WatchKey, bool, object]] = []
    key = WatchKey(Target("web"), None, 20.0)
    state = RelayedState(
        key, lambda k, pin=False, stand_in=None: touched.append((k, pin, stand_in))
    )
    state.touch()
    assert touched == [(key, False, None)]  # unresolved: "still wanted" goes to the master
    limited = encode_error(ConsulRateLimitedError("429"))
    assert state.apply({"error": limited, "stats": [3, 3, 0, 3]}) is None
    assert not state.first_done and isinstance(state.first_error, ConsulRateLimitedError)
    assert (state.requests, state.errors, state.rate_limited) == (3, 3, 3)
    fresh = resolution("a")
    announced = state.apply({"resolution": encode_resolution(fresh), "stats": [4, 3, 7, 3]})
    assert announced == fresh and state.first_done and state.first_error is None
    assert state.index == 7
    quiet = state.apply({"refresh": refresh_of(resolution("a", index=9))})
    assert quiet is None and state.value.index == 9  # an unchanged poll: no listener call
    marked = state.apply({"refresh": refresh_of(resolution("a", index=9, stale=True))})
    assert marked is not None and marked.stale  # marked stale: listeners hear it
    assert marked.instances[0] is announced.instances[0]


class _DirectWatch:
    """The direct watch a relayed state is redirected to (what ``pin`` reaches)."""

    value = None
    first_error = None
    pinned: object = None

    def pin(self, stand_in: object = None) -> None:
        self.pinned = stand_in or True


def test_a_pinned_relayed_state_pins_the_masters_watch_and_the_direct_one_after_it():
    """Seen in the cold-start drill: a gunicorn worker serving a snapshot called ``pin``
    on its relayed state (AttributeError: every call failed with a 500); and the master's
    watch must know the snapshot, to hold its instances if Consul comes back empty."""
    touched: list[tuple[WatchKey, bool, object]] = []

    def touch(k: WatchKey, pin: bool = False, stand_in: object = None) -> None:
        touched.append((k, pin, stand_in))

    key = WatchKey(Target("web"), None, 20.0)
    snapshot = resolution("a")
    state = RelayedState(key, touch)
    state.pin(snapshot)
    assert touched == [(key, True, snapshot)]  # the master keeps its watch, knowing the set
    direct = _DirectWatch()
    state.redirect(direct)  # type: ignore[arg-type]
    assert direct.pinned is snapshot  # the master went: the worker's own watch too
    again = _DirectWatch()
    state2 = RelayedState(key, touch)
    state2.redirect(again)  # type: ignore[arg-type]
    state2.pin()
    assert again.pinned is True and len(touched) == 1  # redirected: no relay message
