"""The shared column aligner (discovery_client/table.py)."""

from __future__ import annotations

import pytest

from consul_discovery.client.table import format_table


def test_columns_are_as_wide_as_their_widest_cell_and_lines_trimmed() -> None:
    text = format_table(("NAME", "N"), [("a", 10), ("long-name", 2)], right_aligned=(False, True))
    assert text.splitlines() == ["NAME       N", "a          10", "long-name   2"]


def test_a_row_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        format_table(("A", "B", "C"), [("x", "y")])
