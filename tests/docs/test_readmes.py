"""Every code block of every README runs against a real Consul agent, so the docs cannot rot.

One test per README: its blocks run in order (python blocks in one namespace, ``sh``
blocks with bash, servers started and stopped by PID) in a fresh work directory, against
one dev agent for the whole module, started the way the library's pytest plugin starts
its own (tests/docs/blocks.py says what each kind of block and directive means). A README
leaves nothing registered behind it: its servers deregister on SIGTERM, its backends are
deregistered by the session. A block that breaks fails the test naming the README
and line. Blocks that are not run (output, ``skip`` with its reason, ``pip install``
lines that tests/packaging runs) are listed in the output; none is skipped silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from consul_discovery.testing import ConsulAgent
from consul_discovery.testing.binary import ConsulBinaryMissing
from tests.docs.blocks import REPO_ROOT, Block, ReadmeError, readmes, steps
from tests.docs.links import broken_links
from tests.docs.session import DocSession

README_PATHS = readmes()


@pytest.fixture(scope="module")
def docs_agent() -> Iterator[ConsulAgent]:
    """One dev agent for every README of the module (stopped by PID afterwards)."""
    agent = ConsulAgent()
    try:
        try:
            agent.start()
        except ConsulBinaryMissing as exc:
            pytest.fail(str(exc), pytrace=False)
        yield agent
    finally:
        agent.cleanup()


def _id(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def test_the_library_and_every_package_have_a_readme() -> None:
    found = {_id(p) for p in README_PATHS}
    for folder in (".", "consul_connection", "registry", "discovery_client", "config_client",
                   "mesh"):  # fmt: skip
        assert str(Path(folder) / "README.md") in found, f"{folder}/ has no README.md"


@pytest.mark.parametrize("readme", README_PATHS, ids=_id)
def test_readme_code_blocks_run(
    readme: Path,
    docs_agent: ConsulAgent,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    try:
        found = steps(readme)
    except ReadmeError as exc:
        pytest.fail(str(exc), pytrace=False)
    session = DocSession(docs_agent, tmp_path / "project")
    try:
        session.run(found)
    finally:
        session.close()
        with capsys.disabled():
            print(f"\n{report(_id(readme), session)}")


def report(readme: str, session: DocSession) -> str:
    """What ran and what did not (and why), for the test output."""
    ran = Counter(
        b.language if b.action == "run" else b.action for b in session.ran if isinstance(b, Block)
    )
    lines = [
        f"  {readme}: ran {len(session.ran)} block(s) ("
        + ", ".join(f"{kind} {n}" for kind, n in sorted(ran.items()))
        + f"), {len(session.not_run)} not run"
    ]
    texts = [b for b, _ in session.not_run if b.action == "text"]
    if texts:
        lines.append(f"    text (output, not code): {len(texts)}")
    for block, reason in session.not_run:
        if block.action != "text":
            lines.append(f"    not run: {block.where} ({block.language}): {reason}")
    if session.ports:
        mapped = ", ".join(f"{a} -> {b}" for a, b in sorted(session.ports.items()))
        lines.append(f"    example ports: {mapped}")
    return "\n".join(lines)


@pytest.mark.parametrize("readme", README_PATHS, ids=_id)
def test_readme_links_lead_somewhere(readme: Path) -> None:
    assert broken_links(readme) == []
