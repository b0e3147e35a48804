"""A Consul API request as a value: what cannot be written on the wire is refused when
the request is made, for every transport alike (the asyncio ones write the head
themselves), and a refused header's value is never quoted (it may be a token)."""

from __future__ import annotations

import asyncio

import pytest

from consul_discovery.connection.aio_http1 import Http1Pool, Origin
from consul_discovery.connection.exchange import Request


def test_a_quoted_path_with_parameters_and_headers_is_a_request():
    request = Request("/v1/kv/a%20b", (("recurse", "a b\r\n"),), headers=(("X-A", "v 1"),))
    assert request.path == "/v1/kv/a%20b"


@pytest.mark.parametrize("path", ["/v1/kv/a b", "/v1/kv/a\r\nX-Evil: 1", "/v1/kv/\x00", "/v1/\x7f"])
def test_a_path_with_a_space_or_control_character_is_refused(path: str):
    with pytest.raises(ValueError, match="a Consul API path is quoted"):
        Request(path)


@pytest.mark.parametrize("value", ["secret\r\nX-Evil: 1", "secret\n", "secret\x00"])
def test_a_header_value_with_a_line_break_or_nul_is_refused_without_quoting_it(value: str):
    with pytest.raises(ValueError) as caught:
        Request("/v1/kv/a", headers=(("X-Consul-Token", value),))
    assert (
        str(caught.value)
        == "header 'X-Consul-Token' of a Consul API request has a line break or NUL"
    )
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("name", ["", "X A", "X:A", "X\r\nA"])
def test_a_bad_header_name_is_refused(name: str):
    with pytest.raises(ValueError, match="bad header name"):
        Request("/v1/kv/a", headers=((name, "v"),))


def test_the_asyncio_pool_writes_parameters_encoded_and_header_values_as_given():
    """The head the asyncio HTTP/1.1 pool writes: one request line, the query encoded."""
    heads: list[bytes] = []

    async def main() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        pool = Http1Pool(Origin("127.0.0.1", server.sockets[0].getsockname()[1]))
        try:
            await pool.send(Request("/v1/kv/a", (("q", "a b\r\n"),), headers=(("X-A", "v 1"),)), {})
        finally:
            await pool.aclose()
            server.close()

    asyncio.run(main())
    lines = heads[0].decode("latin-1").split("\r\n")
    assert lines[0] == "GET /v1/kv/a?q=a+b%0D%0A HTTP/1.1"
    assert "X-A: v 1" in lines
