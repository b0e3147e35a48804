"""Consul's refusals in words: which permission, on what, for which call; never the token."""

from consul_discovery.connection import acl_denial, filtered_by_acls


def test_acl_denial_names_permission_resource_and_call():
    body = (
        "Permission denied: token with AccessorID 'a1b2c3' lacks permission "
        "'service:write' on \"order-service\""
    )
    denial = acl_denial(body, "register order-service-1")
    assert (denial.permission, denial.resource, denial.accessor) == (
        "service:write",
        "order-service",
        "a1b2c3",
    )
    text = str(denial)
    assert "service:write" in text and "order-service" in text and "register" in text


def test_acl_denial_without_details_still_says_what_was_denied():
    denial = acl_denial("Permission denied", "read the catalog")
    assert denial.permission is None
    assert "read the catalog" in str(denial)


def test_the_reason_is_the_sentence_without_the_call():
    """The registrar's ConsulRejected uses ``reason``; the CLIs ``str``: one wording."""
    unknown = acl_denial("ACL not found", "register web-1")
    assert unknown.unknown_token and unknown.permission is None
    assert unknown.reason == (
        "it does not know the ACL token (ACL not found; "
        "check CONSUL_HTTP_TOKEN / CONSUL_HTTP_TOKEN_FILE)"
    )
    for denial in (
        unknown,
        acl_denial("Permission denied", "x"),
        acl_denial(
            "Permission denied: token with AccessorID 'a1' lacks permission 'service:write' "
            'on "web"',
            "register web-1",
        ),
    ):
        assert str(denial) == f"Consul denied permission to {denial.call}: {denial.reason}"


def test_filtered_header_is_case_insensitive():
    assert filtered_by_acls({"x-consul-results-filtered-by-acls": "true"})
    assert not filtered_by_acls({"X-Consul-Results-Filtered-By-ACLs": "false"})
    assert not filtered_by_acls({})


# -- the one error mapping (answer_error / transport_error) ------------------------------

import pytest  # noqa: E402

from consul_discovery.connection.exchange import (  # noqa: E402
    Response,
    TransportError,
    TransportFailure,
)
from consul_discovery.connection.refusals import (  # noqa: E402
    ErrorKinds,
    answer_error,
    transport_error,
)


class Unavailable(Exception):
    pass


class Refused(Exception):
    pass


class Denied(Refused):
    pass


KINDS = ErrorKinds(Unavailable, Refused, Denied)
DENIED = (
    b"Permission denied: token with AccessorID 'a1b2' lacks permission 'service:read' "
    b'on "order-service"'
)


@pytest.mark.parametrize(
    ("status", "body", "kind", "words"),
    [
        (
            403,
            DENIED,
            Denied,
            "Consul denied permission to read service 'x': the ACL token lacks 'service:read'",
        ),
        (403, b"ACL not found", Denied, "does not know the ACL token (ACL not found"),
        (400, b"Client sent an HTTP request to an HTTPS server.\n", Unavailable, "use https://"),
        (429, b"rate limit exceeded", Unavailable, "rate limited"),
        (400, b"Bad request: bad tag", Refused, "refused service 'x': 400 Bad request"),
        (404, b"", Refused, "refused service 'x': 404"),
        (500, b"Failed to create boolean expression evaluator: x", Refused, "filter expression"),
        (500, b"No cluster leader", Unavailable, "(no cluster leader): 500"),
        (500, b"grpc: the client connection is closing", Unavailable, "agent is shutting down"),
        (500, b"rpc error making call: EOF", Unavailable, "unavailable for service 'x': 500"),
        (503, b"", Unavailable, "unavailable for service 'x': 503"),
    ],
)
def test_answer_error_maps_each_status_once_for_every_client(status, body, kind, words):
    error = answer_error(Response(status, {}, body), "service 'x'", "127.0.0.1:8500", KINDS)
    assert type(error) is kind
    assert words in str(error) and "127.0.0.1:8500" in str(error)


def test_a_2xx_is_no_error_and_a_write_denial_names_the_write():
    assert answer_error(Response(200, {}, b"[]"), "x", "a:1", KINDS) is None
    body = DENIED.replace(b"service:read", b"key:write")
    error = answer_error(Response(403, {}, body), "config/a", "a:1", KINDS, verb="write")
    assert "Consul denied permission to write config/a: the ACL token lacks 'key:write'" in str(
        error
    )


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        (TransportFailure.REFUSED, "unreachable for service 'x': connection refused"),
        (TransportFailure.TIMEOUT, "no answer in time"),
        (TransportFailure.NOT_TLS, "the agent does not speak TLS on that port"),
        (TransportFailure.TLS_UNTRUSTED, "certificate is not trusted"),
        (TransportFailure.RESET, "connection reset"),
    ],
)
def test_transport_failures_are_unavailability_saying_which(kind, words):
    cause = OSError("the transport's own error")
    failure = TransportError(kind, "detail")
    failure.__cause__ = cause
    error = transport_error(failure, "service 'x'", "127.0.0.1:8500", KINDS)
    assert type(error) is Unavailable and words in str(error)
    assert error.__cause__ is cause
