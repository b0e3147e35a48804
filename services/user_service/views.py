"""user-service endpoints: register, login, read a user, verify a token."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from services.common.auth import bearer_token, unauthorized
from services.common.db import get_db
from services.common.errors import ApiError
from services.common.openapi import LOCATION, operation
from services.common.validation import Field, json_body
from services.user_service import store
from services.user_service.tokens import (
    TokenClaims,
    TokenExpiredError,
    TokenInvalidError,
    TokenSigner,
)

bp = Blueprint("users", __name__)

USERNAME = Field(
    "username",
    str,
    min_length=3,
    max_length=32,
    pattern=r"[A-Za-z0-9_.-]+",
    description="3-32 letters, digits, '_', '.', '-'; unique, case-insensitively",
)
CREDENTIALS = (
    USERNAME,
    Field("password", str, min_length=8, max_length=128, description="8-128 characters"),
)
LOGIN = (
    Field("username", str, min_length=1, max_length=32),
    Field("password", str, min_length=1, max_length=128),
)
TOKEN_BODY = (Field("token", str, min_length=1, max_length=1024),)

USER_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "username": {"type": "string"},
        "created_at": {"type": "number", "description": "Unix time"},
    },
}
TOKEN_SCHEMA = {
    "type": "object",
    "properties": {
        "token": {"type": "string"},
        "token_type": {"type": "string", "enum": ["Bearer"]},
        "expires_in": {"type": "integer"},
        "user_id": {"type": "integer"},
    },
}
CLAIMS_SCHEMA = {
    "type": "object",
    "properties": {"user_id": {"type": "integer"}, "username": {"type": "string"}},
}


def _signer() -> TokenSigner:
    return current_app.extensions["token_signer"]


def _hash_of_nobody() -> str:
    """A hash to check against for unknown users, so both paths take the same time."""
    cached = current_app.extensions.get("nobody_hash")
    if cached is None:
        method = current_app.config["PASSWORD_HASH_METHOD"]
        cached = generate_password_hash("not-a-password", method=method)
        current_app.extensions["nobody_hash"] = cached
    return cached


def verify_token(token: str) -> TokenClaims:
    """Claims of a valid token whose user still exists, else a 401 ApiError."""
    try:
        claims = _signer().verify(token)
    except TokenExpiredError as exc:
        raise unauthorized("token_expired", "token has expired; log in again") from exc
    except TokenInvalidError as exc:
        raise unauthorized("invalid_token", "token is invalid") from exc
    if store.user_by_id(get_db(), claims.user_id) is None:
        raise unauthorized("invalid_token", "token's user no longer exists")
    return claims


@bp.post("/register")
@operation(
    "Create a user",
    body=CREDENTIALS,
    responses={201: "Created", 409: "Username taken", 415: "Not JSON", 422: "Invalid field"},
    response_schema=USER_SCHEMA,
    response_headers={201: {"Location": LOCATION}},
)
def register() -> tuple[Response, int, dict[str, str]]:
    """Create a user with a hashed password; 409 if the username is taken."""
    body = json_body(CREDENTIALS)
    password_hash = generate_password_hash(
        body["password"], method=current_app.config["PASSWORD_HASH_METHOD"]
    )
    try:
        user = store.create_user(get_db(), body["username"], password_hash)
    except store.UsernameTakenError as exc:
        raise ApiError(
            409, "username_taken", "username is already taken", field="username"
        ) from exc
    location = url_for("users.get_user", user_id=user.id)
    return jsonify(user.public()), 201, {"Location": location}


@bp.post("/login")
@operation(
    "Exchange username and password for a signed, expiring bearer token",
    body=LOGIN,
    responses={200: "Logged in", 401: "Wrong username or password", 422: "Invalid field"},
    response_schema=TOKEN_SCHEMA,
)
def login() -> Response:
    """Check the password; answer a token, or 401 for any wrong username/password."""
    body = json_body(LOGIN)
    user = store.user_by_name(get_db(), body["username"])
    stored_hash = user.password_hash if user is not None else _hash_of_nobody()
    password_ok = check_password_hash(stored_hash, body["password"])
    if user is None or not password_ok:
        raise unauthorized("invalid_credentials", "wrong username or password")
    signer = _signer()
    token = signer.issue(TokenClaims(user_id=user.id, username=user.username))
    return jsonify(
        {"token": token, "token_type": "Bearer", "expires_in": signer.max_age, "user_id": user.id}
    )


@bp.get("/users/<int(max=9223372036854775807):user_id>")
@operation(
    "Read a user's public profile (any logged-in user)",
    auth=True,
    responses={200: "The user", 401: "No valid token", 404: "No such user"},
    response_schema=USER_SCHEMA,
)
def get_user(user_id: int) -> Response:
    """A user's id, username and creation time."""
    verify_token(bearer_token())
    user = store.user_by_id(get_db(), user_id)
    if user is None:
        raise ApiError(404, "user_not_found", f"no user with id {user_id}")
    return jsonify(user.public())


@bp.post("/tokens/verify")
@operation(
    "Verify a token (called by other services): its user, or 401",
    body=TOKEN_BODY,
    responses={200: "Token is valid", 401: "Token invalid or expired", 422: "Invalid field"},
    response_schema=CLAIMS_SCHEMA,
)
def verify() -> Response:
    """The user a token speaks for, or 401 if forged, expired, or the user is gone."""
    body: dict[str, Any] = json_body(TOKEN_BODY)
    claims = verify_token(body["token"])
    return jsonify({"user_id": claims.user_id, "username": claims.username})
