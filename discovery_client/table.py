"""Plain-text tables: the one column aligner every command-line tool of the project prints with.

``python -m consul_discovery.client``, ``python -m services.cluster`` and ``python -m bench``
all print aligned columns through ``format_table``.
"""

from __future__ import annotations

from collections.abc import Sequence


def format_table(
    headers: Sequence[object],
    rows: Sequence[Sequence[object]],
    right_aligned: Sequence[bool] = (),
) -> str:
    """Columns separated by two spaces, each as wide as its widest cell; lines right-trimmed.

    Cells are left-aligned, except a body cell of a column whose ``right_aligned`` flag is
    true (numbers); headers are always left-aligned.
    """
    head = [str(h) for h in headers]
    body = [[str(c) for c in row] for row in rows]
    for row in body:
        if len(row) != len(head):
            raise ValueError(f"a row has {len(row)} cells for {len(head)} columns: {row!r}")
    right = [bool(flag) for flag in right_aligned] + [False] * (len(head) - len(right_aligned))
    widths = [max(len(cells[col]) for cells in (head, *body)) for col in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)
        ).rstrip()
        for row in body
    ]
    return "\n".join(lines)
