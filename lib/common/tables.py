"""How the project writes a table: CSV files in and out, Markdown tables, group labels, numbers.

A leaf shared by stage 04 (lib/judge/judge.py's pass-rate, checks and win-rate tables) and stage 05 (the
report, lib/report/report.py; the claim audit, lib/report/audit.py; the contamination check,
lib/report/contamination.py): what their tables hold is theirs, how every one of them prints is here, so
all the project's table files look alike.
"""
from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path


def group_label(group: str) -> str:
    """File names use G1_instruction; tables print G1-instruction."""
    return {"overall": "Overall", "average": "Avg (printed)"}.get(group, group.replace("_", "-"))


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        value = float(value)
    return f"{value:.{digits}f}"


def cell(value) -> str:
    """A value of stage 04's rows as a table cell: None is n/a, a float has 2 decimals (nan stays nan)."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.2f}"
    return str(value)


def markdown_table(header: list[str], rows: list, title: str | None = None, caption: list[str] = (),
                   stamp: str | None = None) -> str:
    """A Markdown pipe table: the header row, the rule, a row per list of cells, or per dict (stage
    04's rows: its `header` fields, written by `cell`). With a title, a table file's whole text: the
    profile's stamp (if any), the title, its caption lines, the table and a last newline."""
    cells = [[cell(r.get(c)) for c in header] if isinstance(r, dict) else r for r in rows]
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                      + ["| " + " | ".join(r) + " |" for r in cells])
    if title is None:
        return table
    out = [f"**{stamp}**", ""] if stamp else []
    out += [f"### {title}", "", *[f"_{line}_  " for line in caption], ""]
    return "\n".join(out) + "\n" + table + "\n"


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
