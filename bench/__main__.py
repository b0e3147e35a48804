"""Run the benchmarks: ``python -m bench [--quick] [--only NAME ...] [--out DIR]``.

Prints a table per benchmark and the targets, writes ``DIR/latest.json`` (quick:
``DIR/quick/latest.json``) and a PNG chart per benchmark. Exit status 1 if any
benchmark raised (its traceback is printed; the others still run). Every benchmark
stops what it started, by PID, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
import time
import traceback
from pathlib import Path

from bench import report
from bench.result import Result

BENCHMARKS = (
    "pick_cost",
    "client_overhead",
    "proxy_compare",
    "slow_instance",
    "propagation",
    "scale",
    "config_propagation",
    "secure_drills",
    "agent_restart",
    "weighted_picks",
    "many_instances",
    "dependency_outage",
    "async_client",
    "conn_budget",
    "scale_10k",
    "chain_cost",
    "mesh_cost",
    "locality",
    "dc_failover",
)
RESULTS = Path(__file__).with_name("results")


def run_one(name: str, quick: bool) -> Result:
    """Import ``bench.NAME`` and run it at QUICK or FULL size; stamp params and duration."""
    module = importlib.import_module(f"bench.{name}")
    params = module.QUICK if quick else module.FULL
    started = time.monotonic()
    result = module.run(params)
    return dataclasses.replace(
        result,
        params={**dataclasses.asdict(params), **result.params},
        seconds=time.monotonic() - started,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the chosen benchmarks, print and write the results."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke run)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run just these")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args(argv)
    # A watch outliving its agent at teardown logs a warning; not news in a benchmark.
    logging.getLogger("consul_discovery.client").setLevel(logging.ERROR)
    out = args.out / "quick" if args.quick else args.out
    env = report.environment()
    results, failed = [], []
    for name in args.only or BENCHMARKS:
        print(f"-- {name} ...", file=sys.stderr, flush=True)
        try:
            results.append(run_one(name, args.quick))
        except Exception:
            traceback.print_exc()
            failed.append(name)
    print(report.render(results))
    report.write_json(results, out / "latest.json", env, "quick" if args.quick else "full")
    charts = report.write_charts(results, out)
    print(f"\nwrote {out / 'latest.json'} and {len(charts)} charts in {out}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
