"""Turn Consul ``/v1/health/service`` entries into our own Instance and Resolution values.

Pure functions, no I/O: the watcher asks Consul *without* ``?passing`` and splits the
entries here, so one blocking query gives the passing set, the warning set (derated by
weighted balancing) and the count of all registered instances (for panic mode).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from consul_discovery.client.instance import Health, Instance, Resolution

_SEVERITY: dict[str, int] = {"passing": 0, "warning": 1, "critical": 2}

Entry = Mapping[str, Any]


def entry_health(entry: Entry) -> Health:
    """The worst status among an entry's checks (node and service); no checks is passing.

    An unknown status (e.g. a future Consul one) counts as critical, like maintenance.
    """
    worst: Health = "passing"
    for check in entry.get("Checks") or ():
        status = str(check.get("Status", "critical"))
        severity = _SEVERITY.get(status, 2)
        if severity > _SEVERITY[worst]:
            worst = "critical" if severity == 2 else "warning"
    return worst


NODE_MAINTENANCE_CHECK = "_node_maintenance"
SERVICE_MAINTENANCE_PREFIX = "_service_maintenance:"


def in_maintenance(entry: Entry) -> bool:
    """True when the entry's service or node is in maintenance mode (a deliberate removal)."""
    for check in entry.get("Checks") or ():
        check_id = str(check.get("CheckID", ""))
        maintenance = check_id == NODE_MAINTENANCE_CHECK or check_id.startswith(
            SERVICE_MAINTENANCE_PREFIX
        )
        if maintenance and str(check.get("Status", "critical")) != "passing":
            return True
    return False


def instance_from_entry(entry: Entry, wan: bool = False) -> Instance:
    """One Instance from one health entry (Service.Address falls back to Node.Address;
    ``Service.Locality`` to ``Node.Locality``, which the agent's ``locality`` sets).

    ``wan``: the entry comes from another datacenter than the agent's (a ``dc=`` query,
    a prepared query that failed over): the instance is reached at the WAN address it
    advertises, ``Service.TaggedAddresses.wan`` (and its port), when it gives one. An
    agent with ``translate_wan_addrs`` already hands out ``wan_ipv4`` as the address,
    but Consul fills ``wan_ipv4`` with the LAN address when an instance gives only
    ``wan``, so ``wan`` is read here rather than trusting the translation.
    """
    service = entry.get("Service") or {}
    node = entry.get("Node") or {}
    weights = service.get("Weights") or {}
    locality = service.get("Locality") or node.get("Locality") or {}
    address = str(service.get("Address") or node.get("Address") or "")
    port = int(service.get("Port") or 0)
    if wan:
        advertised = (service.get("TaggedAddresses") or {}).get("wan") or {}
        if advertised.get("Address"):
            address = str(advertised["Address"])
            port = int(advertised.get("Port") or port)
    return Instance(
        id=str(service.get("ID") or service.get("Service", "")),
        service=str(service.get("Service", "")),
        address=address,
        port=port,
        tags=tuple(service.get("Tags") or ()),
        meta={str(k): str(v) for k, v in (service.get("Meta") or {}).items()},
        weight_passing=int(weights.get("Passing", 1)),
        weight_warning=int(weights.get("Warning", 1)),
        health=entry_health(entry),
        node=str(node.get("Node", "")),
        datacenter=str(node.get("Datacenter", "")),
        maintenance=in_maintenance(entry),
        region=str(locality.get("Region") or ""),
        zone=str(locality.get("Zone") or ""),
        connect_native=bool((service.get("Connect") or {}).get("Native")),
    )


def instances_from_entries(entries: Iterable[Entry], wan: bool = False) -> tuple[Instance, ...]:
    """Every entry as an Instance, in a stable order (node, then id); ``wan`` as for
    ``instance_from_entry``."""
    return tuple(
        sorted((instance_from_entry(e, wan) for e in entries), key=lambda i: (i.node, i.id))
    )


class InstanceCache:
    """The previous answer's Instances by (node, service id), with what each was built
    from: the ModifyIndex of its node, its service and each of its checks.

    A check flip changes one entry of a hundred: ``instances`` rebuilds that one and
    hands back the very same Instance objects for the others (no parsing of their
    fields, and a Balancer keeps their load history by identity). One per watch, used
    by its driver only; no I/O.
    """

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], tuple[tuple[Any, ...], Instance]] = {}  # driver only

    def instances(self, entries: Iterable[Entry], wan: bool = False) -> tuple[Instance, ...]:
        """Every entry as an Instance (as ``instances_from_entries``), reusing unchanged ones."""
        known, fresh = self._known, {}
        out = []
        for entry in entries:
            service = entry.get("Service") or {}
            node = entry.get("Node") or {}
            key = (str(node.get("Node", "")), str(service.get("ID") or service.get("Service", "")))
            checks = tuple(
                (c.get("CheckID"), c.get("ModifyIndex")) for c in entry.get("Checks") or ()
            )
            signature = (node.get("ModifyIndex"), service.get("ModifyIndex"), checks, wan)
            hit = known.get(key)
            if hit is not None and hit[0] == signature and None not in signature[:2]:
                instance = hit[1]
            else:
                instance = instance_from_entry(entry, wan)
            fresh[key] = (signature, instance)
            out.append(instance)
        self._known = fresh
        return tuple(sorted(out, key=lambda i: (i.node, i.id)))


def build_resolution(
    service: str,
    registered: Sequence[Instance],
    index: int,
    fetched_at: float,
    panic_threshold: float | None = None,
    only_passing: bool = False,
) -> Resolution:
    """The Resolution to balance over, given every registered instance and its health.

    Normally the passing and warning instances (critical ones are left out; an empty set
    is real and stays empty); only the passing ones with ``only_passing`` (a chain
    subset's ``OnlyPassing``). With ``panic_threshold`` set, when fewer than that fraction
    of the registered instances is healthy, all registered instances are returned and
    ``panic`` is true (Envoy's panic routing: better to spread load over possibly-bad
    instances than to crush the few good ones). Instances in maintenance mode were taken
    out on purpose (a drain): they are never brought back, and do not count as registered.
    """
    if only_passing:
        healthy = tuple(i for i in registered if i.health == "passing")
    else:
        healthy = tuple(i for i in registered if i.health != "critical")
    candidates = tuple(i for i in registered if not i.maintenance)
    total = len(candidates)
    if panic_threshold is not None and total and len(healthy) / total < panic_threshold:
        return Resolution(service, candidates, index, fetched_at, panic=True)
    return Resolution(service, healthy, index, fetched_at)


def same_membership(a: Resolution | None, b: Resolution) -> bool:
    """True when two Resolutions would balance the same way (instances, health, panic)."""
    return a is not None and a.instances == b.instances and a.panic == b.panic and a.held == b.held
