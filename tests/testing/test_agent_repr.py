"""A ConsulAgent's repr (what pytest shows of a fixture or a local) never carries its
extra arguments: an ACL agent's initial management token and a gossip key are there."""

from __future__ import annotations

import shutil

from consul_discovery.testing.agent import ConsulAgent

SECRET = "8f1d2c3b-agent-repr-secret-0000"


def test_the_repr_leaves_out_the_extra_arguments_that_hold_secrets() -> None:
    hcl = f'acl {{ enabled = true\n tokens {{ initial_management = "{SECRET}" }} }}'
    agent = ConsulAgent(name="acl", extra_args=["-hcl", hcl, f"-encrypt={SECRET}"])
    try:
        shown = repr(agent)
        assert SECRET not in shown and SECRET not in str(agent)
        assert "ConsulAgent(name='acl'" in shown and str(agent.ports.http) in shown
        assert SECRET in " ".join(agent.command())  # still passed to the agent
    finally:
        shutil.rmtree(agent.workdir, ignore_errors=True)
