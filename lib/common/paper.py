"""The paper's stated training facts, read from data/paper_claims.csv (the one place they are
written), and the arithmetic of its epoch.

`number("train_examples")` -> 187542, `number("stated_steps")` -> 5860, and so on for every claim
whose value is a number; `epoch_steps()` is one epoch of its data at its batch, floor and ceil
(lib/common/trainer_steps.py).
Stage 05's claim audit reads the same file (report.paper_claims).
"""
from __future__ import annotations

import csv
import functools

from lib.common import config, trainer_steps

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


def epoch_steps() -> dict:
    """One epoch of the paper's data at its batch (data/paper_claims.csv), floor and ceil, beside
    the steps it states; `examples` is the paper's example count."""
    examples, batch = number("train_examples"), number("per_device_train_batch_size")
    accum = number("gradient_accumulation_steps")
    return {**trainer_steps.steps_per_epoch(examples, batch, accum), "paper": number("stated_steps"),
            "examples": examples, "examples_over_32": round(examples / (batch * accum), 2)}
