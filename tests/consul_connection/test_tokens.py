"""An ACL token a header cannot carry is refused wherever it comes from, never shown.

A token with CR/LF would inject headers through the asyncio transport and make requests
raise an error quoting it (which was then logged); the connection is the one place that
takes a token, so it refuses one there, naming the setting. A token file is trimmed as the
consul CLI trims it (Go's strings.TrimSpace); CONSUL_HTTP_TOKEN is taken as it is, as by
the CLI. An empty token file is an error, not a quiet fall-back to anonymous.
"""

from __future__ import annotations

import http.client
import logging
from pathlib import Path

import httpx
import pytest
import requests

from consul_discovery.connection import (
    ConsulConfigError,
    ConsulConnection,
    describe_transport_error,
)
from consul_discovery.connection.transport_errors import refused_header

GOOD = "0b7c9a1e-5d2f-4c8b-9e61-2a7f3d9c0b11"
LEAK = "LEAKME-tok"

BAD_TOKENS = {
    "header injection": f"{LEAK}\r\nX-Injected: yes",
    "trailing newline": f"{LEAK}\n",
    "trailing CRLF": f"{LEAK}\r\n",
    "leading space": f" {LEAK}",
    "inner space": f"{LEAK} x",
    "tab": f"{LEAK}\tx",
    "NUL": f"{LEAK}\x00",
    "DEL": f"{LEAK}\x7f",
    "escape": f"\x1b[2J{LEAK}",
    "non-ASCII": f"{LEAK}é",
    "non-breaking space": f"{LEAK}\u00a0",
}


def assert_not_shown(error: BaseException, token: str) -> None:
    """Neither the token nor its distinctive part is in the error's str or repr."""
    for text in (str(error), repr(error), str(error.args)):
        assert token not in text and LEAK not in text, text


