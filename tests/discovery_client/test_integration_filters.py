"""Filtering by tag, by meta (Consul filter expressions) and by datacenter, on a real agent."""

from __future__ import annotations

import pytest

from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.consul_source import ConsulQueryError, ConsulSource
from tests.harness.agent import ConsulAgent


def register(agent: ConsulAgent, n: int, version: str, tags: list[str]) -> None:
    agent.client().agent.service.register(
        "catalog",
        service_id=f"catalog-{n}",
        address="127.0.0.1",
        port=9000 + n,
        tags=tags,
        meta={"version": version},
        check={"CheckID": f"catalog-{n}-ttl", "Name": "ttl", "TTL": "60s", "Status": "passing"},
    )


@pytest.fixture
def catalog(consul_agent: ConsulAgent) -> ConsulAgent:
    register(consul_agent, 1, "1.0", ["blue"])
    register(consul_agent, 2, "2.0", ["green", "canary"])
    register(consul_agent, 3, "2.0", ["green"])
    return consul_agent


def ids_for(agent: ConsulAgent, config: ServiceConfig) -> set[str]:
    with ConsulSource(agent.address, service_config=lambda _: config, wait=1.0) as source:
        return {inst.id for inst in source.resolve("catalog", timeout=5).instances}


def test_tag_selects_instances(catalog: ConsulAgent) -> None:
    assert ids_for(catalog, ServiceConfig(tag="green")) == {"catalog-2", "catalog-3"}


def test_meta_filter_expression_selects_instances(catalog: ConsulAgent) -> None:
    config = ServiceConfig(filter='Service.Meta.version == "2.0" and "canary" not in Service.Tags')
    assert ids_for(catalog, config) == {"catalog-3"}


def test_own_datacenter_by_name(catalog: ConsulAgent) -> None:
    assert ids_for(catalog, ServiceConfig(datacenter="dc1")) == {f"catalog-{n}" for n in (1, 2, 3)}


def test_bad_filter_expression_is_a_clear_error(catalog: ConsulAgent) -> None:
    with pytest.raises(ConsulQueryError, match="filter"):
        ids_for(catalog, ServiceConfig(filter="Service.Meta.version ==="))
