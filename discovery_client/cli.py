"""``python -m consul_discovery.client``: services, instances and calls as the client sees them.

    python -m consul_discovery.client [--consul ADDR] [--json] services
    python -m consul_discovery.client instances NAME        # every registered instance + health
    python -m consul_discovery.client resolve NAME          # the set the client balances over
    python -m consul_discovery.client call NAME METHOD PATH [-d DATA] [-H 'K: V']...
    python -m consul_discovery.client chain NAME            # the compiled discovery chain
    python -m consul_discovery.client route NAME METHOD PATH [-H 'K: V']...  # where it goes

Tables by default, JSON with ``--json`` (``call`` adds what the client saw: its typed
stats of the service, ``TargetStats.as_dict()``). ``--filter``/``--tag``/``--dc`` select
instances as a ServiceConfig would. A DiscoveryError prints one line on stderr and exits 1; ``call``
exits 0 on a 2xx/3xx answer and 1 otherwise (after printing it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from consul_discovery.client.chain.cli import add_commands as add_chain_commands
from consul_discovery.client.chain.cli import chain_command, route_command
from consul_discovery.client.config import POLICIES, ServiceConfig
from consul_discovery.client.consul_source import ConsulSource
from consul_discovery.client.errors import DiscoveryError
from consul_discovery.client.instance import Instance, Resolution
from consul_discovery.client.table import format_table
from consul_discovery.connection.cli_arguments import (
    consul_addresses,
    positive_seconds,
    service_name_given,
)
from consul_discovery.connection.names import callable_name_problem


def instance_dict(instance: Instance) -> dict[str, Any]:
    """An Instance as plain JSON-able data."""
    return {
        "id": instance.id,
        "service": instance.service,
        "address": instance.address,
        "port": instance.port,
        "url": instance.base_url,
        "health": instance.health,
        "weights": {"passing": instance.weight_passing, "warning": instance.weight_warning},
        "tags": list(instance.tags),
        "meta": dict(instance.meta),
        "node": instance.node,
        "datacenter": instance.datacenter,
    }


def _instance_rows(instances: Sequence[Instance]) -> str:
    rows = [
        (
            i.id, f"{i.address}:{i.port}", i.health,
            f"{i.weight_passing}/{i.weight_warning}", i.node, i.datacenter,
            ",".join(i.tags) or "-",
        )
        for i in instances
    ]  # fmt: skip
    return format_table(("ID", "ADDRESS", "HEALTH", "WEIGHT", "NODE", "DC", "TAGS"), rows)


#: The usage line's name: the console script's, or (``python -m``) the module's.
PROG = "consul-discovery"
MODULE_PROG = "python -m consul_discovery.client"


def service_name(text: str) -> str:
    """``call``'s NAME: a service's name a URL can carry
    (``consul_discovery.connection.names``; argparse's error otherwise)."""
    problem = callable_name_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and shell completion)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Inspect Consul services and call them through the discovery client.",
    )
    parser.add_argument("--consul", metavar="ADDR", type=consul_addresses,
                        help="Consul HTTP address, or a list of servers "
                        "(default: $CONSUL_HTTP_ADDR, then 127.0.0.1:8500)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--timeout", type=positive_seconds, default=5.0,
                        help="Consul lookups time limit: 5, 500ms, 1m")  # fmt: skip
    parser.add_argument("--filter", help="Consul filter expression on instances")
    parser.add_argument("--tag", help="only instances with this tag")
    parser.add_argument("--dc", help="Consul datacenter to ask")
    parser.add_argument("--policy", choices=POLICIES, default="least_request",
                        help="balancing policy for `call`")  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("services", help="every service with passing/total instance counts")
    commands.add_parser("instances", help="every registered instance and its health").add_argument(
        "service", metavar="NAME", type=service_name_given
    )
    commands.add_parser("resolve", help="the healthy set the client balances over").add_argument(
        "service", metavar="NAME", type=service_name_given
    )
    call = commands.add_parser("call", help="send one HTTP request to a service by name")
    call.add_argument("service", metavar="NAME", type=service_name)
    call.add_argument("method", metavar="METHOD")
    call.add_argument("path", metavar="PATH")
    call.add_argument("-d", "--data", help="request body (JSON bodies get a JSON content type)")
    call.add_argument("-H", "--header", action="append", default=[], metavar="'K: V'",
                      help="request header, repeatable")  # fmt: skip
    add_chain_commands(commands)  # chain, route (consul_discovery.client.chain.cli)
    return parser


def _config(args: argparse.Namespace) -> ServiceConfig:
    return ServiceConfig(policy=args.policy, filter=args.filter, tag=args.tag, datacenter=args.dc)


