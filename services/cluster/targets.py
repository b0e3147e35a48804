"""Consul's catalog as a Prometheus file_sd target file, for a Prometheus without Consul SD.

Debian's ``prometheus`` package (bookworm, 2.42) is built with Consul service discovery
disabled, so the cluster runs this small bridge next to it: every ``interval`` it reads
every service's instances from Consul through the discovery client's ConsulSource and,
when anything changed, atomically rewrites a file_sd JSON file that Prometheus watches.
Each target carries the labels Prometheus' own Consul SD would set
(``__meta_consul_service``, ``__meta_consul_service_id``, ``__meta_consul_tags``,
``__meta_consul_service_metadata_<key>``, ``__meta_consul_health``, ...), so the same
relabelling rules apply to either (``services.cluster.prometheus``).

    python -m services.cluster.targets --consul 127.0.0.1:8500 --out targets.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from consul_discovery.client import ConsulSource, DiscoveryError
from consul_discovery.client.instance import Instance

log = logging.getLogger("services.cluster.targets")
_LABEL_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def target_groups(instances: Iterable[Instance]) -> list[dict[str, Any]]:
    """One file_sd target group per instance, labelled as Prometheus' Consul SD would."""
    groups = []
    for inst in sorted(instances, key=lambda i: (i.service, i.id)):
        host = f"[{inst.address}]" if ":" in inst.address else inst.address
        labels = {
            "__meta_consul_service": inst.service,
            "__meta_consul_service_id": inst.id,
            "__meta_consul_service_address": inst.address,
            "__meta_consul_service_port": str(inst.port),
            "__meta_consul_tags": "," + ",".join(inst.tags) + "," if inst.tags else ",",
            "__meta_consul_health": inst.health,
            "__meta_consul_node": inst.node,
            "__meta_consul_dc": inst.datacenter,
        }
        for key, value in inst.meta.items():
            labels[f"__meta_consul_service_metadata_{_LABEL_UNSAFE.sub('_', key)}"] = value
        groups.append({"targets": [f"{host}:{inst.port}"], "labels": labels})
    return groups


def catalog_instances(source: ConsulSource) -> list[Instance]:
    """Every registered instance of every service in the catalog (all health states)."""
    found: list[Instance] = []
    for summary in source.list_services():
        try:
            found.extend(source.list_instances(summary.name))
        except DiscoveryError:  # deregistered between the two reads
            continue
    return found


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename (Prometheus never reads half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


class TargetFile:
    """Keeps one file_sd file equal to Consul's catalog, polling every ``interval``."""

    def __init__(self, source: ConsulSource, path: Path, interval: float = 1.0) -> None:
        self.source = source
        self.path = path
        self.interval = interval
        self._written: str | None = None  # the sync thread only

    def sync(self) -> bool:
        """Read the catalog once; rewrite the file if it changed. True when it did."""
        text = json.dumps(target_groups(catalog_instances(self.source)), indent=1) + "\n"
        if text == self._written:
            return False
        write_atomically(self.path, text)
        self._written = text
        return True

    def run(self, stop: threading.Event) -> None:
        """Sync until ``stop`` is set; Consul errors keep the last file and are logged."""
        while True:
            try:
                self.sync()
            except DiscoveryError as exc:
                log.warning("targets: Consul unreachable, keeping the last targets: %s", exc)
            if stop.wait(self.interval):
                return


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: sync forever (supervisord stops it with SIGTERM)."""
    parser = argparse.ArgumentParser(prog="python -m services.cluster.targets")
    parser.add_argument("--consul", default=None, help="Consul HTTP address")
    parser.add_argument("--out", required=True, type=Path, help="file_sd JSON file to write")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between reads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with ConsulSource(args.consul) as source:
        TargetFile(source, args.out, args.interval).run(threading.Event())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
