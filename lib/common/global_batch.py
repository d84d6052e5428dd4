"""The profile's batch is the global batch: `train.per_device_train_batch_size` x
`train.gradient_accumulation_steps` examples per optimizer step, written for one process. With N
processes each takes its share, so that a run's recipe (the paper's 8 x 4 = 32) does not change
with the machine it runs on.
"""
from __future__ import annotations

BATCH_KEYS = ("train.per_device_train_batch_size", "train.gradient_accumulation_steps")


def per_process(batch: int, accumulation: int, processes: int) -> tuple[int, int]:
    """(per-device batch, accumulation steps) of each of `processes` processes, whose product times
    `processes` is batch x accumulation. The per-device batch is the largest that the profile's does
    not exceed (memory was sized for it), the accumulation takes the rest: 8 x 4 on 2 processes is
    8 x 2, on 8 processes 4 x 1. ValueError naming the keys when the examples do not divide."""
    examples = batch * accumulation
    if processes < 1 or examples % processes:
        raise ValueError(
            f"{BATCH_KEYS[0]} x {BATCH_KEYS[1]} = {batch} x {accumulation} = {examples} examples per "
            f"optimizer step (the global batch) do not divide among {processes} processes: set those two "
            f"keys so that their product is a multiple of {processes}, or use another number of processes "
            "(accelerate.num_processes)")
    share = examples // processes
    device = max(d for d in range(1, min(batch, share) + 1) if share % d == 0)
    return device, share // device