@pytest.mark.parametrize("token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_a_bad_consul_http_token_names_the_variable_not_the_value(token: str) -> None:
    with pytest.raises(ConsulConfigError) as caught:
        ConsulConnection.from_env({"CONSUL_HTTP_TOKEN": token})
    assert caught.value.setting == "CONSUL_HTTP_TOKEN"
    assert str(caught.value).startswith("CONSUL_HTTP_TOKEN: the ACL token has ")
    assert_not_shown(caught.value, token)


def test_the_issues_repro_is_refused_as_a_line_break() -> None:
    with pytest.raises(ConsulConfigError, match=r"line break \(CR or LF\) in it"):
        ConsulConnection.from_env({"CONSUL_HTTP_TOKEN": "tok\r\nX-Injected: yes"})


def test_an_env_token_is_not_trimmed_as_the_cli_does_not_trim_it() -> None:
    with pytest.raises(ConsulConfigError, match="at its start or end") as caught:
        ConsulConnection.from_env({"CONSUL_HTTP_TOKEN": f"{GOOD}\n"})
    assert_not_shown(caught.value, GOOD)


@pytest.mark.parametrize("token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_the_constructor_and_with_token_refuse_it_as_token(token: str) -> None:
    attempts = (
        lambda: ConsulConnection(token=token),
        lambda: ConsulConnection().with_token(token),
        lambda: ConsulConnection.resolve(ConsulConnection(), token=token),
        lambda: ConsulConnection.from_env({"CONSUL_HTTP_TOKEN": GOOD}, token=token),
    )
    for attempt in attempts:
        with pytest.raises(ConsulConfigError) as caught:
            attempt()
        assert caught.value.setting == "token"
        assert_not_shown(caught.value, token)


@pytest.mark.parametrize("token", [GOOD, "s.Abc123/+=_~!", "anonymous"])
def test_visible_ascii_tokens_are_accepted(token: str) -> None:
    assert ConsulConnection.from_env({"CONSUL_HTTP_TOKEN": token}).token == token
    assert ConsulConnection(token=token).headers() == {"X-Consul-Token": token}


def test_no_token_is_still_no_token() -> None:
    assert ConsulConnection.from_env({"CONSUL_HTTP_TOKEN": ""}).token is None
    assert ConsulConnection(token="").headers() == {}
    assert ConsulConnection(token=GOOD).with_token(None).token is None


# -- CONSUL_HTTP_TOKEN_FILE ---------------------------------------------------------


@pytest.mark.parametrize(
    "content", [f"{GOOD}\n", f"{GOOD}\r\n", f"  \t{GOOD} \n\n", f"\u00a0{GOOD}\u3000\n"]
)
def test_a_token_files_surrounding_whitespace_is_trimmed_as_by_the_cli(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "token"
    path.write_text(content, encoding="utf-8")
    conn = ConsulConnection.from_env({"CONSUL_HTTP_TOKEN_FILE": str(path)})
    assert (conn.token, conn.token_file) == (GOOD, str(path))


@pytest.mark.parametrize(
    "token", [f"{LEAK}\r\nX-Injected: yes", f"{LEAK} x", f"{LEAK}\x00", f"{LEAK}é"]
)
def test_a_bad_token_in_the_file_names_the_file_variable(tmp_path: Path, token: str) -> None:
    path = tmp_path / "token"
    path.write_text(token + "\n", encoding="utf-8")
    with pytest.raises(ConsulConfigError) as caught:
        ConsulConnection.from_env({"CONSUL_HTTP_TOKEN_FILE": str(path)})
    assert caught.value.setting == "CONSUL_HTTP_TOKEN_FILE"
    assert_not_shown(caught.value, token)
    with pytest.raises(ConsulConfigError) as caught:
        ConsulConnection.from_env({}, token_file=str(path))
    assert caught.value.setting == "token_file"
    assert_not_shown(caught.value, token)


@pytest.mark.parametrize("content", ["", "\n", "  \t\r\n"])
def test_an_empty_token_file_is_an_error_not_anonymous(tmp_path: Path, content: str) -> None:
    path = tmp_path / "token"
    path.write_text(content)
    env = {"CONSUL_HTTP_TOKEN_FILE": str(path), "CONSUL_HTTP_TOKEN": GOOD}
    with pytest.raises(ConsulConfigError, match="holds no token") as caught:
        ConsulConnection.from_env(env)
    assert caught.value.setting == "CONSUL_HTTP_TOKEN_FILE"
    assert str(path) in str(caught.value)


def test_a_token_file_that_is_not_utf8_names_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"LEAKME-\xff\xfe")
    with pytest.raises(ConsulConfigError, match="not UTF-8") as caught:
        ConsulConnection.from_env({"CONSUL_HTTP_TOKEN_FILE": str(path)})
    assert caught.value.setting == "CONSUL_HTTP_TOKEN_FILE"
    assert caught.value.__cause__ is None and "LEAKME" not in str(caught.value)


def test_an_explicit_token_beats_a_bad_environment(tmp_path: Path) -> None:
    """Only the token in use is read: an explicit one leaves the environment's alone."""
    path = tmp_path / "token"
    path.write_text("")
    env = {"CONSUL_HTTP_TOKEN": f"{LEAK}\n", "CONSUL_HTTP_TOKEN_FILE": str(path)}
    assert ConsulConnection.from_env(env, token=GOOD).token == GOOD


# -- an HTTP library's refusal of a header value is never repeated --------------------


def test_requests_invalid_header_is_described_without_its_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session = requests.Session()
    session.headers["X-Consul-Token"] = f"{LEAK}\n"  # set behind the connection's back
    with pytest.raises(requests.RequestException) as caught:
        session.get("http://127.0.0.1:9/v1/agent/self", timeout=1)
    assert LEAK in str(caught.value)  # requests quotes the value: what must not reach a log
    assert refused_header(caught.value)
    text = describe_transport_error(caught.value, ConsulConnection())
    assert LEAK not in text and "CONSUL_HTTP_TOKEN" in text
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").warning("cannot reach: %s", text)
    assert LEAK not in caplog.text


def test_httpx_and_http_client_header_refusals_are_recognised() -> None:
    connection = http.client.HTTPConnection("127.0.0.1", 9)
    connection.putrequest("GET", "/")
    with pytest.raises(ValueError) as from_http_client:
        connection.putheader("X-Consul-Token", f"{LEAK}\r\nX-Injected: yes")
    from_httpx = httpx.LocalProtocolError(f"Illegal header value b'{LEAK}\\r\\n'")
    for error in (from_http_client.value, from_httpx):
        assert refused_header(error)
        assert LEAK not in describe_transport_error(error)
    assert not refused_header(httpx.LocalProtocolError("Can't send data in state ERROR"))
    assert not refused_header(ConnectionRefusedError(111, "Connection refused"))
