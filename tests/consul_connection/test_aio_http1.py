"""The asyncio HTTP/1.1 pool against scripted servers: bodies, keep-alive, its one retry.

Consul answers with ``Content-Length`` for small bodies and chunked encoding for large
ones (a 100-instance health answer), and go-connlimit with a raw 429 and a close; an idle
keep-alive connection the agent closed must not fail the next request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from consul_discovery.connection.aio_http1 import Http1Pool, Origin
from consul_discovery.connection.exchange import Request, TransportError, TransportFailure

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def scenario(script: Script, client: Callable[[Http1Pool], Awaitable[object]]) -> object:
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await script(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Http1Pool(Origin("127.0.0.1", port))
    try:
        return await client(pool), len(accepted)
    finally:
        await pool.aclose()
        server.close()


def test_chunked_and_content_length_bodies_and_keep_alive_reuse():
    heads: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Consul-Index: 9\r\n\r\n")
        writer.write(b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n")
        heads.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
        await reader.read()  # keep the connection until the client closes it

    async def client(pool: Http1Pool) -> object:
        first = await pool.send(
            Request("/v1/health/service/web", (("index", "3"),)), {"X-Consul-Token": "t"}
        )
        second = await pool.send(
            Request("/v1/kv/a", (("filter", 'Service.Tags contains "v 2"'),)), {}
        )
        return first.body, first.index, second.body, pool.connections

    (first, index, second, connections), accepted = asyncio.run(scenario(script, client))
    assert (first, index, second) == (b"hello world", 9, b"abc")
    assert accepted == 1 and connections == 1  # one keep-alive connection for both
    assert heads[0].startswith(b"GET /v1/health/service/web?index=3 HTTP/1.1\r\n")
    assert b"\r\nX-Consul-Token: t\r\n" in heads[0]
    assert heads[1].startswith(b"GET /v1/kv/a?filter=Service.Tags+contains+%22v+2%22 HTTP/1.1")


def test_a_raw_429_and_close_is_an_answer():
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)  # (go-connlimit may answer first: then it is a race)
        writer.write(b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\n\r\n")
        writer.write(b"too many\n")
        await writer.drain()

    async def client(pool: Http1Pool) -> object:
        answer = await pool.send(Request("/v1/health/service/web"), {})
        return answer.status, answer.body, pool.connections

    (status, body, connections), _ = asyncio.run(scenario(script, client))
    assert (status, body, connections) == (429, b"too many\n", 0)  # read to the close


def test_an_idle_connection_the_agent_closed_is_retried_once_on_a_new_one():
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # then close the kept-alive connection as the client reuses it

    async def client(pool: Http1Pool) -> object:
        await pool.send(Request("/a"), {})
        await asyncio.sleep(0.1)  # the server has closed it by now; the pool does not know
        return (await pool.send(Request("/b"), {})).body

    body, accepted = asyncio.run(scenario(script, client))
    assert body == b"ok" and accepted == 2


def test_a_put_is_not_retried_and_a_hang_up_is_a_reset():
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async def client(pool: Http1Pool) -> object:
        try:
            await pool.send(Request("/v1/agent/check/pass/x", method="PUT"), {})
        except TransportError as exc:
            return exc.kind
        return None

    kind, accepted = asyncio.run(scenario(script, client))
    assert kind is TransportFailure.RESET and accepted == 1


def test_close_cuts_a_long_poll_short_as_closed():
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    async def client(pool: Http1Pool) -> object:
        poll = asyncio.ensure_future(pool.send(Request("/poll", timeout=30), {}))
        await asyncio.sleep(0.1)
        await pool.aclose()
        return (await asyncio.gather(poll, return_exceptions=True))[0]

    error, _ = asyncio.run(scenario(script, client))
    assert getattr(error, "kind", None) is TransportFailure.CLOSED
