"""A Consul agent with ACLs on, for tests: the one way the tests start one.

- ``running_acl_agent(...)``: a started dev agent with ACLs enabled, default deny, and
  ``MANAGEMENT_TOKEN`` as its initial management token; stopped and removed after.
  The harness's leader wait reads the catalog, which default deny hides from the
  anonymous token, so readiness is read with the management token instead: the agent's
  own node in the catalog (a leader, and registrations visible).
- ``create_token(agent, ...)``: a token with service identities and/or a policy of rules.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import requests

from tests.harness.agent import ConsulAgent

#: The initial management token of every agent ``running_acl_agent`` starts (a throwaway
#: agent's, never a real secret).
MANAGEMENT_TOKEN = "acl-test-management-token"
#: The headers of a call made with ``MANAGEMENT_TOKEN``.
MANAGEMENT_HEADERS = {"X-Consul-Token": MANAGEMENT_TOKEN}

ACL_HCL = (
    'acl { enabled = true\n default_policy = "deny"\n'
    f' tokens {{ initial_management = "{MANAGEMENT_TOKEN}" }} }}'
)


@contextmanager
def running_acl_agent(
    *, name: str = "dev", hcl: Sequence[str] = (), timeout: float = 30.0
) -> Iterator[ConsulAgent]:
    """A started dev agent with ACLs on (see the module docstring); ``hcl``: more
    configuration; ready within ``timeout`` seconds or TimeoutError with its log."""
    extra = [arg for h in (ACL_HCL, *hcl) for arg in ("-hcl", h)]
    agent = ConsulAgent(name=name, extra_args=extra)
    try:
        agent.start(wait_for_leader=False)
        deadline = time.monotonic() + timeout
        while not _ready(agent):
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"ACL agent not ready within {timeout}s; log:\n{agent.tail_log()}"
                )
            time.sleep(0.05)
        yield agent
    finally:
        agent.cleanup()


def _ready(agent: ConsulAgent) -> bool:
    if agent.process is not None and agent.process.poll() is not None:
        raise RuntimeError(f"consul agent exited; log:\n{agent.tail_log()}")
    try:
        nodes = requests.get(f"{agent.url}/v1/catalog/nodes", headers=MANAGEMENT_HEADERS, timeout=1)
        return nodes.ok and any(n.get("Node") == agent.name for n in nodes.json())
    except (requests.RequestException, ValueError):
        return False


def create_token(agent: ConsulAgent, *, services: Sequence[str] = (), rules: str = "") -> str:
    """The secret of a new token with service identities for ``services`` and/or a policy
    of ``rules`` (neither: a token with no permissions)."""
    body: dict[str, Any] = {"ServiceIdentities": [{"ServiceName": s} for s in services]}
    if rules:
        policy = requests.put(
            f"{agent.url}/v1/acl/policy",
            headers=MANAGEMENT_HEADERS,
            json={"Name": f"p{time.monotonic_ns()}", "Rules": rules},
            timeout=5,
        )
        policy.raise_for_status()
        body["Policies"] = [{"ID": policy.json()["ID"]}]
    token = requests.put(
        f"{agent.url}/v1/acl/token", headers=MANAGEMENT_HEADERS, json=body, timeout=5
    )
    token.raise_for_status()
    return str(token.json()["SecretID"])
