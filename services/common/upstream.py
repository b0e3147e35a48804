"""Turning a failed call to another service into the JSON error we answer with.

NoHealthyInstanceError, UnknownServiceError, ConsulUnavailableError -> 503 (retry later)
AllAttemptsFailedError, other DiscoveryError, transport errors      -> 502
"""

from __future__ import annotations

import requests

from discovery_client.errors import (
    AllAttemptsFailedError,
    ConsulUnavailableError,
    DiscoveryError,
    NoHealthyInstanceError,
    UnknownServiceError,
)
from services.common.errors import ApiError

RETRY_AFTER_SECONDS = "1"


def upstream_error(service: str, exc: BaseException) -> ApiError:
    """The ApiError (502 or 503) that reports ``exc`` from calling ``service``."""
    extra = {"service": service}
    if isinstance(exc, NoHealthyInstanceError | UnknownServiceError | ConsulUnavailableError):
        return ApiError(
            503,
            "no_healthy_instance",
            f"no healthy instance of {service} is available; retry later",
            extra=extra,
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    if isinstance(exc, AllAttemptsFailedError):
        extra["attempts"] = len(exc.attempts)
        return ApiError(
            502, "upstream_failed", f"every attempt to call {service} failed", extra=extra
        )
    if isinstance(exc, DiscoveryError | requests.RequestException):
        return ApiError(502, "upstream_failed", f"calling {service} failed: {exc}", extra=extra)
    raise TypeError(f"not an upstream error: {exc!r}")


UPSTREAM_ERRORS = (DiscoveryError, requests.RequestException)
