"""``python -m consul_discovery.mesh intentions list|allow|deny|delete``: the operator's CLI.

Talks to Consul through ``ConsulConnection.from_env`` (``CONSUL_HTTP_ADDR``,
``CONSUL_HTTP_TOKEN``/``_FILE``, TLS settings): writing needs ``intention:write`` on the
destination (the operator token in the secure profile), listing ``intention:read``.

- ``list [DESTINATION]``: every intention (or a destination's), highest precedence first;
- ``allow SOURCE DESTINATION`` / ``deny SOURCE DESTINATION``: create or replace the L4
  intention of the pair (``PUT /v1/connect/intentions/exact``);
- ``delete SOURCE DESTINATION``: remove it (the default policy decides again).

A refusal prints Consul's reason (403: the permission the token lacks) and exits 1;
the token never appears in the output.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import requests

from consul_discovery.connection import ConsulConfigError, ConsulConnection, acl_denial


class IntentionsCliError(Exception):
    """Consul refused or could not be reached (the message says which and why)."""


def _check(response: requests.Response, what: str, needs: str = "") -> Any:
    if response.status_code == 403:  # read as every client reads a 403 (consul_connection)
        denial = acl_denial(response.text.strip(), what)
        hint = f"; the token needs {needs}" if needs and not denial.unknown_token else ""
        raise IntentionsCliError(f"Consul refused to {what} (403): {denial.reason}{hint}")
    if not response.ok:
        raise IntentionsCliError(
            f"Consul could not {what} (HTTP {response.status_code}): {response.text.strip()}"
        )
    return response.json() if response.content else None


def _pair(source: str, destination: str) -> dict[str, str]:
    for name, value in (("source", source), ("destination", destination)):
        if not value or "/" in value or value.strip() != value:
            raise IntentionsCliError(f"{name} {value!r} is not a service name (or '*')")
    return {"source": source, "destination": destination}


def list_intentions(conn: ConsulConnection, destination: str | None = None) -> list[dict[str, Any]]:
    """Every intention (or ``destination``'s), as Consul returns them."""
    with conn.session() as session:
        answer = _check(
            session.get(f"{conn.base_url}/v1/connect/intentions", timeout=conn.read_timeout),
            "list the intentions",
            'intention:read on the destinations (service_prefix "" { intentions = "read" })',
        )
    rows = [dict(row) for row in answer or []]
    if destination is not None:
        rows = [row for row in rows if row.get("DestinationName") == destination]
    return rows


def set_intention(conn: ConsulConnection, source: str, destination: str, action: str) -> None:
    """Create or replace the L4 intention ``source -> destination`` with ``action``."""
    if action not in ("allow", "deny"):
        raise IntentionsCliError(f"action must be allow or deny; got {action!r}")
    with conn.session() as session:
        _check(
            session.put(
                f"{conn.base_url}/v1/connect/intentions/exact",
                params=_pair(source, destination),
                json={"Action": action, "Description": "set by consul_discovery.mesh"},
                timeout=conn.read_timeout,
            ),
            f"{action} {source} -> {destination}",
            _write_rule(destination),
        )


def delete_intention(conn: ConsulConnection, source: str, destination: str) -> None:
    """Remove the intention ``source -> destination``."""
    with conn.session() as session:
        _check(
            session.delete(
                f"{conn.base_url}/v1/connect/intentions/exact",
                params=_pair(source, destination),
                timeout=conn.read_timeout,
            ),
            f"delete {source} -> {destination}",
            _write_rule(destination),
        )


def _write_rule(destination: str) -> str:
    return (
        f'intention:write on {destination!r} (a policy rule such as service "{destination}" '
        '{ intentions = "write" })'
    )


def _describe(row: dict[str, Any]) -> str:
    action = row.get("Action") or f"L7 ({len(row.get('Permissions') or [])} permission(s))"
    return (
        f"{row.get('SourceName', '?'):<20} -> {row.get('DestinationName', '?'):<20} "
        f"{action:<8} precedence {row.get('Precedence', 0)}"
    )


def main(argv: Sequence[str] | None = None, conn: ConsulConnection | None = None) -> int:
    """Run the CLI; 0 on success, 1 when Consul refused, 2 on bad usage."""
    parser = argparse.ArgumentParser(
        prog="python -m consul_discovery.mesh intentions", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="list intentions")
    listing.add_argument("destination", nargs="?")
    for verb in ("allow", "deny", "delete"):
        pair = sub.add_parser(verb, help=f"{verb} SOURCE -> DESTINATION")
        pair.add_argument("source")
        pair.add_argument("destination")
    args = parser.parse_args(argv)
    try:
        conn = conn or ConsulConnection.from_env()
        if args.command == "list":
            rows = list_intentions(conn, args.destination)
            for row in rows:
                print(_describe(row))
            if not rows:
                print("(no intentions: the default policy decides)")
        elif args.command == "delete":
            delete_intention(conn, args.source, args.destination)
            print(f"deleted {args.source} -> {args.destination}")
        else:
            set_intention(conn, args.source, args.destination, args.command)
            print(f"{args.command} {args.source} -> {args.destination}")
    except (IntentionsCliError, ConsulConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except requests.RequestException as exc:
        print(f"error: Consul unreachable: {type(exc).__name__}", file=sys.stderr)
        return 1
    return 0
