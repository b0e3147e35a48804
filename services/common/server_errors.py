"""The HTTP servers' own error answers in the platform's JSON shape, never an HTML page.

A request the server itself refuses before any app sees it (a malformed request line,
a bad header name, a header block over the limit, a bad ``Content-Length``) gets the
server's own page: gunicorn writes HTML, uvicorn plain text. Two hooks make those the
shared JSON error (``services.common.errors``) too:

- gunicorn: ``install_gunicorn_json_errors()`` replaces ``gunicorn.util.write_error``,
  the one function every gunicorn worker answers such a request with (gunicorn has no
  setting for its error pages); ``services.common.gunicorn_conf`` installs it.
- uvicorn: ``JsonErrorH11Protocol`` is the h11 protocol answering its 400 in JSON;
  ``uvicorn --http services.common.server_errors:JsonErrorH11Protocol``.

The message is the server's own (e.g. ``Invalid HTTP Version 'HTTP/9.9'``): it names
what is wrong with the request and, as JSON, cannot be markup.
"""

from __future__ import annotations

import json
import socket

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from services.common.errors import ERROR_MEDIA_TYPE, ApiError, error_code


def error_body(status: int, message: str) -> bytes:
    """The JSON error body for ``status`` (code from the shared table) and ``message``."""
    return json.dumps(ApiError(status, error_code(status), message).to_dict()).encode()


def error_response(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 error response that closes the connection."""
    body = error_body(status, message or reason)
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        f"Content-Type: {ERROR_MEDIA_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def gunicorn_write_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """What gunicorn's ``util.write_error`` does, with a JSON body instead of HTML."""
    from gunicorn import util

    util.write_nonblock(sock, error_response(status_int, reason, mesg))


def install_gunicorn_json_errors() -> None:
    """Make this process's gunicorn workers answer the requests they refuse in JSON."""
    from gunicorn import util

    util.write_error = gunicorn_write_error


class JsonErrorH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering a request it cannot parse with the JSON 400."""

    def send_400_response(self, msg: str) -> None:
        """The JSON 400 for a request h11 refused (``msg`` says why); then close."""
        body = error_body(400, msg)
        headers = [
            (b"content-type", ERROR_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        reason = b"Bad Request"
        for event in (
            h11.Response(status_code=400, headers=headers, reason=reason),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()
