"""The CLI's chain commands: a service's compiled chain, and where one request would go.

    python -m consul_discovery.client chain NAME
    python -m consul_discovery.client route NAME METHOD PATH [-H 'K: V']...

``chain`` reads ``/v1/discovery-chain/NAME`` once (``--dc``: compiled for that
datacenter) and prints one row per route x split leg, in the order a request is matched:
the match, the split weight, the targets in failover order, the rewrite, timeouts and
retries; then anything that keeps the chain from being honoured. ``route`` decides one
request as the client would (a split leg drawn at random by its weight) and prints the
Decision. ``--json`` prints the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any, TextIO

from requests.structures import CaseInsensitiveDict

from consul_discovery.client.chain.decide import ChainRouter, Decision
from consul_discovery.client.chain.model import Chain, HttpMatch, RouterNode, SplitterNode
from consul_discovery.client.chain.query import ChainAnswer, ChainWatch, DiscoveryChainQuery
from consul_discovery.client.errors import UnknownServiceError
from consul_discovery.client.health_query import QueryOptions, services_exchange
from consul_discovery.client.route import RequestView
from consul_discovery.client.table import format_table
from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.cli_arguments import service_name_given
from consul_discovery.connection.exchange import Request, TransportError, run
from consul_discovery.connection.sending import SessionSender


def add_commands(commands: Any) -> None:
    """Add ``chain`` and ``route`` to the CLI's subcommands."""
    commands.add_parser("chain", help="a service's compiled discovery chain").add_argument(
        "service", metavar="NAME", type=service_name_given
    )
    route = commands.add_parser("route", help="where one request would go by the chain")
    route.add_argument("service", metavar="NAME", type=service_name_given)
    route.add_argument("method", metavar="METHOD")
    route.add_argument("path", metavar="PATH", type=RequestView.absolute)  # as a call sends it
    route.add_argument("-H", "--header", action="append", default=[], metavar="'K: V'",
                       help="request header, repeatable")  # fmt: skip


def read_chain(args: argparse.Namespace) -> ChainAnswer:
    """The service's chain, read once (raises the client's error for a refusal, for no
    answer, and, ``UnknownServiceError``, for a name Consul knows nothing of: Consul
    compiles its default chain for any name, so a default chain of a service the catalog
    does not hold is checked against the catalog, as ``resolve`` does)."""
    connection = ConsulConnection.resolve(None, address=args.consul)
    query = DiscoveryChainQuery(args.service, random=random.random, datacenter=args.dc)
    watch = ChainWatch(query, connection.address, args.timeout)
    sender = SessionSender(connection)
    try:
        try:
            answer = watch.interpret(sender(Request(query.path, query.params, args.timeout)))
            if answer.chain is None or answer.chain.default:
                options = QueryOptions(request_timeout=args.timeout)
                names = run(services_exchange(args.dc, options, connection.address), sender)
                if args.service not in names:
                    raise UnknownServiceError(args.service, names)
        except TransportError as exc:
            raise watch.failure(exc) from exc
    finally:
        sender.close()
    return answer


def match_text(match: HttpMatch | None) -> str:
    """A route's match in a few words ("*" for every request)."""
    if match is None or match.catch_all:
        return "*"
    parts = []
    if match.methods:
        parts.append("|".join(match.methods))
    for kind, value in (("=", match.path_exact), ("", match.path_prefix), ("~", match.path_regex)):
        if value:
            parts.append(f"{kind}{value}*" if kind == "" else f"{kind}{value}")
    for header in match.headers:
        rule = header.exact or header.prefix or header.suffix or header.regex
        text = f"{header.name}" + (f"={rule}" if rule else " present")
        parts.append(("!" if header.invert else "") + text)
    for param in match.query:
        parts.append(
            f"?{param.name}" + (f"={param.exact or param.regex}" if not param.present else "")
        )
    return " ".join(parts)


def decision_dict(decision: Decision, chain: Chain | None) -> dict[str, Any]:
    """One Decision as plain data (the CLI's row, and its JSON)."""
    match, weight = None, None
    if chain is not None:
        start = chain.nodes[chain.start_node]
        route = None
        if isinstance(start, RouterNode) and decision.route is not None:
            route = start.routes[decision.route]
            match = route.match
        node = chain.nodes[route.next_node] if route else start
        if isinstance(node, SplitterNode) and decision.split is not None:
            weight = node.splits[decision.split].weight
    retry = decision.retry
    return {
        "route": decision.route,
        "match": match_text(match),
        "split": decision.split,
        "weight": weight,
        "targets": [t.id for t in decision.targets],
        "rewrite": (
            f"{decision.match_prefix} -> {decision.prefix_rewrite}"
            if decision.prefix_rewrite is not None
            else None
        ),
        "request_timeout": decision.request_timeout,
        "connect_timeout": decision.target.connect_timeout or decision.connect_timeout,
        "attempts": retry.max_attempts if retry else None,
        "policy": decision.load_balancer.policy or None,
    }


def _rows(router: ChainRouter, chain: Chain | None) -> list[dict[str, Any]]:
    return [decision_dict(d, chain) for d in router.decisions()]


def chain_command(args: argparse.Namespace, out: TextIO) -> int:
    """Print the service's compiled chain."""
    answer = read_chain(args)
    router = answer.router
    rows = _rows(router, answer.chain) if not router.plain else []
    if args.json:
        data = {"service": args.service, "plain": router.plain, "routes": rows,
                "problems": list(router.problems)}  # fmt: skip
        print(json.dumps(data, indent=2), file=out)
        return 0
    if router.problems:
        print(f"{args.service}: a chain the client cannot honour (called as a plain service)",
              file=out)  # fmt: skip
    elif router.plain:
        print(f"{args.service}: Consul's default chain (called as a plain service)", file=out)
    else:
        header = ("ROUTE", "MATCH", "SPLIT", "TARGETS (failover order)", "REWRITE", "TIMEOUT")
        table = [
            (
                "-" if r["route"] is None else str(r["route"]),
                r["match"],
                "-" if r["weight"] is None else f"{r['weight']:g}%",
                " > ".join(r["targets"]),
                r["rewrite"] or "-",
                "-" if r["request_timeout"] is None else f"{r['request_timeout']:g}s",
            )
            for r in rows
        ]
        print(format_table(header, table), file=out)
    for problem in router.problems:
        print(f"not honoured: {problem}", file=out)
    return 0


def route_command(args: argparse.Namespace, out: TextIO, headers: dict[str, str]) -> int:
    """Print where one request would go."""
    answer = read_chain(args)
    request = RequestView.of(args.method, args.path, CaseInsensitiveDict(headers))
    decision = answer.router.decide(request)
    row = decision_dict(decision, answer.chain)
    row["path"] = decision.rewrite(request.path) + (f"?{request.query}" if request.query else "")
    row["hash_key"] = decision.hash_key(request)
    if args.json:
        print(json.dumps(row, indent=2), file=out)
        return 0
    for name in ("route", "match", "split", "weight", "targets", "path", "request_timeout",
                 "connect_timeout", "attempts", "policy", "hash_key"):  # fmt: skip
        value = row[name]
        if isinstance(value, list):
            value = " > ".join(value)
        print(f"{name:16} {'-' if value is None else value}", file=out)
    return 0
