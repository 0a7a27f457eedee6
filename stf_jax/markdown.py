"""The one Markdown table writer used by every stage's results file and by the report."""

from __future__ import annotations

from typing import Any, Sequence


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; pipes and newlines inside cells are escaped so a cell such as
    "max |Δ|" cannot split a row."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows])


def table_lines(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> list[str]:
    """`table` as a list of lines, for writers that build a document line by line."""
    return table(header, rows).split("\n")
