"""ConsulConnection: Consul's environment variables with the CLI's meaning, secrets kept out."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from consul_discovery.connection import (
    TOKEN_HEADER,
    ConsulConfigError,
    ConsulConnection,
    host_port,
    http_url,
    parse_address,
)

SECRET = "0b7c9a1e-5d2f-4c8b-9e61-2a7f3d9c0b11"


def test_defaults_without_environment():
    conn = ConsulConnection.from_env({})
    assert (conn.scheme, conn.host, conn.port, conn.token) == ("http", "127.0.0.1", 8500, None)
    assert conn.base_url == "http://127.0.0.1:8500"
    assert conn.headers() == {}
    assert conn.requests_verify() is True and conn.requests_cert() is None


def test_every_variable_is_read(tmp_path: Path):
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "c.pem", "k.pem"))
    for f in (ca, cert, key):
        f.write_text("x")
    conn = ConsulConnection.from_env(
        {
            "CONSUL_HTTP_ADDR": "consul.local:8501",
            "CONSUL_HTTP_SSL": "true",
            "CONSUL_HTTP_TOKEN": SECRET,
            "CONSUL_CACERT": str(ca),
            "CONSUL_CAPATH": str(tmp_path),
            "CONSUL_CLIENT_CERT": str(cert),
            "CONSUL_CLIENT_KEY": str(key),
            "CONSUL_TLS_SERVER_NAME": "server.dc1.consul",
        }
    )
    assert (conn.scheme, conn.host, conn.port) == ("https", "consul.local", 8501)
    assert conn.token == SECRET
    assert conn.requests_verify() == str(ca)
    assert conn.requests_cert() == (str(cert), str(key))
    assert conn.tls_server_name == "server.dc1.consul"
    assert conn.request_extensions() == {"sni_hostname": "server.dc1.consul"}


def test_ssl_verify_false_turns_verification_off():
    conn = ConsulConnection.from_env(
        {"CONSUL_HTTP_ADDR": "https://h:8501", "CONSUL_HTTP_SSL_VERIFY": "false"}
    )
    assert conn.requests_verify() is False
    context = conn.ssl_context()
    assert context is not None and context.check_hostname is False


def test_ssl_flag_wins_over_an_http_scheme_as_in_the_cli():
    # The consul CLI "never reverts to http if TLS was explicitly requested"
    # (test_cli_addresses checks it against the binary).
    conn = ConsulConnection.from_env(
        {"CONSUL_HTTP_ADDR": "http://h:8500", "CONSUL_HTTP_SSL": "true"}
    )
    assert (conn.scheme, conn.port) == ("https", 8500)
    assert (
        ConsulConnection.from_env({"CONSUL_HTTP_ADDR": "http://h", "CONSUL_HTTP_SSL": "1"}).port
        == 443
    )


def test_token_file_wins_over_token_variable_as_in_consuls_client(tmp_path: Path):
    token_file = tmp_path / "token"
    token_file.write_text(f"  {SECRET}\n")
    conn = ConsulConnection.from_env(
        {"CONSUL_HTTP_TOKEN": "other", "CONSUL_HTTP_TOKEN_FILE": str(token_file)}
    )
    assert conn.token == SECRET


def test_explicit_arguments_beat_the_environment(tmp_path: Path):
    token_file = tmp_path / "token"
    token_file.write_text("from-file")
    env = {
        "CONSUL_HTTP_ADDR": "10.0.0.1:1",
        "CONSUL_HTTP_TOKEN": "env",
        "CONSUL_HTTP_TOKEN_FILE": str(token_file),
    }
    conn = ConsulConnection.from_env(env, address="127.0.0.1:18500", token="mine")
    assert (conn.address, conn.token, conn.token_file) == ("127.0.0.1:18500", "mine", None)
    assert ConsulConnection.from_env(env, token_file=str(token_file)).token == "from-file"


def test_py_consul_client_keeps_our_token_over_its_environment(monkeypatch):
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-env")
    client = ConsulConnection(token="mine").py_consul()
    assert client.token == "mine"
    assert ConsulConnection().py_consul().token is None
    assert client.http.session.trust_env is False


def test_the_token_travels_in_a_header_never_in_url_or_repr(caplog):
    conn = ConsulConnection(token=SECRET)
    session = conn.session()
    assert session.headers[TOKEN_HEADER] == SECRET
    prepared = session.prepare_request(
        __import__("requests").Request("GET", conn.base_url + "/v1/agent/self")
    )
    assert SECRET not in prepared.url
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("connection %s %r", conn, conn)
    assert SECRET not in repr(conn) and SECRET not in str(conn) and SECRET not in caplog.text
    assert "token=<redacted>" in repr(conn)
    assert SECRET not in conn.address and SECRET not in conn.base_url


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"CONSUL_HTTP_ADDR": "ftp://x:1"}, "CONSUL_HTTP_ADDR"),
        ({"CONSUL_HTTP_ADDR": "host:notaport"}, "CONSUL_HTTP_ADDR"),
        ({"CONSUL_HTTP_ADDR": "host:8500/path"}, "CONSUL_HTTP_ADDR"),
        ({"CONSUL_HTTP_ADDR": "127.0.0.1 :8500"}, "CONSUL_HTTP_ADDR"),
        ({"CONSUL_HTTP_ADDR": "unix:///run/consul.sock"}, "CONSUL_HTTP_ADDR"),
        ({"CONSUL_HTTP_ADDR": "host:0"}, "CONSUL_HTTP_ADDR"),
        ({"CONSUL_HTTP_ADDR": "[not-v6]:1"}, "CONSUL_HTTP_ADDR"),
        ({"CONSUL_HTTP_ADDR": "-bad-.host:1"}, "CONSUL_HTTP_ADDR"),
        ({"CONSUL_HTTP_SSL": "maybe"}, "CONSUL_HTTP_SSL"),
        ({"CONSUL_HTTP_SSL_VERIFY": "2"}, "CONSUL_HTTP_SSL_VERIFY"),
        ({"CONSUL_CACERT": "/nonexistent/ca.pem"}, "CONSUL_CACERT"),
        ({"CONSUL_CAPATH": "/nonexistent"}, "CONSUL_CAPATH"),
        ({"CONSUL_HTTP_TOKEN_FILE": "/nonexistent/token"}, "CONSUL_HTTP_TOKEN_FILE"),
        ({"CONSUL_CLIENT_CERT": __file__}, "CONSUL_CLIENT_CERT/CONSUL_CLIENT_KEY"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], setting: str):
    with pytest.raises(ConsulConfigError) as caught:
        ConsulConnection.from_env(env)
    assert caught.value.setting == setting
    assert str(caught.value).startswith(setting + ": ")


def test_unknown_override_is_a_type_error():
    with pytest.raises(TypeError, match="tokn"):
        ConsulConnection.from_env({}, tokn="x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8500", ("http", "127.0.0.1", 8500)),
        ("localhost", ("http", "localhost", 80)),  # no port: the scheme's, as for the CLI
        ("consul_server.internal:8500", ("http", "consul_server.internal", 8500)),
        ("http://127.0.0.1:18500", ("http", "127.0.0.1", 18500)),
        ("https://consul.local", ("https", "consul.local", 443)),
        ("[::1]:8501", ("http", "::1", 8501)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, str, int]):
    assert parse_address(text) == expected


def test_ipv6_literals_are_bracketed_once():
    assert host_port("::1", 8500) == "[::1]:8500"
    assert host_port("127.0.0.1", 8500) == "127.0.0.1:8500"
    assert http_url("fe80::1", 80) == "http://[fe80::1]:80"
    assert ConsulConnection(host="::1").base_url == "http://[::1]:8500"
