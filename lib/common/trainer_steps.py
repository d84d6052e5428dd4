"""How many optimizer steps transformers' Trainer takes for an epoch of data: the arithmetic stage 02
plans its run with and the paper's stated steps are checked against (lib/common/paper.py)."""
from __future__ import annotations

import math


def steps_per_epoch(examples: int, batch: int, accum: int, processes: int = 1) -> dict:
    """Optimizer steps for one epoch: floor (older Trainers, len//accum) and ceil (transformers 5)."""
    batches = math.ceil(examples / (batch * processes))
    return {"floor": batches // accum, "ceil": math.ceil(batches / accum)}
