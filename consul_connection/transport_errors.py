"""What went wrong on the wire when a call to Consul failed, in words an operator can act on.

``classify_transport_error(exc)`` reads an exception raised by requests (urllib3) or httpx
(httpcore) and answers with a ``TransportFailure`` kind; ``describe_transport_error(exc,
connection)`` turns it into one sentence naming the agent. Both walk the exception's
chain (``__cause__``, ``__context__``, urllib3's ``reason``), so neither library needs to
be imported here, and no I/O is done: a caller decides from the kind whether to retry.

The case this exists for: ``CONSUL_HTTP_ADDR=https://...`` against an agent whose API is
plain HTTP. The TLS client reads the agent's plain ``HTTP/1.1 400`` answer as a TLS
record and fails with OpenSSL's ``WRONG_VERSION_NUMBER`` (``RECORD_LAYER_FAILURE`` on
newer OpenSSL); both libraries report that as a connection error, which reads like an
agent that is down. The consul CLI says "server gave HTTP response to HTTPS client";
here it is ``TransportFailure.NOT_TLS``: "the agent at https://... does not speak TLS".
The opposite mistake (``http://`` to an HTTPS-only port) is an HTTP answer, not a
transport failure: ``is_http_to_https_port(status, body)`` recognises it.
"""

from __future__ import annotations

import enum
import errno
import socket
import ssl
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from consul_discovery.connection.settings import ConsulConnection

#: OpenSSL reasons a TLS client gives when the peer answered in plain text.
_PLAIN_TEXT_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG"}
)
_TIMEOUT_NAMES = frozenset(
    {"Timeout", "TimeoutException", "ConnectTimeout", "ReadTimeout", "WriteTimeout",
     "PoolTimeout", "ConnectTimeoutError", "ReadTimeoutError", "TimeoutError"}
)  # fmt: skip
_RESET_NAMES = frozenset(
    {"RemoteDisconnected", "RemoteProtocolError", "ProtocolError", "IncompleteRead",
     "ReadError", "WriteError"}
)  # fmt: skip
_NAME_NAMES = frozenset({"NameResolutionError"})  # urllib3's, for a host that does not resolve
_CLOSED_NAMES = frozenset({"ClosedPoolError"})  # urllib3's: our own close cut the request
#: What requests (always a header) and h11/httpx (a header, when it says so) raise for a
#: header value they will not send: their messages quote the value.
_HEADER_NAMES = frozenset({"InvalidHeader"})
_HEADER_SAYING_NAMES = frozenset({"LocalProtocolError", "ValueError"})


class TransportFailure(enum.Enum):
    """Why a call to the agent failed before any HTTP answer came back."""

    REFUSED = "refused"  # nothing listens there
    TIMEOUT = "timeout"  # no answer in time (connect or read)
    NOT_TLS = "not_tls"  # https to a port that speaks plain HTTP
    TLS_UNTRUSTED = "tls_untrusted"  # the agent's certificate failed verification
    TLS = "tls"  # another TLS handshake failure
    NAME = "name"  # the host name does not resolve
    RESET = "reset"  # the connection was dropped mid-call
    OTHER = "other"
    CLOSED = "closed"  # this client was closed (a watch's long poll cut short)

    @property
    def reason(self) -> str:
        """The failure in a few words (for logs and error messages)."""
        return _REASONS[self]


