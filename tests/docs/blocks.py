"""The code blocks of the repository's READMEs, as steps a doc test runs in order.

Every fenced block declares its language. What happens to it:

- ``python``: run, in order, in one namespace per README (a block may use what an
  earlier block of the same README defined);
- ``sh``: run with bash (``-e -u -o pipefail``) in the README's work directory;
- ``text``: output or an illustration, not code: never run, counted;
- anything else (``json``, ``yaml``, ``hcl``, ...) needs a directive saying what it is.

A directive is an HTML comment right before a block (invisible on GitHub and PyPI):

``<!-- doc-test: skip (REASON) -->``   not run; the reason is listed in the test output
``<!-- doc-test: file PATH -->``       the block is a file of the user's project, written
                                       to PATH in the work directory (a later block runs it)
``<!-- doc-test: serve SERVICE -->``   an ``sh`` block of one command that serves and
                                       registers SERVICE: started in the background, kept
                                       until the README's end, then stopped with SIGTERM
                                       (it must deregister)
``<!-- doc-test: install -->``         ``pip install`` lines: run by tests/packaging in a
                                       fresh venv (the built wheel standing in for
                                       ``consul-discovery``), not in the project's venv
``<!-- doc-test: pytest FILE -->``     a test module: written to FILE and run with
                                       ``pytest -p consul_discovery.pytest_plugin``

and one that stands alone: ``<!-- doc-test: backends NAME... -->`` starts an echo backend
per service name, registered as passing, before the next block (kept until the end).

Indented code blocks are refused (they would escape the test): fence them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Folders never searched for READMEs (virtualenvs, builds, caches, run state).
PRUNED = {"build", "node_modules", "test-artifacts", "__pycache__"}

RUN_LANGUAGES = {"python", "sh"}
TEXT_LANGUAGES = {"text"}
DATA_LANGUAGES = {"json", "yaml", "hcl", "toml", "ini", "dockerfile"}
BLOCK_ACTIONS = {"skip", "file", "serve", "install", "pytest"}
STANDALONE_ACTIONS = {"backends"}

_DIRECTIVE = re.compile(r"<!--\s*doc-test:\s*(?P<body>.*?)\s*-->", re.DOTALL)


class ReadmeError(Exception):
    """A README's blocks or directives break the rules above (names README and line)."""


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced code block: where it is, its language, text, and what to do with it.

    ``line`` is the 1-based line of the opening fence; ``action`` is ``run`` (no
    directive), ``text``, or a directive's action with its ``argument``; ``section``
    the headings above it, outermost first.
    """

    readme: str  # path relative to the repository
    line: int
    language: str
    code: str
    action: str
    argument: str
    section: tuple[str, ...]

    @property
    def where(self) -> str:
        """``README.md:123``: how failures name the block."""
        return f"{self.readme}:{self.line}"

    @property
    def first_code_line(self) -> int:
        """The README line of the block's first line of code."""
        return self.line + 1


@dataclass(frozen=True, slots=True)
class Backends:
    """A standalone directive: echo backends for these services from here on."""

    readme: str
    line: int
    services: tuple[str, ...]
    section: tuple[str, ...]

    @property
    def where(self) -> str:
        """``README.md:123``."""
        return f"{self.readme}:{self.line}"


Step = Block | Backends


def readmes(root: Path = REPO_ROOT) -> list[Path]:
    """Every README.md of the repository (hidden folders, venvs and builds left out)."""
    found = []
    for path in sorted(root.rglob("README.md")):
        parts = path.relative_to(root).parts[:-1]
        if any(p.startswith(".") or p in PRUNED or p.endswith(".egg-info") for p in parts):
            continue
        if parts[:2] == ("consul", "build"):
            continue
        found.append(path)
    return found


def parser() -> MarkdownIt:
    """CommonMark with GitHub's tables (what GitHub and PyPI render)."""
    return MarkdownIt("commonmark").enable("table")


