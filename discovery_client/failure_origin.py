"""Who failed: the instance that answered, or a service it depends on (the one convention).

After Finagle's failure flags and Envoy's ``x-envoy-overloaded``: an error answer says
whether the instance itself failed or it is relaying the failure of a dependency. The
convention between our services lives here and nowhere else:

* A service that answers an error **because a service it called failed** (no healthy
  instance, every attempt failed, a bad answer from it) adds the response header
  ``Failure-Origin: dependency``. services/common/upstream.py does this for every such
  answer, and the gateway keeps the header when it relays one.
* An error answer without the header is the answering instance's own failure.

What a caller's discovery client does with it (discovery_client/call.py):

* a relayed failure is **not** the instance's fault: it is not counted as a failure for
  passive ejection, and it is **not retried** on another instance (every instance shares
  the same dependency; a retry only multiplies the load on it and delays the answer);
* its ``Retry-After`` is advice for the end client, never a reason for a request thread
  to sleep.
"""

from __future__ import annotations

from collections.abc import Mapping

#: The response header that marks an error answer as relayed from a dependency.
FAILURE_ORIGIN_HEADER = "Failure-Origin"
#: Its value for a dependency's failure (the only value defined so far).
DEPENDENCY = "dependency"


def dependency_failure_headers() -> dict[str, str]:
    """The headers a service adds to an error answer caused by a dependency's failure."""
    return {FAILURE_ORIGIN_HEADER: DEPENDENCY}


def is_relayed_failure(status: int, headers: Mapping[str, str]) -> bool:
    """True if an error answer (``status`` >= 400) says a dependency failed, not the instance.

    ``headers`` must look names up case-insensitively (requests' and werkzeug's do).
    """
    if status < 400:
        return False
    value = headers.get(FAILURE_ORIGIN_HEADER)
    return value is not None and value.strip().lower() == DEPENDENCY