_REASONS = {
    TransportFailure.REFUSED: "connection refused",
    TransportFailure.TIMEOUT: "no answer in time",
    TransportFailure.NOT_TLS: "the agent does not speak TLS on that port",
    TransportFailure.TLS_UNTRUSTED: "the agent's TLS certificate is not trusted",
    TransportFailure.TLS: "TLS handshake failed",
    TransportFailure.NAME: "host name not found",
    TransportFailure.RESET: "connection reset or closed mid-answer",
    TransportFailure.OTHER: "transport error",
    TransportFailure.CLOSED: "closed by this client",
}


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps (causes, contexts, urllib3 reasons, groups), each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nested in (
            current.__cause__,
            current.__context__,
            getattr(current, "reason", None),  # urllib3 MaxRetryError
            *(a for a in getattr(current, "args", ()) if isinstance(a, BaseException)),
            *(getattr(current, "exceptions", ()) or ()),  # an ExceptionGroup's members
        ):
            if isinstance(nested, BaseException):
                todo.append(nested)


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def classify_transport_error(exc: BaseException) -> TransportFailure:
    """The kind of transport failure ``exc`` (requests, httpx, or an OSError) is."""
    chain = list(exception_chain(exc))
    if any(_names(item) & _CLOSED_NAMES for item in chain):
        return TransportFailure.CLOSED
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError):
            return TransportFailure.TLS_UNTRUSTED
    for item in chain:
        if isinstance(item, ssl.SSLError):
            reason = (getattr(item, "reason", None) or "").upper()
            text = str(item).lower()
            if reason in _PLAIN_TEXT_REASONS or "wrong version number" in text:
                return TransportFailure.NOT_TLS
            if "certificate verify failed" in text:
                return TransportFailure.TLS_UNTRUSTED
            return TransportFailure.TLS
    for item in chain:
        if isinstance(item, ConnectionRefusedError) or (
            isinstance(item, OSError) and item.errno == errno.ECONNREFUSED
        ):
            return TransportFailure.REFUSED
        if isinstance(item, socket.gaierror) or _names(item) & _NAME_NAMES:
            return TransportFailure.NAME
    for item in chain:
        names = _names(item)
        if isinstance(item, TimeoutError | socket.timeout) or names & _TIMEOUT_NAMES:
            return TransportFailure.TIMEOUT
    for item in chain:
        if isinstance(item, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
            return TransportFailure.RESET
        if _names(item) & _RESET_NAMES:
            return TransportFailure.RESET
    text = " ".join(str(item) for item in chain).lower()
    if "connection refused" in text:
        return TransportFailure.REFUSED
    if "name or service not known" in text or "nodename nor servname" in text:
        return TransportFailure.NAME
    return TransportFailure.OTHER


def describe_transport_error(exc: BaseException, connection: ConsulConnection | None = None) -> str:
    """One sentence saying what failed and what to check; names the agent, never a token."""
    kind = classify_transport_error(exc)
    where = f"the agent at {connection.base_url}" if connection is not None else "the agent"
    if refused_header(exc):  # its message quotes the header's value: the token, perhaps
        return (
            f"cannot send a request to {where}: a header's value has characters HTTP "
            "forbids (not shown: check CONSUL_HTTP_TOKEN / CONSUL_HTTP_TOKEN_FILE)"
        )
    if kind is TransportFailure.NOT_TLS:
        return (
            f"{where} does not speak TLS (it answered in plain HTTP): use an http:// "
            "address in CONSUL_HTTP_ADDR (and unset CONSUL_HTTP_SSL), or point it at the "
            "agent's HTTPS port"
        )
    if kind is TransportFailure.TLS_UNTRUSTED:
        return (
            f"{where} presented a certificate that failed verification ({_root(exc)}): "
            "check CONSUL_CACERT/CONSUL_CAPATH and CONSUL_TLS_SERVER_NAME"
        )
    if kind is TransportFailure.TLS:
        return f"TLS handshake with {where} failed: {_root(exc)}"
    if kind is TransportFailure.REFUSED:
        hint = ""
        if connection is not None and connection.port in (80, 443):
            hint = (
                f" (port {connection.port}: an address without a port means the scheme's "
                "port, as for the consul CLI; the agent's HTTP API is on 8500 by default)"
            )
        return f"cannot connect to {where}: connection refused{hint}"
    if kind is TransportFailure.NAME:
        return f"cannot connect to {where}: its host name does not resolve"
    if kind is TransportFailure.TIMEOUT:
        return f"{where} did not answer in time"
    if kind is TransportFailure.RESET:
        return f"{where} dropped the connection"
    return f"cannot reach {where}: {type(exc).__name__}: {_root(exc)}"


def refused_header(exc: BaseException) -> bool:
    """True when the HTTP library refused to send a header value (requests' InvalidHeader,
    h11's or httpx's LocalProtocolError, http.client's ValueError): never show its words."""
    for item in exception_chain(exc):
        names = {type(item).__name__}
        if names & _HEADER_NAMES:
            return True
        if names & _HEADER_SAYING_NAMES and "header" in str(item).lower():
            return True
    return False


def is_http_to_https_port(status: int, body: str) -> bool:
    """True for the answer a TLS-only port gives a plain-HTTP request (Go's net/http)."""
    return status == 400 and "http request to an https server" in (body or "").lower()


def _root(exc: BaseException) -> str:
    """The innermost message of ``exc``'s chain (the OS's or OpenSSL's own words)."""
    last = exc
    for item in exception_chain(exc):
        last = item
    return str(last)[:300]
