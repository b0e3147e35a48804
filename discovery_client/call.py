"""The requests shell: send one attempt of a call over a requests.Session.

What is requests' own in a call, and nothing else (the core decides everything else):
the attempt's request (a shallow copy of the caller's PreparedRequest with the endpoint's
URL), its timeouts cut to what is left of the deadline, sending it with
``stream=True``, classifying requests' exceptions (``retry.classify_error``), closing a
superseded answer and reading a parked one.

A call that does not stream reads the answer's body within its attempt: a body cut
short (an instance killed between the head and the body of its answer: gunicorn writes
them apart) is that attempt's read error, retried on another instance when the retry
rule allows, instead of an error the caller meets after the call has ended. Its latency
then runs to the body's end; a streamed call's to the status and headers (as httpx',
whose client reads the body after the transport has answered).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests

from consul_discovery.client.attempt import AttemptPlan
from consul_discovery.client.connect import unsendable
from consul_discovery.client.load import Endpoint
from consul_discovery.client.pool import SSL_CONTEXT_ATTR
from consul_discovery.client.retry import ErrorKind, classify_error

Timeout = float | tuple[float | None, float | None] | None

_PreparedRequest = requests.PreparedRequest


class RequestsShell:
    """requests' side of the attempt loop (consul_discovery.client.drivers.SyncShell)."""

    errors: tuple[type[BaseException], ...] = (requests.RequestException, OSError)

    @staticmethod
    def classify(error: BaseException) -> ErrorKind:
        """Where in the exchange a requests exception happened."""
        return classify_error(error)

    @staticmethod
    def release(response: requests.Response) -> None:
        """Close a superseded answer."""
        response.close()

    @staticmethod
    def park(response: requests.Response) -> requests.Response:
        """Read the answer's body (its connection goes back to the pool); keep it."""
        _ = response.content
        return response


SHELL = RequestsShell()


def path_of(url: str, service: str) -> str:
    """The path and query of a ``http://<service>/...`` URL (``/`` when it has none)."""
    prefix_len = 7 + len(service)  # "http://" + service
    if url.startswith("http://") and url.startswith(service, 7):
        rest = url[prefix_len:]
        if not rest or rest[0] in "/?":
            return rest if rest.startswith("/") else "/" + rest
    parts = urlsplit(url)  # e.g. a host spelled in another case
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def sender(
    session: requests.Session,
    prepared: requests.PreparedRequest,
    path: str,
    timeout: Timeout,
    send_kwargs: dict[str, Any],
    whole: bool = False,
) -> Callable[[Endpoint, AttemptPlan], requests.Response]:
    """``send(endpoint, plan)`` for one call: the attempt's request, sent once; with
    ``whole`` (a call that does not stream) its answer's body read too."""
    if isinstance(timeout, tuple):
        connect, read = timeout
    else:
        connect = read = timeout
    session_send = session.send
    new = object.__new__
    # Session.send would work these out per attempt (resolve_proxies: a URL parse), and
    # without the environment they are only a copy of the session's own.
    own_proxies = "proxies" not in send_kwargs and not session.trust_env

    def send(endpoint: Endpoint, plan: AttemptPlan) -> requests.Response:
        # A shallow copy: the same headers, body and hooks (none is changed per attempt);
        # PreparedRequest.copy() would copy headers and cookies for nothing.
        request = new(_PreparedRequest)
        request.__dict__.update(prepared.__dict__)
        route = plan.route
        changes = route.changes
        dial = endpoint.dial
        if changes is None:
            request.url = dial.base_url + path
        else:  # a chain route's prefix rewrite and header modifiers
            request.url = dial.base_url + changes.path(path)
            request.headers = prepared.headers.copy()
            changes.request_headers(request.headers)
        if dial.scheme == "https":  # a Connect endpoint: its pool is keyed by the context
            if dial.ssl_context is None:
                raise unsendable(dial)
            setattr(request, SSL_CONTEXT_ATTR, dial.ssl_context)
        left = plan.remaining()  # each timeout cut to what is left of the deadline
        limit = connect if route.connect_timeout is None else route.connect_timeout
        timeout = (
            left if limit is None or limit > left else limit,
            left if read is None or read > left else read,
        )
        if own_proxies:
            proxies = dict(session.proxies or ())
            response = session_send(request, timeout=timeout, stream=True, proxies=proxies,
                                    **send_kwargs)  # fmt: skip
        else:
            response = session_send(request, timeout=timeout, stream=True, **send_kwargs)
        if changes is not None:
            changes.response_headers(response.headers)
        if whole:  # a body cut short is this attempt's read error (ChunkedEncodingError)
            _ = response.content
        return response

    return send
