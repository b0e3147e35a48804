"""Target: the frozen key of per-target state and of the sources' watches."""

from __future__ import annotations

import dataclasses

import pytest

from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.target import Target


def test_of_takes_what_selects_instances_from_the_config():
    config = ServiceConfig(policy="round_robin", filter='"v2" in Service.Tags', tag="blue",
                           datacenter="dc2", panic_threshold=0.5)  # fmt: skip
    assert Target.of("user-service", config) == Target(
        "user-service", datacenter="dc2", filter='"v2" in Service.Tags', tag="blue"
    )
    # The balancing policy does not select instances: same Target.
    assert Target.of("a", ServiceConfig(policy="random")) == Target.of("a", ServiceConfig())


def test_targets_are_frozen_hashable_keys():
    a, b = Target("svc"), Target("svc", datacenter="dc2")
    assert len({a, Target("svc"), b}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.service = "other"  # type: ignore[misc]


def test_str_names_the_service_and_its_selectors():
    assert str(Target("svc")) == "svc"
    target = Target("svc", datacenter="dc2", tag="v2", connect=True)
    assert str(target) == "svc[dc=dc2, tag=v2, connect]"


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"service": ""}, "service"), ({"service": "s", "tag": ""}, "tag"),
     ({"service": "s", "datacenter": 3}, "datacenter")],
)  # fmt: skip
def test_bad_fields_are_named(kwargs, named):
    with pytest.raises(ValueError, match=f"Target.{named}"):
        Target(**kwargs)
