"""Turning a failed call to another service into the JSON error we answer with.

NoHealthyInstanceError, UnknownServiceError, ConsulUnavailableError -> 503 (retry later)
AllAttemptsFailedError, other DiscoveryError, transport errors      -> 502

Every such answer carries ``Failure-Origin: dependency`` (the convention of
discovery_client/failure_origin.py): this instance is fine, a service it needs is not,
so a caller's discovery client neither retries it elsewhere nor ejects this instance.
``dependency_error`` builds any other error answer caused by a dependency.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import requests
from flask import Flask, current_app

from consul_discovery.client.errors import (
    AllAttemptsFailedError,
    ConsulUnavailableError,
    DiscoveryError,
    NoHealthyInstanceError,
    UnknownServiceError,
)
from consul_discovery.client.failure_origin import dependency_failure_headers
from consul_discovery.registry.outage import OutageLog
from services.common.access_log import REQUEST_ID_HEADER, request_id
from services.common.discovery import get_caller
from services.common.errors import ApiError

RETRY_AFTER_SECONDS = "1"


def dependency_error(
    service: str,
    status: int,
    code: str,
    message: str,
    *,
    extra: dict[str, object] | None = None,
    headers: dict[str, str] | None = None,
) -> ApiError:
    """An ApiError caused by ``service`` (a dependency), marked ``Failure-Origin: dependency``."""
    return ApiError(
        status,
        code,
        message,
        extra={"service": service, **(extra or {})},
        headers={**dependency_failure_headers(), **(headers or {})},
    )


def upstream_error(service: str, exc: BaseException) -> ApiError:
    """The ApiError (502 or 503) that reports ``exc`` from calling ``service``."""
    if isinstance(exc, NoHealthyInstanceError | UnknownServiceError | ConsulUnavailableError):
        return dependency_error(
            service,
            503,
            "no_healthy_instance",
            f"no healthy instance of {service} is available; retry later",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    if isinstance(exc, AllAttemptsFailedError):
        return dependency_error(
            service,
            502,
            "upstream_failed",
            f"every attempt to call {service} failed",
            extra={"attempts": len(exc.attempts)},
        )
    if isinstance(exc, DiscoveryError | requests.RequestException):
        return dependency_error(service, 502, "upstream_failed", f"calling {service} failed: {exc}")
    raise TypeError(f"not an upstream error: {exc!r}")


UPSTREAM_ERRORS = (DiscoveryError, requests.RequestException)


def mesh_denial(service: str, response: requests.Response) -> ApiError | None:
    """The ApiError (403) reporting that the mesh refused this caller at ``service``
    (``consul_discovery.mesh``'s 403 body: ``{"error": "forbidden", "caller": ...}``,
    not the platform's error shape), or None for any other answer."""
    if response.status_code != 403:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("error") != "forbidden" or "caller" not in body:
        return None
    caller = body.get("caller")
    return dependency_error(
        service,
        403,
        "forbidden",
        f"the mesh does not allow {caller} to call {service}: {body.get('reason')}",
        extra={"caller": caller},
    )


_outage_lock = threading.Lock()


def outage_log(app: Flask, service: str) -> OutageLog:
    """The app's OutageLog for calls to ``service``: one warning going, one coming back."""
    logs: dict[str, OutageLog] = app.extensions.setdefault("upstream_outages", {})
    found = logs.get(service)
    if found is None:
        with _outage_lock:
            found = logs.setdefault(
                service, OutageLog(logging.getLogger("services.upstream"), service)
            )
    return found


def call_upstream(
    service: str,
    method: str,
    path: str,
    *,
    timeout_key: str,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
) -> requests.Response:
    """Call ``service`` through the app's discovery client with this request's id and the
    configured timeouts (``CONNECT_TIMEOUT``, ``timeout_key``); a failure to reach it
    raises the ApiError (502/503) that reports it, a mesh denial the 403 (``mesh_denial``)."""
    try:
        response = get_caller(current_app).request(
            service,
            method,
            path,
            json=json,
            headers={REQUEST_ID_HEADER: request_id(), **(headers or {})},
            timeout=(
                float(current_app.config["CONNECT_TIMEOUT"]),
                float(current_app.config[timeout_key]),
            ),
        )
    except UPSTREAM_ERRORS as exc:
        raise upstream_error(service, exc) from exc
    denied = mesh_denial(service, response)
    if denied is not None:
        raise denied
    return response
