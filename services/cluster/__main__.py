"""`python -m services.cluster up|status|logs|down|demo|rolling-restart SVC|ui-token|gateway-url`,
`... intentions list [DST] | allow|deny|delete SRC DST` (the mesh's intentions).

PROFILE=secure or PROFILE=multi-dc (environment) selects that profile; see
services.cluster.plan.
"""

from __future__ import annotations

import argparse
import os
import sys

from services.cluster import control, orphans, secure
from services.cluster.plan import ClusterConfigError, ClusterPlan


def _print_summary(plan: ClusterPlan, rows: list[control.InstanceStatus]) -> None:
    print(control.format_table(rows))
    print()
    print(f"Gateway:   {plan.gateway_url}")
    print(f"Consul UI: {plan.consul_ui_url}")
    print(f"Prometheus: {plan.prometheus_url}   (targets found through Consul)")
    if plan.mesh:
        intentions = control.make_command(plan, "intentions")
        print(f"Mesh:      on, mTLS between services   ({intentions}: who may call whom)")
    if plan.secure:
        print(f"CA:        {plan.ca_file}   (add it to your browser, or accept the warning)")
        print("UI token:  make ui-token PROFILE=secure   (paste it into the UI's Log in)")
    print(f"Logs:      {plan.log_dir}   ({control.make_command(plan, 'logs')})")


def _logs(plan: ClusterPlan, lines: int) -> None:
    if not plan.log_dir.is_dir():
        print(f"no logs yet in {plan.log_dir}")
        return
    for path in sorted(plan.log_dir.glob("*.log")):
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        print(f"==> {path.name} <==")
        print("\n".join(tail))
        print()


def _demo(plan: ClusterPlan) -> int:
    """Run services.demo against this cluster; its KV step gets Consul's variables (secure:
    a server, the CA and the config admin token, which may write only under config/).
    With MESH=1, a direct call without a certificate is shown refused. The dev profile
    then runs the canary (``services.cluster.canary``)."""
    from services import demo
    from services.client import ClientError

    if plan.secure:
        os.environ.update(secure.reader_env(plan, secure.CONFIG_ADMIN))
    else:
        os.environ["CONSUL_HTTP_ADDR"] = plan.consul_address
    code = demo.main(["--gateway", plan.gateway_url])
    if not code and plan.mesh:
        target = plan.instances_of("order-service")[0]
        try:
            demo.mesh_refusal_demo(target.service, target.host, target.port)
        except ClientError as exc:
            print(f"demo FAILED: {exc}", file=sys.stderr)
            return 1
    if code or plan.profile != "dev":
        return code
    if not plan.order_canaries:
        print("(no order-service canary in this cluster: make run-cluster CANARIES=1 adds one)")
        return 0
    from consul_discovery.connection import ConsulConnection
    from services.cluster import canary

    conn = ConsulConnection.from_env({}, address=plan.consul_address)
    return canary.main(conn, plan.gateway_url, mesh=plan.mesh)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m services.cluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start Consul and every instance; wait until all pass")
    sub.add_parser("status", help="supervisor and Consul health of every instance")
    logs = sub.add_parser("logs", help="the last lines of every log")
    logs.add_argument("-n", "--lines", type=int, default=20)
    sub.add_parser("down", help="drain and stop every instance, then Consul")
    rolling = sub.add_parser("rolling-restart", help="restart one service's instances in turn")
    rolling.add_argument("service")
    sub.add_parser("ui-token", help="print the operator's read-only token (secure profile)")
    sub.add_parser("gateway-url", help="print the gateway's URL")
    intentions = sub.add_parser(
        "intentions", help="mesh intentions: list [DST] | allow|deny|delete SRC DST"
    )
    intentions.add_argument("words", nargs="*", default=["list"])
    sub.add_parser(
        "demo", help="the seed's flow through the gateway, a live KV setting, the canary"
    )
    args = parser.parse_args(argv)

    try:
        plan = ClusterPlan.from_env()
        if args.command != "up":
            plan = plan.with_saved_counts()
        if args.command == "up":
            _print_summary(plan, control.up(plan))
        elif args.command == "status":
            if control.supervisord_pid(plan) is None:
                start = control.make_command(plan, "run-cluster")
                print(f"the cluster is not running ({start} starts it)")
                if left := orphans.find(plan):
                    print(
                        f"but its supervisord left {len(left)} process(es) running"
                        f" (PIDs {', '.join(map(str, left))}):"
                        f" `{control.make_command(plan, 'stop-cluster')}` stops them"
                    )
                return 3
            print(control.supervisorctl(plan, "status"))
            _print_summary(plan, control.table(plan))
        elif args.command == "logs":
            _logs(plan, args.lines)
        elif args.command == "down":
            if control.supervisord_pid(plan) is None:
                if orphans.stop(plan):
                    print("cluster stopped: what its supervisord left running is stopped")
                else:
                    print("the cluster is not running")
                return 0
            control.down(plan)
            print("cluster stopped: instances drained and deregistered, Consul stopped")
        elif args.command == "intentions":
            from consul_discovery.mesh.intentions_cli import main as intentions_main

            control.require_running(plan)
            if not plan.mesh:
                print(
                    "note: this cluster is not in the mesh: intentions decide nothing here"
                    f" (`{control.make_command(plan, 'stop-cluster')}`, then"
                    f" `{control.make_command(plan, 'run-cluster')} MESH=1`)",
                    file=sys.stderr,
                )
            conn = (
                secure.connection(plan, secure.MESH_ADMIN)
                if plan.secure
                else control.tooling_connection(plan)
            )
            try:
                return intentions_main(args.words or ["list"], conn)
            except SystemExit as exc:
                if exc.code == 2:  # argparse's usage, in the module's words: say make's
                    print(
                        f"through make: {control.make_command(plan, 'intentions')}"
                        ' [ARGS="list [DST]" | ARGS="allow|deny|delete SRC DST"]',
                        file=sys.stderr,
                    )
                raise
        elif args.command == "gateway-url":
            print(plan.gateway_url)
        elif args.command == "demo":
            control.require_running(plan)
            return _demo(plan)
        elif args.command == "ui-token":
            if not plan.secure:
                print(f"the {plan.profile} profile has no ACLs: no token needed", file=sys.stderr)
                return 1
            path = plan.token_file(secure.OPERATOR)
            if control.supervisord_pid(plan) is None or not path.is_file():
                print("the secure cluster is not running (make run-cluster PROFILE=secure)")
                return 3
            print(f"operator token (read-only) from {path}:", file=sys.stderr)
            print(path.read_text().strip())
        elif args.command == "rolling-restart":
            control.rolling_restart(plan, args.service)
            print(control.format_table(control.table(plan)))
    except control.AlreadyRunningError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (control.ClusterError, ClusterConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def run() -> int:
    """main() for the command line: a reader that goes away (`make logs | head`, a pager
    quit) ends the output quietly, not with a BrokenPipeError traceback."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush stays quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(run())
