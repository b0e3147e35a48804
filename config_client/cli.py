"""``python -m consul_discovery.config``: get, put, diff, push and watch configuration in Consul KV.

    python -m consul_discovery.config get --service order-service [--profile prod] [SETTING]
    python -m consul_discovery.config put --service order-service [--profile prod] SETTING VALUE
    python -m consul_discovery.config put --raw-key KEY VALUE [--cas INDEX]
    python -m consul_discovery.config diff DIR [--document]
    python -m consul_discovery.config push DIR [--document] [--prune] [--dry-run]
    python -m consul_discovery.config watch --service order-service [--count N] [--timeout S]

Consul is reached through ``ConsulConnection.from_env()`` (CONSUL_HTTP_ADDR,
CONSUL_HTTP_TOKEN / CONSUL_HTTP_TOKEN_FILE, TLS variables); ``--consul`` overrides the
address. The token is never printed.

``put`` writes one setting the way ``get`` names it: ``retry.budget`` of
``--service orders --profile prod`` is the key ``config/orders,prod/retry/budget``
(``--service application`` is the layer every service shares). A raw KV path, inside
``config/`` or not, needs ``--raw-key``; without it a path is refused.

``get`` of a service with no layer of its own prints what the shared layers give it,
with a note on stderr; when no layer gives it anything it says so and fails.

Exit status: 0 done (diff: no difference), 1 diff found differences or a write lost a
check-and-set (nothing of it was written), 2 a usage, file or Consul error, a setting or
a service's configuration not found.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from consul_discovery.config.client import ConfigClient, Update
from consul_discovery.config.errors import CasConflictError, ConfigError, ConfigValueError
from consul_discovery.config.files import Plan, layer_files, plan
from consul_discovery.config.kv import KVStore
from consul_discovery.config.layers import DEFAULT_ROOT, DOCUMENT_KEY, Layers, to_json_text
from consul_discovery.connection import ConsulConfigError, ConsulConnection
from consul_discovery.connection.cli_arguments import (
    consul_addresses,
    modify_index,
    positive_count,
    positive_seconds,
)

#: The usage line's name: the console script's, or (``python -m``) the module's.
PROG = "consul-config"
MODULE_PROG = "python -m consul_discovery.config"


def _parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--consul", type=consul_addresses, help="agent address (default: CONSUL_HTTP_ADDR)"
    )
    parser.add_argument("--root", default=DEFAULT_ROOT, help="KV root of every layer")
    sub = parser.add_subparsers(dest="command", required=True)

    def layered(p: argparse.ArgumentParser) -> None:
        p.add_argument("--service", required=True, help="service name (its layers)")
        p.add_argument("--profile", action="append", default=[], help="profile (repeatable)")

    get = sub.add_parser("get", help="the effective settings of a service, or one of them")
    layered(get)
    get.add_argument("setting", nargs="?", help="one setting, e.g. retry.budget")
    put = sub.add_parser("put", help="write one setting of a service (or, --raw-key, one key)")
    put.add_argument("--service", help="service name (its layer; 'application': shared)")
    put.add_argument("--profile", help="the service's profile layer to write into")
    put.add_argument("--raw-key", action="store_true", help="NAME is a raw KV path")
    put.add_argument("name", metavar="SETTING", help="e.g. retry.budget (--raw-key: a KV path)")
    put.add_argument("value")
    put.add_argument("--cas", type=modify_index, help="only if the key's ModifyIndex is still this")
    for name, text in (("diff", "compare files with KV"), ("push", "make KV match files")):
        p = sub.add_parser(name, help=text)
        p.add_argument("directory", type=Path, help="one <layer>.yaml/.json per layer")
        p.add_argument("--document", action="store_true", help="each file whole in <layer>/data")
    push = sub.choices["push"]
    push.add_argument("--prune", action="store_true", help="also delete keys not in the files")
    push.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    watch = sub.add_parser("watch", help="print each change of a service's settings")
    layered(watch)
    watch.add_argument("--count", type=positive_count, help="exit after this many updates")
    watch.add_argument("--timeout", type=positive_seconds, help="exit after: 30, 500ms, 2m")
    return parser


def main(
    argv: Sequence[str] | None = None,
    out: TextIO | None = None,
    *,
    before_write: Callable[[Plan], None] | None = None,
    prog: str = PROG,
) -> int:
    """Run one command; ``before_write`` (tests) runs between push's read and its write.
    ``prog`` is the name usage shows (the console script's; ``__main__`` passes MODULE_PROG)."""
    out = out or sys.stdout
    args = _parser(prog).parse_args(argv)
    try:
        connection = ConsulConnection.from_env(**({"address": args.consul} if args.consul else {}))
        store = KVStore(connection)
        try:
            return _run(args, store, out, before_write)
        finally:
            store.close()
    except CasConflictError as exc:
        print(f"conflict: {exc}; nothing of that transaction was written", file=sys.stderr)
        return 1
    except (ConfigError, ConsulConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(
    args: argparse.Namespace,
    store: KVStore,
    out: TextIO,
    before_write: Callable[[Plan], None] | None,
) -> int:
    if args.command == "get":
        return _get(args, store, out)
    if args.command == "put":
        key = _put_key(args)
        store.put(key, args.value, cas=args.cas)
        print(f"put {key}", file=out)
        return 0
    if args.command in ("diff", "push"):
        files = layer_files(args.directory, args.root)
        prune = getattr(args, "prune", True)
        the_plan = plan(store, files, document=args.document, prune=prune)
        kept = " kept: --prune deletes it" if args.command == "push" and not prune else ""
        for difference in the_plan.differences:
            print(difference.line() + (kept if difference.local is None else ""), file=out)
        if args.command == "diff":
            return 1 if the_plan.differences else 0
        if args.dry_run or not the_plan.writes:
            print(f"{len(the_plan.writes)} write(s) planned, none made", file=out)
            return 0
        if before_write is not None:
            before_write(the_plan)
        store.apply(the_plan.writes)
        print(f"pushed {len(the_plan.writes)} write(s) (check-and-set)", file=out)
        return 0
    return _watch(args, store, out)


def _get(args: argparse.Namespace, store: KVStore, out: TextIO) -> int:
    layers = Layers(args.service, tuple(args.profile), root=args.root)
    client = ConfigClient(layers, connection=store.connection, store=store)
    try:
        settings = client.start(fail_fast=True).settings
        present = client.present_layers()
    finally:
        client.close()
    own = layers.own_prefixes
    if not any(p in present for p in own):
        if not settings:
            print(
                f"error: no configuration for {args.service}: none of "
                f"{', '.join(layers.prefixes)} holds a key (is the name right?)",
                file=sys.stderr,
            )
            return 2
        print(
            f"note: {args.service} has no layer of its own ({', '.join(own)}); this is "
            "what the shared layer(s) give every service",
            file=sys.stderr,
        )
    if args.setting is None:
        print(to_json_text(settings), file=out)
        return 0
    if args.setting not in settings:
        print(f"error: {args.setting} is not set for {args.service}", file=sys.stderr)
        return 2
    print(settings[args.setting], file=out)
    return 0


def _put_key(args: argparse.Namespace) -> str:
    """The KV key ``put`` writes; a usage error (ConfigValueError) for what it refuses."""
    if args.raw_key:
        if args.service or args.profile:
            raise ConfigValueError("put", "--raw-key takes a KV path, not --service/--profile")
        key = str(args.name).lstrip("/")
        if not key:
            raise ConfigValueError("put", "--raw-key needs a KV path, not an empty one")
        return key
    if not args.service:
        raise ConfigValueError(
            "put",
            "name the service (--service NAME, and a setting such as retry.budget), or "
            "pass --raw-key to write a raw KV path",
        )
    setting = str(args.name)
    parts = setting.split(".")
    if "/" in setting or not all(parts):
        raise ConfigValueError(
            setting,
            f"is not a setting name (dotted, like retry.budget); to write the raw KV path "
            f"outside the {args.root}/ layers, pass --raw-key",
        )
    if setting == DOCUMENT_KEY:
        raise ConfigValueError(
            setting, "is the layer's document key: use push --document, or --raw-key"
        )
    profiles = () if args.profile is None else (args.profile,)  # '' is refused, not none
    prefix = Layers(args.service, profiles, root=args.root).prefixes[-1]
    return prefix + "/".join(parts)


def _watch(args: argparse.Namespace, store: KVStore, out: TextIO) -> int:
    layers = Layers(args.service, tuple(args.profile), root=args.root)
    client = ConfigClient(layers, connection=store.connection, store=store)
    done = threading.Event()
    seen = 0

    def show(update: Update) -> None:
        nonlocal seen
        seen += 1
        for change in update.changes:
            print(f"{change.key}: {change.old!r} -> {change.new!r}", file=out, flush=True)
        if args.count is not None and seen >= args.count:
            done.set()

    client.start(fail_fast=True)
    client.subscribe(show)  # after the first read: only changes from now on
    print(
        f"watching {', '.join(layers.prefixes)} (index {client.settings.index})",
        file=out,
        flush=True,
    )
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    try:
        while not done.wait(0.2):
            if deadline is not None and time.monotonic() >= deadline:
                break
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0
