"""What a chain's route changes in a request and its answer: prefix rewrite, header modifiers.

``ChainChanges.of(decision)`` is made once per route and split leg (never per call), and
only when the route changes something: a route that rewrites nothing and modifies no
header has no changes object, so its calls are sent exactly as given. The shells apply
it to each attempt (``path`` and ``request_headers``) and to the answer they hand back
(``response_headers``), the way Envoy applies a route's ``prefix_rewrite`` and its
header mutations (the split leg's, then the route's).
"""

from __future__ import annotations

from collections.abc import MutableMapping

from consul_discovery.client.chain.decide import Decision
from consul_discovery.client.chain.model import HeaderModifiers


class ChainChanges:
    """A route's request and response changes (implements ``route.RequestChanges``)."""

    __slots__ = ("_request", "_response", "match_prefix", "prefix_rewrite")

    def __init__(
        self,
        match_prefix: str,
        prefix_rewrite: str | None,
        request: tuple[HeaderModifiers, ...],
        response: tuple[HeaderModifiers, ...],
    ) -> None:
        self.match_prefix = match_prefix
        self.prefix_rewrite = prefix_rewrite
        self._request = request
        self._response = response

    @classmethod
    def of(cls, decision: Decision) -> ChainChanges | None:
        """The changes ``decision`` makes, or None when it makes none."""
        rewrite = decision.prefix_rewrite
        if rewrite is None and not decision.request_headers and not decision.response_headers:
            return None
        return cls(
            decision.match_prefix, rewrite, decision.request_headers, decision.response_headers
        )

    def path(self, raw_path: str) -> str:
        """``raw_path`` (path and query) with the matched prefix replaced, if the route
        rewrites and the path starts with it."""
        rewrite, prefix = self.prefix_rewrite, self.match_prefix
        if rewrite is None or not raw_path.startswith(prefix):
            return raw_path
        return rewrite + raw_path[len(prefix) :]  # as Envoy: "/api" -> "/" makes "//x"

    def request_headers(self, headers: MutableMapping[str, str]) -> None:
        """Apply the split leg's, then the route's request header changes."""
        for modifiers in self._request:
            modifiers.apply(headers)

    def response_headers(self, headers: MutableMapping[str, str]) -> None:
        """Apply the split leg's, then the route's response header changes."""
        for modifiers in self._response:
            modifiers.apply(headers)

    def __repr__(self) -> str:
        rewrite = f"{self.match_prefix!r}->{self.prefix_rewrite!r}" if self.prefix_rewrite else ""
        return f"ChainChanges({rewrite}, headers={len(self._request)}/{len(self._response)})"
