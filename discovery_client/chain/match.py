"""A route's HTTP match compiled into one predicate over the core's ``RequestView``.

Matching follows what Consul renders for Envoy (``agent/xds/routes.go``) and how Envoy
evaluates it:

- path (without the query string): ``PathExact`` equal, ``PathPrefix`` a plain string
  prefix (not segment-aware), ``PathRegex`` a full match; ``CaseInsensitive`` applies
  to the exact and prefix rules only (Envoy ignores it for regexes);
- each header rule, in Consul's precedence when several are set: exact, regex, prefix,
  suffix, present; a rule with none is skipped. A header that is absent matches only an
  inverted ``Present`` rule; otherwise the rule's result is flipped by ``Invert``;
- each query parameter rule: exact, regex (full match) or present, on the first value;
- ``Methods``: the request's method is one of them.

Regexes are Python's ``re`` (Envoy uses RE2: the common syntax is the same; a pattern
Python cannot compile makes the chain unsupported, see ``decide``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl

from consul_discovery.client.chain.model import HeaderMatch, HttpMatch, QueryMatch
from consul_discovery.client.route import RequestView


@functools.lru_cache(maxsize=256)
def query_params(query: str) -> Mapping[str, str]:
    """The first value of each query parameter (parsed once per distinct query string)."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(name, value)
    return params


Predicate = Callable[[RequestView], bool]


def _always(_: RequestView) -> bool:
    return True


def compile_match(match: HttpMatch) -> Predicate:
    """One predicate for ``match`` (raises ``re.error`` for a regex Python cannot compile)."""
    if match.catch_all:
        return _always
    checks: list[Predicate] = []
    path = _path_check(match)
    if path is not None:
        checks.append(path)
    if match.methods:
        methods = frozenset(match.methods)
        checks.append(lambda req: req.method in methods)
    checks.extend(c for h in match.headers if (c := _header_check(h)) is not None)
    checks.extend(c for q in match.query if (c := _query_check(q)) is not None)
    if len(checks) == 1:
        return checks[0]
    all_checks = tuple(checks)
    return lambda req: all(check(req) for check in all_checks)


def _path_check(match: HttpMatch) -> Predicate | None:
    fold = match.case_insensitive
    if match.path_exact:
        exact = match.path_exact.lower() if fold else match.path_exact
        if fold:
            return lambda req: req.path.lower() == exact
        return lambda req: req.path == exact
    if match.path_prefix and match.path_prefix != "/":
        prefix = match.path_prefix.lower() if fold else match.path_prefix
        if fold:
            return lambda req: req.path.lower().startswith(prefix)
        return lambda req: req.path.startswith(prefix)
    if match.path_regex:
        fullmatch = re.compile(match.path_regex).fullmatch
        return lambda req: fullmatch(req.path) is not None
    return None  # the prefix "/" takes every path


def _header_check(rule: HeaderMatch) -> Predicate | None:
    name, invert = rule.name, rule.invert
    test: Callable[[str], bool]
    if rule.exact:
        test = rule.exact.__eq__
    elif rule.regex:
        fullmatch = re.compile(rule.regex).fullmatch
        test = lambda value: fullmatch(value) is not None  # noqa: E731
    elif rule.prefix:
        prefix = rule.prefix
        test = lambda value: value.startswith(prefix)  # noqa: E731
    elif rule.suffix:
        suffix = rule.suffix
        test = lambda value: value.endswith(suffix)  # noqa: E731
    elif rule.present:
        test = lambda value: True  # noqa: E731
    else:
        return None  # Consul skips a header rule that sets nothing
    absent = invert and not (rule.exact or rule.regex or rule.prefix or rule.suffix)

    def check(req: RequestView) -> bool:
        value = req.headers.get(name)
        if value is None:
            return absent
        return test(value) != invert

    return check


def _query_check(rule: QueryMatch) -> Predicate | None:
    name = rule.name
    test: Callable[[str], bool]
    if rule.exact:
        test = rule.exact.__eq__
    elif rule.regex:
        fullmatch = re.compile(rule.regex).fullmatch
        test = lambda value: fullmatch(value) is not None  # noqa: E731
    elif rule.present:
        test = lambda value: True  # noqa: E731
    else:
        return None

    def check(req: RequestView) -> bool:
        if not req.query:
            return False
        value = query_params(req.query).get(name)
        return value is not None and test(value)

    return check
