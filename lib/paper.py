"""The paper's stated training facts, read from data/paper_claims.csv: the one place they are written.

`number("train_examples")` -> 187542, `number("stated_steps")` -> 5860, and so on for every claim
whose value is a number. Stage 05's claim audit reads the same file (report.paper_claims).
"""
from __future__ import annotations

import csv
import functools

from lib import config

CLAIMS_CSV = config.ROOT / "data" / "paper_claims.csv"


@functools.cache
def claims() -> dict[str, dict]:
    with open(CLAIMS_CSV, newline="", encoding="utf-8") as fh:
        return {row["claim"]: row for row in csv.DictReader(fh)}


def number(claim: str) -> int | float:
    """The claim's value as a number (an int when it is one)."""
    try:
        text = claims()[claim]["value"]
    except KeyError:
        raise KeyError(f"{CLAIMS_CSV}: no claim '{claim}'") from None
    value = float(text)
    return int(value) if value.is_integer() else value
