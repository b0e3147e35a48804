"""CONSUL_HTTP_ADDR means what it means to the real ``consul`` CLI.

Each case runs the pinned ``consul`` binary with the same environment and reads where it
tried to go (the URL in its error, ``Get "http://localhost/v1/..."``, and the address it
dialled) or that it refused the address, and compares with ``ConsulConnection.from_env``.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.parse

import pytest
import requests

from consul_discovery.connection import ConsulConfigError, ConsulConnection
from consul_discovery.connection.addresses import shown_address
from consul_discovery.connection.transport_errors import (
    TransportFailure,
    classify_transport_error,
    describe_transport_error,
)
from tests.harness.agent import ConsulAgent
from tests.harness.binary import consul_binary

_GET = re.compile(r'Get "(?P<url>[^"]+)"')
_DIAL = re.compile(r"dial tcp (?P<addr>\S+?):(?P<port>\d+): connect")
_CONSUL_VARS = ("CONSUL_HTTP_ADDR", "CONSUL_HTTP_SSL", "CONSUL_HTTP_TOKEN", "CONSUL_CACERT")


def cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``consul catalog services`` with only ``env``'s Consul variables set."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    return subprocess.run(
        [consul_binary(), "catalog", "services"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def cli_target(env: dict[str, str]) -> tuple[str, str, int]:
    """(scheme, host, port) the CLI went for, read from its error output."""
    result = cli(env)
    assert result.returncode != 0, "expected the CLI to fail against nothing"
    match = _GET.search(result.stderr)
    assert match, result.stderr
    url = urllib.parse.urlsplit(match["url"])
    port = url.port or {"http": 80, "https": 443}[url.scheme]
    dialled = _DIAL.search(result.stderr)
    if dialled:  # where it really connected, when it got that far
        assert int(dialled["port"]) == port, result.stderr
    return url.scheme, urllib.parse.unquote(url.hostname or ""), port


@pytest.mark.parametrize(
    "env",
    [
        {"CONSUL_HTTP_ADDR": "localhost"},  # no port: 80, not 8500
        {"CONSUL_HTTP_ADDR": "https://localhost"},  # no port: 443
        {"CONSUL_HTTP_ADDR": "[::1]"},
        {"CONSUL_HTTP_ADDR": "localhost:"},
        {"CONSUL_HTTP_ADDR": "127.0.0.1:1"},
        {"CONSUL_HTTP_ADDR": "127.0.0.1:1", "CONSUL_HTTP_SSL": "true"},
        {"CONSUL_HTTP_ADDR": "http://127.0.0.1:1", "CONSUL_HTTP_SSL": "true"},  # TLS wins
        {"CONSUL_HTTP_ADDR": "https://127.0.0.1:1", "CONSUL_HTTP_SSL": "false"},
    ],
)
def test_from_env_goes_where_the_cli_goes(env: dict[str, str]) -> None:
    scheme, host, port = cli_target(env)
    ours = ConsulConnection.from_env(env)
    assert (ours.scheme, ours.host, ours.port) == (scheme, host, port)


@pytest.mark.parametrize(
    ("address", "cli_says"),
    [
        ("127.0.0.1 :8500", "no such host"),  # a space: the CLI fails at lookup time
        ("local host:8500", "no such host"),
        ("ftp://127.0.0.1:1", "Unknown protocol scheme"),
        ("127.0.0.1:port", "no such host"),
        ("localhost:99999", "invalid port"),
        ("http://user:pw@localhost:1", "no such host"),
    ],
)
def test_an_address_the_cli_cannot_use_is_a_config_error_at_parse_time(
    address: str, cli_says: str
) -> None:
    result = cli({"CONSUL_HTTP_ADDR": address})
    assert result.returncode != 0 and cli_says in result.stderr, result.stderr
    with pytest.raises(ConsulConfigError) as caught:
        ConsulConnection.from_env({"CONSUL_HTTP_ADDR": address})
    assert caught.value.setting == "CONSUL_HTTP_ADDR"
    shown = shown_address(address)  # a user name and password are never quoted
    assert str(caught.value).startswith(f"CONSUL_HTTP_ADDR: invalid Consul address {shown!r}")


def test_a_space_is_named(consul_agent: ConsulAgent) -> None:
    with pytest.raises(ConsulConfigError, match=r"has the character\(s\) ' '"):
        ConsulConnection.from_env({"CONSUL_HTTP_ADDR": f"127.0.0.1 :{consul_agent.ports.http}"})


def test_https_against_a_plain_http_agent_says_it_does_not_speak_tls(
    consul_agent: ConsulAgent,
) -> None:
    env = {"CONSUL_HTTP_ADDR": f"https://{consul_agent.address}"}
    result = cli(env)
    assert "server gave HTTP response to HTTPS client" in result.stderr, result.stderr
    connection = ConsulConnection.from_env(env)
    assert connection.scheme == "https"
    with pytest.raises(requests.RequestException) as caught:
        connection.session().get(f"{connection.base_url}/v1/agent/self", timeout=5)
    assert classify_transport_error(caught.value) is TransportFailure.NOT_TLS
    message = describe_transport_error(caught.value, connection)
    assert message.startswith(f"the agent at https://{consul_agent.address} does not speak TLS")
    # and the plain address works, for both
    plain = {"CONSUL_HTTP_ADDR": consul_agent.address}
    assert cli(plain).returncode == 0
    assert (
        ConsulConnection.from_env(plain)
        .session()
        .get(f"{ConsulConnection.from_env(plain).base_url}/v1/agent/self", timeout=5)
        .ok
    )
