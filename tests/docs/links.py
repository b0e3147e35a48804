"""Links between the READMEs: every relative link names a file that exists, and every
``#anchor`` a heading that exists (GitHub's anchor spelling)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.docs.blocks import REPO_ROOT, parser

_EXTERNAL = ("http://", "https://", "mailto:")


def slug(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", title).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file (repeated titles get -1, -2, ...)."""
    tokens = parser().parse(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for i, token in enumerate(tokens):
        if token.type != "heading_open":
            continue
        base = slug(tokens[i + 1].content)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line, href) of every link in a markdown file."""
    found = []
    for token in parser().parse(path.read_text(encoding="utf-8")):
        if token.type != "inline" or not token.children:
            continue
        line = token.map[0] + 1 if token.map else 0
        for child in token.children:
            if child.type == "link_open":
                found.append((line, str(child.attrs.get("href", ""))))
    return found


def broken_links(path: Path, root: Path = REPO_ROOT) -> list[str]:
    """``README.md:12: ...`` for each link of ``path`` that leads nowhere."""
    readme = path.relative_to(root)
    problems = []
    for line, href in links(path):
        if href.startswith(_EXTERNAL):
            continue
        target, _, anchor = href.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists():
            problems.append(f"{readme}:{line}: {href}: no such file")
            continue
        if anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{readme}:{line}: {href}: no heading #{anchor} in {file.name}")
    return problems
