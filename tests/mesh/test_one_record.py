"""One TLS record per small answer: gunicorn's Response and uvicorn's transport, gathered."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.http import wsgi

from consul_discovery.mesh.one_record import GatheringTransport, GatheringWrite


class Socket:
    """Records each sendall."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))


class Request:
    """What gunicorn's Response reads of a request."""

    method = "GET"
    version = (1, 1)
    headers: list[tuple[str, str]] = []

    def should_close(self) -> bool:
        return False


Gathering = type("GatheringResponse", (GatheringWrite, wsgi.Response), {})


def _response(headers: list[tuple[str, str]], status: str = "200 OK") -> tuple[Any, Socket]:
    sock = Socket()
    response = Gathering(Request(), sock, Config())
    response.start_response(status, headers)
    return response, sock


def test_the_head_goes_out_with_the_first_body_bytes() -> None:
    response, sock = _response([("Content-Length", "10")])
    response.write(b"hello")
    response.write(b"world")
    assert len(sock.sent) == 2
    head, _, body = sock.sent[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 10" in head
    assert body == b"hello" and sock.sent[1] == b"world"


def test_gunicorn_still_decides_what_is_sent() -> None:
    """Its own rules hold: a body past Content-Length is cut, an empty first write sends
    the head alone (an app that flushes its head early), a chunked answer is unchanged."""
    response, sock = _response([("Content-Length", "3")])
    response.write(b"abcdef")
    assert sock.sent[0].endswith(b"\r\n\r\nabc") and len(sock.sent) == 1

    response, sock = _response([("Content-Length", "3")])
    response.write(b"")
    assert len(sock.sent) == 2 and sock.sent[0].endswith(b"\r\n\r\n") and sock.sent[1] == b""

    response, sock = _response([])  # no length: chunked, as gunicorn writes it
    response.write(b"abc")
    assert sock.sent[0].endswith(b"\r\n\r\n") and sock.sent[1:] == [b"3\r\nabc\r\n"]


def test_a_failed_write_sends_what_gunicorn_would_have_sent() -> None:
    response, sock = _response([("Content-Length", "3")])
    with pytest.raises(TypeError):
        response.write("text")  # type: ignore[arg-type]  # gunicorn's check, after its head
    assert response.sock is sock and len(sock.sent) == 1 and sock.sent[0].endswith(b"\r\n\r\n")


class Transport:
    """An asyncio transport that records writes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def get_write_buffer_size(self) -> int:
        return 7

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_a_write_is_joined_to_the_one_held_before_it_in_the_same_turn() -> None:
    async def main() -> list[list[bytes]]:
        inner = Transport()
        gathering = GatheringTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
        gathering.write(b"HTTP/1.1 200 OK\r\n\r\n")
        assert inner.writes == [] and gathering.get_write_buffer_size() == 7 + 19
        gathering.write(memoryview(b"body"))  # joined and sent at once, not at the turn's end
        seen = [list(inner.writes)]
        gathering.writelines([b"chunk"])  # held: nothing else follows in this turn
        seen.append(list(inner.writes))
        await asyncio.sleep(0)  # the turn ends: the held write goes out alone
        seen.append(list(inner.writes))
        assert gathering.get_extra_info("peercert") == "info:peercert"  # the rest delegates
        return seen

    head_and_body = b"HTTP/1.1 200 OK\r\n\r\nbody"
    assert asyncio.run(main()) == [[head_and_body], [head_and_body], [head_and_body, b"chunk"]]


def test_closing_sends_what_is_held_and_aborting_drops_it() -> None:
    async def main() -> tuple[Transport, Transport]:
        loop = asyncio.get_running_loop()
        closed, aborted = Transport(), Transport()
        first = GatheringTransport(closed, loop)  # type: ignore[arg-type]
        first.write(b"last words")
        first.close()
        second = GatheringTransport(aborted, loop)  # type: ignore[arg-type]
        second.write(b"dropped")
        second.abort()
        await asyncio.sleep(0)  # the scheduled flushes find nothing left
        return closed, aborted

    closed, aborted = asyncio.run(main())
    assert closed.writes == [b"last words"] and closed.closed
    assert aborted.writes == [] and aborted.aborted
