"""One real dev agent per test module for the chain tests (config entries are per service)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.agent import ConsulAgent, running_agent


@pytest.fixture(scope="module")
def chain_agent() -> Iterator[ConsulAgent]:
    """A dev agent shared by one module's tests; each test uses its own service names."""
    with running_agent(name="chain") as agent:
        yield agent
