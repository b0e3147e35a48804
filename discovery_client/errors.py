"""The discovery client's exception tree.

DiscoveryError
├── ConsulUnavailableError   Consul unreachable and nothing cached for the service
│   └── ConsulRateLimitedError the agent answered 429 (too many connections from this
│                              host): it protects itself, nothing is down
├── ConsulQueryError         Consul answered but refused the query (bad filter, ACL)
│   └── ConsulPermissionError  the ACL token may not read it (403, or an answer Consul
│                              emptied because of ACLs): names the permission and call
├── UnknownServiceError      Consul has never heard of the service (lists known names)
├── NoHealthyInstanceError   the service exists but no instance can take the call
└── AllAttemptsFailedError   every attempt failed; ``attempts`` holds each cause
"""

from __future__ import annotations

from collections.abc import Sequence

from consul_discovery.connection.throttle import RateLimited


class DiscoveryError(Exception):
    """Base class of every error the discovery client raises."""


class ConsulUnavailableError(DiscoveryError):
    """Consul could not be reached and no last-known-good instances are cached."""


class ConsulRateLimitedError(ConsulUnavailableError, RateLimited):
    """The agent answered 429: this host holds more connections than it allows (or its
    rate limit says wait). Watches back off and keep serving what they have; a first
    resolve retries within its timeout before raising this."""


class ConsulQueryError(DiscoveryError):
    """Consul answered but refused the query (bad filter expression, ACL denied, ...)."""


class ConsulPermissionError(ConsulQueryError):
    """Consul's ACLs kept the answer from this token: a 403, or entries filtered out.

    Never reported as "no instances": an empty answer that Consul marks as filtered by
    ACLs is a permission problem. The message names the permission and the call.
    """


class UnknownServiceError(DiscoveryError):
    """The service name is not registered in Consul at all."""

    def __init__(self, service: str, known: Sequence[str]) -> None:
        self.service = service
        self.known = tuple(sorted(known))
        listing = ", ".join(self.known) if self.known else "(none)"
        super().__init__(f"unknown service {service!r}; Consul knows: {listing}")


class NoHealthyInstanceError(DiscoveryError):
    """The service is known but has no instance that can take a call right now."""

    def __init__(self, service: str, detail: str = "") -> None:
        self.service = service
        message = f"no healthy instance of {service!r}"
        super().__init__(f"{message}: {detail}" if detail else message)


class AllAttemptsFailedError(DiscoveryError):
    """Every attempt of a call failed; ``attempts`` lists (instance id, cause) per attempt.

    The last attempt's cause is also chained as ``__cause__``.
    """

    def __init__(self, service: str, attempts: Sequence[tuple[str, BaseException]]) -> None:
        self.service = service
        self.attempts = tuple(attempts)
        causes = "; ".join(f"{inst}: {type(err).__name__}: {err}" for inst, err in self.attempts)
        super().__init__(f"all {len(self.attempts)} attempts to {service!r} failed: {causes}")
