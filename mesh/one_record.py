"""A mesh server sends an answer's head with its first body bytes: one TLS record, not two.

gunicorn and uvicorn write an answer's status line and headers, then its body, as two
writes; over TLS each write is a record of its own, which the caller must read and
decrypt apart (Python's ``ssl`` reads one record per call): about 10 µs more per answer
on each side here, a fifth of what mTLS adds to a kept-alive call (bench/mesh_cost.py).
Go's net/http buffers the head with the body the same way. Nothing is held back:

* gunicorn (``GatheringWrite``, installed in each worker by ``gather_gunicorn_answers``):
  its Response writes the head from inside the write of the first body chunk; that one
  ``write`` is gathered into a single ``sendall``.
  A chunked answer, an empty first chunk or a head with no body (``close``) is written
  as gunicorn writes it.
* uvicorn (``GatheringTransport``): writes made in one turn of the event loop (uvicorn
  writes the head on ``http.response.start`` and the body on the app's next ``send``,
  with no wait between) go out together at the end of that turn (``call_soon``);
  closing or aborting sends (or drops) what is gathered first, as asyncio would.
"""

from __future__ import annotations

import asyncio
from typing import Any


class _Gathered:
    """Stands in for a socket within one gunicorn ``write``: keeps what it is sent."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.parts.append(data)


class GatheringWrite:
    """Mixin for gunicorn's Response: the head and the first body chunk in one ``sendall``."""

    def write(self, arg: bytes) -> None:
        """As gunicorn's ``write``; the first one with bytes also carries the head."""
        if self.headers_sent or self.chunked or not arg:  # type: ignore[attr-defined]
            super().write(arg)  # type: ignore[misc]
            return
        sock, gathered = self.sock, _Gathered()  # type: ignore[has-type]
        self.sock = gathered  # gunicorn's own write, its two sendall calls kept
        try:
            super().write(arg)  # type: ignore[misc]
        finally:  # what it wrote before any error too, as gunicorn would have sent it
            self.sock = sock
            if gathered.parts:
                sock.sendall(b"".join(gathered.parts))


def gather_gunicorn_answers() -> None:
    """Make this (worker) process's gunicorn answer with GatheringWrite's Response."""
    from gunicorn.http import wsgi  # only a gunicorn worker asks (no import otherwise)

    if not issubclass(wsgi.Response, GatheringWrite):
        wsgi.Response = type("GatheringResponse", (GatheringWrite, wsgi.Response), {})


class GatheringTransport:
    """A transport whose writes of one event-loop turn go out as one (delegating the rest)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._parts: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Gather ``data``; the first write of a turn schedules the flush at its end."""
        if not data:
            return
        if not self._parts:
            self._loop.call_soon(self.flush)
        self._parts.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        """Gather each of ``lines``."""
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Send what is gathered, as one write."""
        if self._parts:
            data = b"".join(self._parts)
            self._parts.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        """The transport's buffer, plus what is gathered."""
        return self._transport.get_write_buffer_size() + sum(map(len, self._parts))

    def close(self) -> None:
        """Send what is gathered, then close (asyncio flushes its buffer first)."""
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        """Send what is gathered, then half-close."""
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        """Drop what is gathered and abort, as asyncio drops its buffer."""
        self._parts.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
