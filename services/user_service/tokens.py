"""Signed, expiring login tokens (itsdangerous), verifiable by any user-service instance.

Every instance must share the secret (``USER_SERVICE_SECRET``). The clock is injected so
expiry is testable without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

Clock = Callable[[], float]
_SALT = "user-service.login-token"


class TokenError(Exception):
    """A token that does not verify."""


class TokenExpiredError(TokenError):
    """A token whose signature is good but whose age exceeds the maximum."""


class TokenInvalidError(TokenError):
    """A token that is forged, truncated or otherwise malformed."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """Who a verified token speaks for."""

    user_id: int
    username: str


def _signer_with_clock(clock: Clock) -> type[TimestampSigner]:
    class _ClockedSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock())

    return _ClockedSigner


class TokenSigner:
    """Issues and verifies login tokens with a shared secret and a maximum age."""

    def __init__(self, secret: str, max_age: int, clock: Clock = time.time) -> None:
        if not secret:
            raise ValueError("a non-empty secret is required")
        self.max_age = max_age
        self._serializer = URLSafeTimedSerializer(
            secret, salt=_SALT, signer=_signer_with_clock(clock)
        )

    def issue(self, claims: TokenClaims) -> str:
        """A signed token for ``claims``, valid for ``max_age`` seconds from now."""
        return self._serializer.dumps({"uid": claims.user_id, "usr": claims.username})

    def verify(self, token: str) -> TokenClaims:
        """The claims of a valid token; TokenExpiredError or TokenInvalidError otherwise."""
        try:
            data = self._serializer.loads(token, max_age=self.max_age)
        except SignatureExpired as exc:
            raise TokenExpiredError("token has expired") from exc
        except BadSignature as exc:
            raise TokenInvalidError("token is invalid") from exc
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("uid"), int)
            or not isinstance(data.get("usr"), str)
        ):
            raise TokenInvalidError("token payload is malformed")
        return TokenClaims(user_id=data["uid"], username=data["usr"])