def _services(args: argparse.Namespace, out: TextIO) -> int:
    with ConsulSource(args.consul, service_config=lambda _n: _config(args)) as source:
        summaries = source.list_services()
    if args.json:
        data = [
            {"name": s.name, "passing": s.passing, "warning": s.warning,
             "critical": s.critical, "total": s.total}
            for s in summaries
        ]  # fmt: skip
        print(json.dumps(data, indent=2), file=out)
    else:
        rows = [(s.name, s.passing, s.warning, s.critical, s.total) for s in summaries]
        print(format_table(("SERVICE", "PASSING", "WARNING", "CRITICAL", "TOTAL"), rows), file=out)
    return 0


def _instances(args: argparse.Namespace, out: TextIO) -> int:
    with ConsulSource(args.consul, service_config=lambda _n: _config(args)) as source:
        instances = source.list_instances(args.service)
    if args.json:
        print(json.dumps([instance_dict(i) for i in instances], indent=2), file=out)
    else:
        print(_instance_rows(instances), file=out)
    return 0


def _resolution_dict(resolution: Resolution, now: float) -> dict[str, Any]:
    return {
        "service": resolution.service,
        "index": resolution.index,
        "stale": resolution.stale,
        "error": resolution.error,
        "panic": resolution.panic,
        "from_snapshot": resolution.from_snapshot,
        "age_seconds": round(resolution.age(now), 3),
        "instances": [instance_dict(i) for i in resolution.instances],
    }


def _resolve(args: argparse.Namespace, out: TextIO) -> int:
    with ConsulSource(args.consul, service_config=lambda _n: _config(args)) as source:
        resolution = source.resolve(args.service, timeout=args.timeout)
    if args.json:
        print(json.dumps(_resolution_dict(resolution, time.monotonic()), indent=2), file=out)
        return 0
    flags = [f for f, on in (("stale", resolution.stale), ("panic", resolution.panic)) if on]
    if resolution.from_snapshot:  # Consul unreachable: DISCOVERY_SNAPSHOT_DIR's last set
        flags.append(f"from snapshot, age {resolution.age(time.monotonic()):.0f}s")
    print(
        f"{resolution.service}: {len(resolution.instances)} instance(s) at index "
        f"{resolution.index}" + (f" [{', '.join(flags)}]" if flags else ""),
        file=out,
    )
    if resolution.instances:
        print(_instance_rows(resolution.instances), file=out)
    return 0


def _parse_headers(raw: Sequence[str]) -> dict[str, str]:
    headers = {}
    for item in raw:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"bad header {item!r}: want 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


def _call(args: argparse.Namespace, out: TextIO) -> int:
    from consul_discovery.client.client import ServiceClient

    headers = _parse_headers(args.header)
    kwargs: dict[str, Any] = {"headers": headers}
    if args.data is not None:
        kwargs["data"] = args.data.encode()
        if not any(k.lower() == "content-type" for k in headers):
            try:
                json.loads(args.data)
                headers["Content-Type"] = "application/json"
            except ValueError:
                pass
    with ServiceClient(args.consul, default_config=_config(args),
                       resolve_timeout=args.timeout) as client:  # fmt: skip
        response = client.request(args.service, args.method, args.path, **kwargs)
        stats = client.stats()
    if args.json:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        # ``client``: what the client saw making the call (instances, attempts, retries).
        data = {"status": response.status_code, "url": response.url,
                "headers": dict(response.headers), "body": body,
                "client": stats.target(args.service).as_dict()}  # fmt: skip
        print(json.dumps(data, indent=2), file=out)
    else:
        print(f"HTTP {response.status_code} {response.reason} from {response.url}", file=out)
        print(response.text.rstrip("\n"), file=out)
    return 0 if response.ok else 1


def _route(args: argparse.Namespace, out: TextIO) -> int:
    return route_command(args, out, _parse_headers(args.header))


COMMANDS = {"services": _services, "instances": _instances, "resolve": _resolve, "call": _call,
            "chain": chain_command, "route": _route}  # fmt: skip


def main(argv: Sequence[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None, *, prog: str = PROG) -> int:  # fmt: skip
    """Run the CLI; return the exit status (errors are one line on ``err``). ``prog`` is
    the name usage shows (the console script's; ``__main__`` passes MODULE_PROG)."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser(prog).parse_args(argv)
    try:
        return COMMANDS[args.command](args, out)
    except (DiscoveryError, ValueError) as exc:
        print(f"error: {exc}", file=err)
        return 1
