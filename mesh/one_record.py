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
* uvicorn (``GatheringTransport``): it writes the head on ``http.response.start`` and
  the body on the app's next ``send``, with no wait between: the head is held until that
  write and sent with it, at once; a head with nothing after it in the same turn of the
  event loop goes out when the turn ends (``call_soon``: flushing everything at the
  turn's end instead delays each answer past uvicorn's work after it, measured worse);
  closing or aborting sends (or drops) what is held first, as asyncio would.
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
    """A transport that joins a write to the one before it in the same loop turn.

    The first write of a turn is held; the next write in that turn is joined to it and
    sent at once (a head and its body: one record, no later than the body's write);
    a held write with nothing after it goes out when the turn ends (``call_soon``).
    The rest is the transport's.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Hold ``data`` till the turn's next write or its end; or send it with the held."""
        if not data:
            return
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            self._transport.write(held + data)

    def writelines(self, lines: Any) -> None:
        """Write each of ``lines``."""
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Send the held write, if any."""
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def get_write_buffer_size(self) -> int:
        """The transport's buffer, plus the held write."""
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def close(self) -> None:
        """Send the held write, then close (asyncio flushes its buffer first)."""
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        """Send the held write, then half-close."""
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        """Drop the held write and abort, as asyncio drops its buffer."""
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
