"""The tables README.md holds between markers, rendered from their sources (the settings, the
reliability cases): one Markdown shape for all of them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """One line per row, `|` in cells escaped (no trailing newline)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)


def block(start_marker: str, end_marker: str, table: str) -> str:
    """The table between its markers, as README.md holds it."""
    return f"{start_marker}\n{table}\n{end_marker}"
