"""The doc test itself: a broken block fails naming its README and line, undeclared or
unfenced code is refused, skips need a reason. (Pure parsing needs no agent; running a
block uses the module's dev agent, as the README tests do.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from consul_discovery.testing import ConsulAgent
from tests.docs.blocks import Block, ReadmeError, steps
from tests.docs.session import DocSession


def readme(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "README.md"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def agent() -> Iterator[ConsulAgent]:
    """One dev agent for the module (the session sets CONSUL_HTTP_ADDR from it)."""
    started = ConsulAgent()
    try:
        started.start()
        yield started
    finally:
        started.cleanup()


def test_a_failing_python_block_names_the_readme_and_line(
    tmp_path: Path, agent: ConsulAgent
) -> None:
    path = readme(
        tmp_path,
        "# t\n\n```python\nanswer = 41\n```\n\ntext\n\n"
        "```python\nassert answer == 42, answer\n```\n",
    )
    found = steps(path, root=tmp_path)
    with DocSession(agent, tmp_path / "work") as session, pytest.raises(AssertionError) as info:
        session.run(found)
    message = str(info.value)
    assert message.startswith("README.md:9: python block failed"), message
    assert 'File "README.md", line 10' in message  # the traceback has the README's lines
    assert "AssertionError: 41" in message
    assert [b.where for b in session.ran] == ["README.md:3"]


def test_a_failing_sh_block_names_the_readme_and_line(tmp_path: Path, agent: ConsulAgent) -> None:
    path = readme(tmp_path, "# t\n\n```sh\ntrue\nfalse\n```\n")
    with DocSession(agent, tmp_path / "work") as session, pytest.raises(AssertionError) as info:
        session.run(steps(path, root=tmp_path))
    assert str(info.value).startswith("README.md:3: sh block exited 1"), info.value


def test_skips_are_listed_with_their_reason(tmp_path: Path, agent: ConsulAgent) -> None:
    path = readme(
        tmp_path, "# t\n\n<!-- doc-test: skip (needs the cluster) -->\n```sh\nexit 1\n```\n"
    )
    with DocSession(agent, tmp_path / "work") as session:
        session.run(steps(path, root=tmp_path))
    assert [(b.where, reason) for b, reason in session.not_run] == [
        ("README.md:4", "needs the cluster")
    ]
    assert session.ran == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("# t\n\n    indented = True\n", "README.md:3: an indented code block"),
        ("# t\n\n```\nx = 1\n```\n", "README.md:3: a code block without a language"),
        ("# t\n\n```json\n{}\n```\n", "README.md:3: a ```json block needs a doc-test"),
        ("# t\n\n<!-- doc-test: skip -->\n```sh\nx\n```\n", "README.md:3: doc-test skip needs"),
        ("# t\n\n<!-- doc-test: run -->\n```sh\nx\n```\n", "README.md:3: unknown doc-test action"),
        (
            "# t\n\n<!-- doc-test: file a.py -->\n\ntext\n",
            "README.md:3: doc-test file has no block",
        ),
    ],
)
def test_code_the_doc_test_cannot_run_is_refused(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ReadmeError) as info:
        steps(readme(tmp_path, text), root=tmp_path)
    assert str(info.value).startswith(problem), info.value


def test_blocks_keep_their_section_and_order(tmp_path: Path) -> None:
    path = readme(
        tmp_path,
        "# A\n\n## B\n\n```python\nb = 1\n```\n\n## C\n\n```text\nout\n```\n",
    )
    found = steps(path, root=tmp_path)
    assert [(b.line, b.action, b.section) for b in found if isinstance(b, Block)] == [
        (5, "run", ("A", "B")),
        (11, "text", ("A", "C")),
    ]
