"""An ACL-enabled agent (default deny): a key_prefix "config/" read token from
CONSUL_HTTP_TOKEN_FILE reads the configuration; no token is refused; the token is never shown."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import requests

from consul_discovery.config import ConfigClient, ConfigError, Layers
from consul_discovery.config.cli import main
from consul_discovery.connection import ConsulConnection
from tests.harness.acl import MANAGEMENT_HEADERS, create_token, running_acl_agent


def test_read_token_from_file_reads_config_and_no_token_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_acl_agent() as agent:
        token = create_token(agent, rules='key_prefix "config/" { policy = "read" }')
        url = f"{agent.url}/v1/kv/config/orders/limit"
        requests.put(url, data="7", headers=MANAGEMENT_HEADERS, timeout=5).raise_for_status()
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")

        env = {"CONSUL_HTTP_ADDR": agent.address, "CONSUL_HTTP_TOKEN_FILE": str(token_file)}
        connection = ConsulConnection.from_env(env)
        client = ConfigClient(Layers("orders"), connection=connection).start(fail_fast=True)
        assert client.get("limit", int) == 7
        assert token not in repr(client.connection) and token not in str(client.stats())
        client.close()

        anonymous = ConsulConnection.from_env({"CONSUL_HTTP_ADDR": agent.address})
        with pytest.raises(ConfigError, match="denied") as refused:
            ConfigClient(Layers("orders"), connection=anonymous).start(fail_fast=True)
        assert token not in str(refused.value)

        monkeypatch.setenv("CONSUL_HTTP_ADDR", agent.address)
        monkeypatch.setenv("CONSUL_HTTP_TOKEN_FILE", str(token_file))
        out = io.StringIO()
        assert main(["get", "--service", "orders", "limit"], out) == 0
        assert out.getvalue().strip() == "7"
        assert main(["put", "--service", "orders", "limit", "8"], out) == 2  # read-only token
        err = capsys.readouterr().err
        assert "denied" in err and token not in err and token not in out.getvalue()
