"""Reading the caller's bearer token from the ``Authorization`` header."""

from __future__ import annotations

from flask import request

from services.common.errors import ApiError

MAX_TOKEN_LENGTH = 1024


def unauthorized(code: str, message: str) -> ApiError:
    """A 401 ApiError with the ``WWW-Authenticate: Bearer`` challenge."""
    return ApiError(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="api"'})


def bearer_token() -> str:
    """The token of ``Authorization: Bearer <token>``, or a 401 ApiError."""
    header = request.headers.get("Authorization", "")
    if not header:
        raise unauthorized("missing_token", "Authorization: Bearer <token> header is required")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("invalid_token", "Authorization header must be 'Bearer <token>'")
    if len(token) > MAX_TOKEN_LENGTH:
        raise unauthorized("invalid_token", "token is too long")
    return token
