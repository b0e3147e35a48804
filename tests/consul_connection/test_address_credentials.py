"""An address with a user name and password is refused without quoting the password.

``CONSUL_HTTP_ADDR=https://user:<password>@host:8501`` was refused with the whole
address in the message ("invalid Consul address 'https://user:<password>@...': no user
name or password here"), which the CLIs print and applications log.
"""

from __future__ import annotations

import pytest

from consul_discovery.connection import ConsulConfigError, ConsulConnection, parse_address

SECRET = "pw-7c1e-not-for-logs"

ADDRESSES = [
    f"http://user:{SECRET}@127.0.0.1:8500",
    f"user:{SECRET}@127.0.0.1:8500",
    f"https://{SECRET}@consul.example:8501",
    f"user:{SECRET}@127.0.0.1:8500/path",  # refused for its path first
    f"user:{SECRET}@[::1",  # refused for its bracket first
    f"user:{SECRET}/x@127.0.0.1:8500",
]


@pytest.mark.parametrize("address", ADDRESSES)
def test_parse_address_refuses_user_info_without_showing_it(address: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_address(address)
    assert SECRET not in str(caught.value)
    assert "<user info not shown>@" in str(caught.value)


def test_the_environment_variable_error_does_not_show_it() -> None:
    env = {"CONSUL_HTTP_ADDR": f"https://127.0.0.1:8501,https://u:{SECRET}@127.0.0.2:8501"}
    with pytest.raises(ConsulConfigError) as caught:
        ConsulConnection.from_env(env)
    assert SECRET not in str(caught.value)
    assert "CONSUL_HTTP_ADDR" in str(caught.value) and "127.0.0.2:8501" in str(caught.value)