def _directive(token: Token) -> tuple[str, str] | None:
    match = _DIRECTIVE.search(token.content)
    if match is None:
        return None
    action, _, argument = match["body"].partition(" ")
    return action, argument.strip()


def _section_at(headings: list[tuple[int, str]]) -> tuple[str, ...]:
    return tuple(title for _, title in headings)


def steps(path: Path, root: Path = REPO_ROOT) -> list[Step]:
    """The blocks and standalone directives of one README, in order.

    Raises ReadmeError for an indented code block, a fence without a language, a
    language that needs a directive, an unknown directive, a ``skip`` without a reason,
    or a block directive with no block after it.
    """
    readme = str(path.relative_to(root))
    tokens = parser().parse(path.read_text(encoding="utf-8"))
    found: list[Step] = []
    pending: tuple[str, str, int] | None = None  # a block directive waiting for its block
    headings: list[tuple[int, str]] = []  # (level, title) of the headings above
    for i, token in enumerate(tokens):
        line = (token.map[0] + 1) if token.map else 0
        if token.type == "heading_open":
            level = int(token.tag[1])
            while headings and headings[-1][0] >= level:
                headings.pop()
            headings.append((level, tokens[i + 1].content))
            continue
        if token.type == "code_block":
            raise ReadmeError(
                f"{readme}:{line}: an indented code block; fence it (```sh, ```text, ...) "
                "so the doc test sees it"
            )
        if token.type == "html_block":
            directive = _directive(token)
            if directive is None:
                continue
            if pending is not None:
                raise ReadmeError(f"{readme}:{pending[2]}: doc-test {pending[0]} has no block")
            action, argument = directive
            if action in STANDALONE_ACTIONS:
                names = tuple(argument.split())
                if not names:
                    raise ReadmeError(f"{readme}:{line}: doc-test backends needs service names")
                found.append(Backends(readme, line, names, _section_at(headings)))
            elif action in BLOCK_ACTIONS:
                if action == "skip" and not re.fullmatch(r"\(.+\)", argument):
                    raise ReadmeError(f"{readme}:{line}: doc-test skip needs a (reason)")
                if action in ("file", "serve", "pytest") and not argument:
                    raise ReadmeError(f"{readme}:{line}: doc-test {action} needs an argument")
                pending = (action, argument, line)
            else:
                known = ", ".join(sorted(BLOCK_ACTIONS | STANDALONE_ACTIONS))
                raise ReadmeError(f"{readme}:{line}: unknown doc-test action {action!r} ({known})")
            continue
        if token.type != "fence":
            if pending is not None:
                raise ReadmeError(f"{readme}:{pending[2]}: doc-test {pending[0]} has no block")
            continue
        language = token.info.strip().split(" ")[0].lower() if token.info else ""
        action, argument = ("run", "") if pending is None else pending[:2]
        pending = None
        if not language:
            raise ReadmeError(
                f"{readme}:{line}: a code block without a language; say ```python, ```sh, "
                "or ```text for output"
            )
        if language in TEXT_LANGUAGES and action == "run":
            action = "text"
        elif language in DATA_LANGUAGES and action == "run":
            raise ReadmeError(
                f"{readme}:{line}: a ```{language} block needs a doc-test file or skip directive"
            )
        elif language not in RUN_LANGUAGES | TEXT_LANGUAGES | DATA_LANGUAGES:
            raise ReadmeError(f"{readme}:{line}: unknown code block language {language!r}")
        if action == "serve" and language != "sh":
            raise ReadmeError(f"{readme}:{line}: doc-test serve takes an ```sh block")
        found.append(
            Block(readme, line, language, token.content, action, argument, _section_at(headings))
        )
    if pending is not None:
        raise ReadmeError(f"{readme}:{pending[2]}: doc-test {pending[0]} has no block")
    return found


def in_section(found: list[Step], title: str) -> list[Step]:
    """The steps under the heading ``title`` (at any level), in order."""
    return [s for s in found if title in s.section]


def skip_reason(block: Block) -> str:
    """A skipped block's reason, without its parentheses."""
    return block.argument[1:-1]
