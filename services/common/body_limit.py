"""The body limit (``MAX_CONTENT_LENGTH``) for request bodies of unknown length too.

werkzeug answers 413 when a ``Content-Length`` is over the limit, but a chunked body
(no ``Content-Length``) it only cuts at the limit: the view would see a truncated body
and answer 400 for malformed JSON (or, at the gateway, relay the truncated body). So
before any view runs, ``init_body_limit`` reads such a body itself, at most limit + 1
bytes: more is 413; otherwise the request goes on with the whole body in memory (at most
the limit, 64 KiB by default). A chunked body the server cannot decode is 400.
"""

from __future__ import annotations

import io

from flask import Flask, request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

_CHUNK = 64 * 1024


def _read_at_most(stream: io.RawIOBase | io.BufferedIOBase, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes of ``stream`` (so that over the limit shows)."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def init_body_limit(app: Flask) -> None:
    """Refuse (413) a body of unknown length over ``MAX_CONTENT_LENGTH`` before any view."""

    @app.before_request
    def _bounded_body() -> None:
        environ = request.environ
        limit = request.max_content_length
        if (
            limit is None
            or not environ.get("HTTP_TRANSFER_ENCODING")  # no body, or one of known length
            or not environ.get("wsgi.input_terminated")  # werkzeug reads none of it
        ):
            return
        try:
            body = _read_at_most(environ["wsgi.input"], limit)
        except Exception as exc:  # the server's chunked decoder refused the framing
            raise BadRequest("the request body's chunked encoding is malformed") from exc
        if len(body) > limit:
            raise RequestEntityTooLarge()
        environ["wsgi.input"] = io.BytesIO(body)
