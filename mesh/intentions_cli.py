"""``python -m consul_discovery.mesh intentions list|allow|deny|delete``: the operator's CLI.

Talks to Consul through ``ConsulConnection.from_env`` (``CONSUL_HTTP_ADDR``,
``CONSUL_HTTP_TOKEN``/``_FILE``, TLS settings): writing needs ``intention:write`` on the
destination (the operator token in the secure profile), listing ``intention:read``.

- ``list [DESTINATION]``: every intention (or a destination's), highest precedence first;
- ``allow SOURCE DESTINATION`` / ``deny SOURCE DESTINATION``: create or replace the L4
  intention of the pair (``PUT /v1/connect/intentions/exact``);
- ``delete SOURCE DESTINATION``: remove it (the default policy decides again); a pair
  with no intention is an error (a mistyped name deletes nothing, and says so).

A name Consul's catalog has no instance of is written all the same
(an intention may come before its service) with a warning on stderr: a typo shows. Under
ACLs Consul lists only the intentions the token may read, and an empty list says so.
A refusal prints Consul's reason (403: the permission the token lacks) and exits 1, as
does an unreachable Consul (its address named); the token never appears in the output.
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
        bad_wildcard = "*" in value and value != "*"
        if not value or "/" in value or bad_wildcard or any(c.isspace() for c in value):
            raise IntentionsCliError(f"{name} {value!r} is not a service name (or '*')")
    return {"source": source, "destination": destination}


_LIST_RULE = 'intention:read on the destinations (service_prefix "" { intentions = "read" })'


def list_view(
    conn: ConsulConnection, destination: str | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """The intentions the token may read (or ``destination``'s), and whether ACLs filter
    the list (Consul drops what the token may not read, without saying so)."""
    with conn.session() as session:
        response = session.get(f"{conn.base_url}/v1/connect/intentions", timeout=conn.read_timeout)
        answer = _check(response, "list the intentions", _LIST_RULE)
    rows = [dict(row) for row in answer or []]
    if destination is not None:
        rows = [row for row in rows if row.get("DestinationName") == destination]
    filtered = response.headers.get("X-Consul-Default-Acl-Policy", "").lower() == "deny"
    return rows, filtered


def list_intentions(conn: ConsulConnection, destination: str | None = None) -> list[dict[str, Any]]:
    """Every intention (or ``destination``'s) the token may read, as Consul returns them."""
    return list_view(conn, destination)[0]


def unknown_services(conn: ConsulConnection, *names: str) -> list[str]:
    """Those of ``names`` (but ``*``) Consul's catalog has no instance of. An answer ACLs
    filtered (instances the token may not see: they exist) or refused says nothing."""
    unknown = []
    with conn.session() as session:
        for name in dict.fromkeys(n for n in names if n != "*"):
            response = session.get(
                f"{conn.base_url}/v1/catalog/service/{name}", timeout=conn.read_timeout
            )
            filtered = response.headers.get("X-Consul-Results-Filtered-By-ACLs", "") == "true"
            if response.ok and not filtered and not response.json():
                unknown.append(name)
    return unknown


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
    """Remove the intention ``source -> destination``; IntentionsCliError when there is none
    (Consul's DELETE answers 200 for a pair it never had)."""
    pair = _pair(source, destination)
    with conn.session() as session:
        found = session.get(
            f"{conn.base_url}/v1/connect/intentions/exact", params=pair, timeout=conn.read_timeout
        )
        if found.status_code == 404:
            raise IntentionsCliError(f"no intention {source} -> {destination}: nothing deleted")
        _check(found, f"read {source} -> {destination}", _write_rule(destination))
        _check(
            session.delete(
                f"{conn.base_url}/v1/connect/intentions/exact",
                params=pair,
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
        prog="python -m consul_discovery.mesh intentions",
        description="List, allow, deny and delete Consul intentions (CONSUL_* settings).",
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
            rows, filtered = list_view(conn, args.destination)
            for row in rows:
                print(_describe(row))
            if not rows:
                print("(no intentions: the default policy decides)")
            if filtered:
                print(f"note: ACLs on: Consul lists only what the token may read ({_LIST_RULE})",
                      file=sys.stderr)  # fmt: skip
        elif args.command == "delete":
            delete_intention(conn, args.source, args.destination)
            print(f"deleted {args.source} -> {args.destination}")
        else:
            set_intention(conn, args.source, args.destination, args.command)
            print(f"{args.command} {args.source} -> {args.destination}")
            for name in unknown_services(conn, args.source, args.destination):
                print(f"warning: Consul knows no service {name!r}; "
                      "the intention applies once one registers", file=sys.stderr)  # fmt: skip
    except (IntentionsCliError, ConsulConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except requests.RequestException as exc:
        where = conn.address if conn is not None else "?"
        print(f"error: Consul at {where} unreachable: {type(exc).__name__}", file=sys.stderr)
        return 1
    return 0
