"""The README's pytest plugin example runs, as a user would run it (opt-in with -p)."""

from __future__ import annotations

import re

import pytest

from tests.harness.binary import REPO_ROOT

MARKER = "<!-- plugin-example:"


def plugin_example() -> str:
    """The python block that follows the README's plugin-example marker."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    after = readme.split(MARKER, 1)[1]
    match = re.search(r"```python\n(.*?)```", after, re.DOTALL)
    assert match, "the README lost its plugin example"
    return match.group(1)


def test_the_readme_plugin_example_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_stock=plugin_example())
    result = pytester.runpytest_subprocess("-p", "consul_discovery.pytest_plugin")
    result.assert_outcomes(passed=1)
