"""SERVICE_CONNECT=native: the registration says Connect-native, and its check is a TTL.

A Connect-native instance serves mTLS only, so Consul's HTTP check (no client
certificate) could not reach it and a plain-HTTP health listener would be another path
to the app: the check is a TTL check fed from inside (tests/mesh/test_servers.py shows
it passing under gunicorn and uvicorn).
"""

from __future__ import annotations

import pytest

from consul_discovery.registry.checks import TcpCheck, TtlCheck
from consul_discovery.registry.config import Registration
from consul_discovery.registry.errors import RegistryConfigError

BASE = {"SERVICE_NAME": "web", "SERVICE_PORT": "8443", "SERVICE_ADDRESS": "127.0.0.1"}


def test_native_registers_connect_native_with_a_ttl_check() -> None:
    registration = Registration.from_env({**BASE, "SERVICE_CONNECT": "native"})
    body = registration.service_definition()
    assert registration.connect_native
    assert body["Connect"] == {"Native": True}
    assert isinstance(registration.check, TtlCheck)
    assert "TTL" in body["Checks"][0] and "HTTP" not in body["Checks"][0]


def test_without_it_nothing_changes() -> None:
    for env in (BASE, {**BASE, "SERVICE_CONNECT": "none"}):
        body = Registration.from_env(env).service_definition()
        assert "Connect" not in body
        assert body["Checks"][0]["HTTP"] == "http://127.0.0.1:8443/health"


def test_an_http_check_on_a_native_instance_is_refused_by_name() -> None:
    with pytest.raises(RegistryConfigError) as caught:
        Registration.from_env({**BASE, "SERVICE_CONNECT": "native", "SERVICE_CHECK": "http"})
    assert caught.value.setting == "SERVICE_CHECK"
    assert "mTLS" in str(caught.value)


def test_a_tcp_check_stays_possible() -> None:
    registration = Registration.from_env(
        {**BASE, "SERVICE_CONNECT": "native", "SERVICE_CHECK": "tcp"}
    )
    assert isinstance(registration.check, TcpCheck)


def test_a_bad_value_names_the_setting() -> None:
    with pytest.raises(RegistryConfigError) as caught:
        Registration.from_env({**BASE, "SERVICE_CONNECT": "sidecar"})
    assert caught.value.setting == "SERVICE_CONNECT"
    assert "native, none" in str(caught.value)
