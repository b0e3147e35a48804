"""Public constructors refuse a wrong argument at once, naming it (discovery_client/arguments.py):
the core's knobs (shared by ServiceClient and both httpx transports, checked once in
DiscoveryCore), ServiceClient's requests timeout, and the sources' own (connection,
address, after_fork, snapshots). No Consul is needed: nothing here does I/O."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from consul_discovery.client import (
    AsyncDiscoveryTransport,
    ConsulSource,
    DiscoveryTransport,
    EjectionPolicy,
    RetryPolicy,
    ServiceClient,
    ServiceConfig,
)
from consul_discovery.client.aio import AsyncConsulSource
from consul_discovery.client.arguments import per_name, request_timeout, seconds
from consul_discovery.client.snapshot_store import SnapshotStore
from tests.discovery_client.fakes import StaticSource

# (keyword arguments, the error, what its message must say)
CORE_KNOBS = [
    ({"services": {"orders": "peak_ewma"}}, TypeError, r"services\['orders'\] must be a Serv"),
    ({"services": ["orders"]}, TypeError, "services must be a mapping"),
    ({"default_config": {}}, TypeError, "default_config must be a ServiceConfig; got dict"),
    ({"retry": 3}, TypeError, "retry must be a RetryPolicy; got int 3"),
    ({"ejection": "off"}, TypeError, "ejection must be an EjectionPolicy"),
    ({"resolve_timeout": "5"}, TypeError, "resolve_timeout must be a number of seconds"),
    ({"resolve_timeout": -1}, ValueError, "resolve_timeout must be >= 0 seconds"),
]

TIMEOUTS = [
    ("5", TypeError, "timeout must be seconds, a \\(connect, read\\) pair or None; got str"),
    (-1, ValueError, "timeout must be > 0 seconds; got -1"),
    (0, ValueError, "timeout must be > 0 seconds"),
    (True, TypeError, "timeout must be seconds"),
    ((1.0, 2.0, 3.0), TypeError, "a tuple of 3"),
    ((0.5, -2), ValueError, "timeout's read must be > 0 seconds"),
    (("1", 2), TypeError, "timeout's connect must be a number of seconds"),
    ([0.5, 5.0], TypeError, "got list"),
    (float("nan"), TypeError, "timeout must be seconds, a \\(connect, read\\) pair or None; got f"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), CORE_KNOBS)
def test_service_client_names_a_bad_knob_at_construction(kwargs, error, message):
    with pytest.raises(error, match=message):
        ServiceClient(source=StaticSource(), **kwargs)


@pytest.mark.parametrize(("kwargs", "error", "message"), CORE_KNOBS)
def test_the_httpx_transports_name_a_bad_knob_at_construction(kwargs, error, message):
    with pytest.raises(error, match=message):
        DiscoveryTransport(source=StaticSource(), **kwargs)

    async def make() -> None:
        AsyncDiscoveryTransport(source=StaticSource(), **kwargs)  # type: ignore[arg-type]

    with pytest.raises(error, match=message):
        asyncio.run(make())


def test_a_source_made_for_a_refused_client_is_closed(monkeypatch):
    closed: list[Any] = []
    monkeypatch.setattr(ConsulSource, "close", lambda self, timeout=2.0: closed.append(self))
    with pytest.raises(TypeError, match="retry"):
        ServiceClient("127.0.0.1:8500", retry=3)
    with pytest.raises(TypeError, match="retry"):
        DiscoveryTransport(consul_addr="127.0.0.1:8500", retry=3)
    assert len(closed) == 2


@pytest.mark.parametrize(("timeout", "error", "message"), TIMEOUTS)
def test_service_client_refuses_a_timeout_requests_would_refuse_later(timeout, error, message):
    with pytest.raises(error, match=message):
        ServiceClient(source=StaticSource(), timeout=timeout)


@pytest.mark.parametrize("timeout", [5, 2.5, (0.5, 5.0), (None, 5.0), (0.5, None), None])
def test_service_client_takes_every_timeout_requests_takes(timeout):
    with ServiceClient(source=StaticSource(), timeout=timeout) as client:
        assert client.timeout == timeout


def test_good_knobs_are_kept_as_given():
    services = {"orders": ServiceConfig(policy="peak_ewma")}
    retry = RetryPolicy(max_attempts=2)
    with ServiceClient(source=StaticSource(), services=services, retry=retry) as client:
        assert client.services == services and client.retry is retry


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"connection": "127.0.0.1:18500"}, "connection must be a ConsulConnection or None"),
        ({"consul_addr": 123}, r"Consul address \(first argument\) must be a str"),
        ({"consul_addr": ["h1:8500"]}, "got list"),
    ],
)
def test_service_client_names_a_bad_connection_or_address(kwargs, message):
    with pytest.raises(TypeError, match=message):
        ServiceClient(**kwargs)


@pytest.mark.parametrize("source", [ConsulSource, AsyncConsulSource])
def test_the_sources_name_bad_snapshots(source):
    with pytest.raises(TypeError, match=r"snapshots must be a directory .* got int 5"):
        source("127.0.0.1:8500", snapshots=5)


def test_snapshots_may_be_a_path(tmp_path: Path):
    source = ConsulSource("127.0.0.1:8500", snapshots=tmp_path / "snaps")
    try:
        cold = source._table.cold
        assert cold is not None and isinstance(cold.store, SnapshotStore)
        assert cold.store.directory == tmp_path / "snaps"
    finally:
        source.close()


def test_consul_source_names_a_bad_after_fork():
    with pytest.raises(ValueError, match="after_fork must be 'restart' or 'close'; got 'bogus'"):
        ConsulSource("127.0.0.1:8500", after_fork="bogus")  # type: ignore[arg-type]


def test_the_checks_return_what_they_were_given():
    assert per_name("services", None, ServiceConfig) == {}
    assert seconds("wait", 0) == 0 and request_timeout("timeout", (1, None)) == (1, None)
    with pytest.raises(TypeError, match="keys must be service names"):
        per_name("services", {1: ServiceConfig()}, ServiceConfig)
    with pytest.raises(TypeError, match="number of seconds"):
        seconds("wait", float("nan"))


@pytest.mark.parametrize(
    ("client", "message"),
    [
        ("127.0.0.1:8500", r"ServiceClient or None; got str '127.0.0.1:8500' \(the Consul addr"),
        (5, "must be a ServiceClient or None; got int 5$"),
    ],
)  # fmt: skip
def test_the_httpx_transport_names_a_first_argument_that_is_no_client(client, message):
    """``DiscoveryTransport("host:8500")`` (the asyncio transport's first argument is the
    address) used to fail with AttributeError: 'str' object has no attribute 'core'."""
    with pytest.raises(TypeError, match=message):
        DiscoveryTransport(client)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "given"),
    [
        ({"filter": 'Service.Meta.version == "2"'}, "filter"),
        ({"tag": "v2"}, "tag"),
        ({"filter": '"v2" in Service.Tags', "tag": "v2"}, "filter and tag"),
    ],
)
def test_a_prepared_query_with_a_filter_or_tag_is_refused(kwargs, given):
    """The query's execution takes neither: they used to be ignored without a word (every
    instance the query selects was called)."""
    with pytest.raises(
        ValueError,
        match=f"prepared_query 'q' selects the instances itself; {given} would be ignored",
    ):
        ServiceConfig(prepared_query="q", **kwargs)
    assert ServiceConfig(prepared_query="q", datacenter="dc2").datacenter == "dc2"


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: RetryPolicy(deadline=float("nan")), TypeError, "RetryPolicy deadline must be"),
        (lambda: RetryPolicy(deadline=0), ValueError, "RetryPolicy deadline must be > 0"),
        (lambda: RetryPolicy(max_attempts="3"), TypeError, "RetryPolicy max_attempts must be"),
        (lambda: RetryPolicy(max_attempts=2.5), TypeError, "max_attempts must be a whole"),
        (lambda: RetryPolicy(max_attempts=0), ValueError, "max_attempts must be >= 1; got 0"),
        (lambda: RetryPolicy(backoff_base=float("nan")), TypeError, "RetryPolicy backoff_base"),
        (lambda: RetryPolicy(budget_ratio=float("nan")), TypeError, "RetryPolicy budget_ratio"),
        (lambda: RetryPolicy(budget_ratio=-1), ValueError, "budget_ratio must be >= 0"),
        (lambda: EjectionPolicy(base_time=float("nan")), TypeError, "EjectionPolicy base_time"),
        (lambda: EjectionPolicy(max_percent=float("nan")), TypeError, "max_percent must be"),
        (lambda: EjectionPolicy(max_percent=101), ValueError, "within [0, 100]"),
        (lambda: EjectionPolicy(consecutive_failures="5"), TypeError, "consecutive_failures"),
    ],
)
def test_the_policies_name_a_bad_figure_when_made(make, error, message):
    """RetryPolicy and EjectionPolicy: a NaN, a string or a fraction is refused when the
    policy is made (a NaN deadline or base_time passed every ``<= 0`` check)."""
    with pytest.raises(error) as raised:
        make()
    assert message in str(raised.value)


@pytest.mark.parametrize(("timeout", "error", "message"), TIMEOUTS)
def test_a_call_names_a_bad_timeout_before_consul_is_asked(timeout, error, message):
    """A call's own ``timeout=`` gets the constructor's check, before any resolve (the
    address is refused: a check after it would say "Consul unreachable" instead); before,
    requests' own words ("Invalid value NaN", "'>' not supported between ...") came
    from the first attempt, or Consul's outage hid it."""
    with ServiceClient("127.0.0.1:1") as client, pytest.raises(error, match=message):
        client.get("orders", "/", timeout=timeout)
