"""The README's pytest plugin example runs, as a user would run it (opt-in with -p)."""

from __future__ import annotations

import pytest

from tests.docs.blocks import Block, steps
from tests.harness.binary import REPO_ROOT

#: The README block that is the plugin example: ``<!-- doc-test: pytest test_stock.py -->``.
EXAMPLE_FILE = "test_stock.py"


def plugin_example() -> str:
    """The python block the README marks as the test module ``test_stock.py``."""
    found = [
        step.code
        for step in steps(REPO_ROOT / "README.md")
        if isinstance(step, Block) and step.action == "pytest" and step.argument == EXAMPLE_FILE
    ]
    assert len(found) == 1, f"the README should have one plugin example, {EXAMPLE_FILE}: {found}"
    return found[0]


def test_the_readme_plugin_example_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_stock=plugin_example())
    result = pytester.runpytest_subprocess("-p", "consul_discovery.pytest_plugin")
    result.assert_outcomes(passed=1)
