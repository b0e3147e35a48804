"""ConsulConnection: Consul's environment variables with the CLI's meaning, secrets kept out."""

from __future__ import annotations

import dataclasses
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
from tests.harness.tls_agent import make_certificates

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


# -- several addresses and stale reads -------------------------------------------------


def test_a_comma_separated_consul_http_addr_names_several_servers():
    conn = ConsulConnection.from_env(
        {"CONSUL_HTTP_ADDR": "10.0.0.1:8500, 10.0.0.2:8500,[::1]:8500", "CONSUL_HTTP_TOKEN": SECRET}
    )
    assert [str(s) for s in conn.servers] == [
        "http://10.0.0.1:8500",
        "http://10.0.0.2:8500",
        "http://[::1]:8500",
    ]
    assert (conn.scheme, conn.host, conn.port) == ("http", "10.0.0.1", 8500)
    assert conn.server_addresses == conn.servers and conn.routed
    assert conn.address == "10.0.0.1:8500,10.0.0.2:8500,[::1]:8500"
    assert conn.base_url == "http://10.0.0.1:8500"  # the first
    one = conn.for_server(conn.servers[2])
    assert (one.host, one.port, one.servers, one.token) == ("::1", 8500, (), SECRET)
    assert SECRET not in repr(conn) and "servers=[http://10.0.0.1:8500" in repr(conn)


def test_one_address_keeps_the_clis_meaning_and_no_list():
    conn = ConsulConnection.from_env({"CONSUL_HTTP_ADDR": "consul.local"})
    assert (conn.host, conn.port, conn.servers, conn.routed) == ("consul.local", 80, (), False)
    assert [str(s) for s in conn.server_addresses] == ["http://consul.local:80"]


def test_consul_http_ssl_makes_every_listed_address_https_with_its_default_port():
    conn = ConsulConnection.from_env(
        {"CONSUL_HTTP_ADDR": "a.consul,b.consul:8501", "CONSUL_HTTP_SSL": "true"}
    )
    assert [str(s) for s in conn.servers] == ["https://a.consul:443", "https://b.consul:8501"]


def test_addresses_keyword_and_address_override_take_lists():
    listed = ConsulConnection.from_env({}, addresses=["https://h1:8501", "https://h2:8501"])
    assert [s.host for s in listed.servers] == ["h1", "h2"] and listed.scheme == "https"
    assert ConsulConnection.from_env({}, addresses="h1:1,h2:2").servers[1].port == 2
    assert ConsulConnection.from_env({}, address="h1:1,h2:2").servers[1].port == 2
    base = ConsulConnection.from_env({"CONSUL_HTTP_ADDR": "https://x:8501"})
    moved = ConsulConnection.resolve(base, address="h1:8501,h2:8501")
    assert [str(s) for s in moved.servers] == ["https://h1:8501", "https://h2:8501"]
    back = ConsulConnection.resolve(moved, address="h3:8501")
    assert (back.host, back.servers) == ("h3", ())
    # an explicit host (or port, or scheme) names one address
    assert ConsulConnection.from_env({"CONSUL_HTTP_ADDR": "a:1,b:2"}, host="c").servers == ()
    with pytest.raises(TypeError, match="not both"):
        ConsulConnection.from_env({}, address="a:1", addresses=["b:2"])


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("a:8500,a:8500", "listed twice"),
        ("http://a:8500,https://b:8501", "mixes http and https"),
        ("a:8500,b c:8500", "'b c'"),
        ("a:8500,unix:///tmp/consul.sock", "unix sockets"),
        (" , ", "no Consul address"),
    ],
)
def test_a_bad_list_names_the_variable_and_the_item(value: str, fragment: str):
    with pytest.raises(ConsulConfigError) as info:
        ConsulConnection.from_env({"CONSUL_HTTP_ADDR": value})
    assert info.value.setting == "CONSUL_HTTP_ADDR" and fragment in str(info.value)


def test_a_list_must_start_at_host_and_port():
    conn = ConsulConnection.from_env({"CONSUL_HTTP_ADDR": "a:1,b:2"})
    with pytest.raises(ConsulConfigError, match="must be the first of servers"):
        dataclasses.replace(conn, host="c")


