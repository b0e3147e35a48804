"""Who is calling: the bearer token, verified by user-service through discovery."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from services.common.access_log import request_id
from services.common.auth import bearer_token, unauthorized
from services.common.upstream import call_upstream, dependency_error


@dataclass(frozen=True, slots=True)
class Caller:
    """The verified user a request acts for."""

    user_id: int
    username: str


def current_user() -> Caller:
    """Verify the request's bearer token with user-service; 401, 502 or 503 otherwise."""
    token = bearer_token()
    service = current_app.config["USER_SERVICE_NAME"]
    response = call_upstream(
        service,
        "POST",
        "/tokens/verify",
        timeout_key="USER_SERVICE_TIMEOUT",
        json={"token": token},
        # Verifying has no side effects; the key vouches for that, so the discovery
        # client may retry this POST on another instance even after sending it.
        headers={"Idempotency-Key": f"verify-{request_id()}"},
    )
    if response.status_code == 401:
        code, message = "invalid_token", "token is invalid"
        try:
            upstream = response.json()["error"]
            code, message = str(upstream["code"]), str(upstream["message"])
        except (ValueError, KeyError, TypeError):
            pass
        raise unauthorized(code, message)
    if response.status_code != 200:
        raise dependency_error(
            service,
            502,
            "upstream_failed",
            f"{service} answered {response.status_code} to a token check",
        )
    try:
        body = response.json()
        user_id, username = body["user_id"], body["username"]
    except (ValueError, KeyError, TypeError) as exc:
        raise dependency_error(
            service, 502, "upstream_failed", f"{service} answered a malformed token check"
        ) from exc
    if not isinstance(user_id, int) or not isinstance(username, str):
        raise dependency_error(
            service, 502, "upstream_failed", f"{service} answered a malformed token check"
        )
    return Caller(user_id=user_id, username=username)
