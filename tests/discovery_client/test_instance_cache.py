"""A watch rebuilds only the Instances whose entry changed (InstanceCache)."""

from __future__ import annotations

import copy

from consul_discovery.client.health_entries import InstanceCache, instances_from_entries


def entry(sid: str, status: str = "passing", index: int = 5) -> dict:
    return {
        "Node": {"Node": "n1", "Address": "10.0.0.1", "Datacenter": "dc1", "ModifyIndex": 3},
        "Service": {"ID": sid, "Service": "web", "Port": 80, "ModifyIndex": 4},
        "Checks": [{"CheckID": f"service:{sid}", "Status": status, "ModifyIndex": index}],
    }


def test_unchanged_entries_keep_their_instance_and_a_flip_rebuilds_one():
    cache = InstanceCache()
    first = cache.instances([entry("a"), entry("b"), entry("c")])
    assert first == instances_from_entries([entry("a"), entry("b"), entry("c")])
    second = cache.instances([entry("a"), entry("b", "critical", index=9), entry("c")])
    assert second[0] is first[0] and second[2] is first[2]
    assert second[1] is not first[1] and second[1].health == "critical"
    third = cache.instances([entry("c"), entry("d")])  # gone ones are forgotten
    assert third[0] is first[2] and [i.id for i in third] == ["c", "d"]


def test_an_entry_without_modify_indexes_is_always_rebuilt():
    bare = entry("a")
    del bare["Service"]["ModifyIndex"]
    cache = InstanceCache()
    first = cache.instances([bare])
    assert cache.instances([copy.deepcopy(bare)])[0] is not first[0]


def test_a_changed_service_or_node_is_rebuilt():
    cache = InstanceCache()
    first = cache.instances([entry("a")])
    moved = entry("a")
    moved["Service"].update(Port=81, ModifyIndex=12)
    assert cache.instances([moved])[0].port == 81
    renamed = copy.deepcopy(moved)
    renamed["Node"].update(Address="10.0.0.2", ModifyIndex=13)
    assert cache.instances([renamed])[0].address == "10.0.0.2"
    assert first[0].port == 80


def test_another_datacenters_entry_is_reached_at_its_wan_address():
    """``wan``: Service.TaggedAddresses.wan (address and port) wins; without one, the
    address is the entry's own; the cache keeps the two readings apart."""
    remote = entry("a")
    remote["Service"]["TaggedAddresses"] = {
        "lan": {"Address": "10.0.0.1", "Port": 80},
        "wan": {"Address": "198.51.100.7", "Port": 8443},
    }
    (wan,) = instances_from_entries([remote], wan=True)
    assert (wan.address, wan.port) == ("198.51.100.7", 8443)
    (lan,) = instances_from_entries([remote])
    assert (lan.address, lan.port) == ("10.0.0.1", 80)
    (plain,) = instances_from_entries([entry("b")], wan=True)
    assert (plain.address, plain.port) == ("10.0.0.1", 80)
    cache = InstanceCache()
    assert cache.instances([remote])[0].address == "10.0.0.1"
    assert cache.instances([remote], wan=True)[0].address == "198.51.100.7"