def test_stale_reads_and_max_stale_from_the_environment():
    assert not ConsulConnection.from_env({}).stale
    stale = ConsulConnection.from_env({"CONSUL_DISCOVERY_STALE": "true"})
    assert (stale.stale, stale.max_stale, stale.routed) == (True, None, True)
    for raw, seconds in (("10", 10.0), ("10s", 10.0), ("500ms", 0.5), ("2m", 120.0)):
        bounded = ConsulConnection.from_env({"CONSUL_DISCOVERY_MAX_STALE": raw})
        assert (bounded.stale, bounded.max_stale) == (True, seconds)
    with pytest.raises(ConsulConfigError) as info:
        ConsulConnection.from_env({"CONSUL_DISCOVERY_MAX_STALE": "soon"})
    assert info.value.setting == "CONSUL_DISCOVERY_MAX_STALE"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"connection": "127.0.0.1:8500"}, "connection must be a ConsulConnection or None"),
        ({"address": 8500}, r"Consul address \(first argument\) must be a str"),
        ({"token": 42}, "token must be a str or None; got int"),
    ],
)
def test_resolve_names_an_argument_of_the_wrong_type(kwargs: dict, message: str):
    with pytest.raises(TypeError, match=message):
        ConsulConnection.resolve(**kwargs)


def test_tls_files_that_cannot_be_loaded_are_named_not_a_traceback(tmp_path: Path):
    """A CA bundle or client certificate that is no PEM used to end in ``ssl.SSLError:
    [SSL] PEM lib`` from the first https request (a CLI's traceback)."""
    ca, cert, key = make_certificates(tmp_path / "tls")  # consul tls: a real CA and pair
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate")
    env = {"CONSUL_HTTP_ADDR": "https://consul.local:8501"}

    bad_ca = ConsulConnection.from_env({**env, "CONSUL_CACERT": str(not_pem)})
    with pytest.raises(ConsulConfigError, match=r"CONSUL_CACERT/CONSUL_CAPATH: cannot load CA"):
        bad_ca.ssl_context()

    tls = {**env, "CONSUL_CACERT": str(ca), "CONSUL_CLIENT_CERT": str(cert)}
    assert ConsulConnection.from_env({**tls, "CONSUL_CLIENT_KEY": str(key)}).ssl_context()
    bad_key = ConsulConnection.from_env({**tls, "CONSUL_CLIENT_KEY": str(not_pem)})
    with pytest.raises(ConsulConfigError) as raised:
        bad_key.ssl_context()
    message = str(raised.value)
    assert message.startswith("CONSUL_CLIENT_CERT/CONSUL_CLIENT_KEY: cannot load the client")
    assert str(not_pem) in message and "_ssl.c" not in message


def test_a_requests_session_refuses_tls_files_that_cannot_be_loaded(tmp_path: Path):
    """The requests path (``session()``: the registrar, py-consul, the threaded source)
    loaded the files only at its first request, failing with OpenSSL's words; it now
    fails when the session is made, naming the setting, as the httpx path does."""
    ca, cert, key = make_certificates(tmp_path / "tls")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate")
    env = {"CONSUL_HTTP_ADDR": "https://consul.local:8501", "CONSUL_CACERT": str(ca)}
    good = ConsulConnection.from_env({**env, "CONSUL_CLIENT_CERT": str(cert),
                                      "CONSUL_CLIENT_KEY": str(key)})  # fmt: skip
    good.session().close()
    bad_key = ConsulConnection.from_env({**env, "CONSUL_CLIENT_CERT": str(cert),
                                         "CONSUL_CLIENT_KEY": str(not_pem)})  # fmt: skip
    with pytest.raises(ConsulConfigError, match=r"^CONSUL_CLIENT_CERT/CONSUL_CLIENT_KEY: cannot"):
        bad_key.session()
    with pytest.raises(ConsulConfigError, match=r"^CONSUL_CLIENT_CERT/CONSUL_CLIENT_KEY: cannot"):
        bad_key.py_consul()
    bad_ca = ConsulConnection.from_env({**env, "CONSUL_CACERT": str(not_pem)})
    with pytest.raises(ConsulConfigError, match=r"^CONSUL_CACERT/CONSUL_CAPATH: cannot load CA"):
        bad_ca.session()
