"""Stage 02 in several processes: the main process (rank 0) alone holds the checkpoints folder's lock
and decides what the folders hold; the other processes wait for its word.

Every process of an `accelerate launch` runs the same stage. Were each to take the lock, the second
would find it held by its own run and fail; were each to resume or set aside, a folder would be moved
twice. So rank 0 takes the lock (`resume.exclusive`; when lib/train/launch.py started the processes,
it holds the lock and hands it down) and tells the others whether it got it, so that a second run
stops in every process at once; what rank 0 then finds (the checkpoint to resume from, a finished run)
it tells them too (`from_main`).
"""
from __future__ import annotations

import contextlib
import os

from lib.common import resume


@contextlib.contextmanager
def one_writer(args, folder, what: str):
    """resume.exclusive(folder) held by the main process of `args` (the SFTConfig, which knows the
    process group); FolderBusy in every process when the main process could not take it."""
    check_world(args)
    if args.world_size == 1:
        with resume.exclusive(folder, what):
            yield
        return
    with contextlib.ExitStack() as lock:
        refused = None
        if args.process_index == 0:
            try:
                lock.enter_context(resume.exclusive(folder, f"{what}, {args.world_size} processes"))
            except resume.FolderBusy as err:
                refused = str(err)
        refused = from_main(args, lambda: refused)
        if refused:
            raise resume.FolderBusy(refused)
        yield


def check_world(args) -> None:
    """Stop when this is one of several launched processes that the SFTConfig did not join into one
    run: each would train alone and write as the main process."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))       # torchrun's, for accelerate launch
    if launched != args.world_size:
        raise RuntimeError(
            f"accelerate launch started {launched} processes, but the Trainer set up {args.world_size}: on "
            "a machine without a GPU per process set train.use_cpu: true (the processes then talk over gloo)")


def from_main(args, compute):
    """compute() run on the main process alone, its value returned in every process."""
    if args.world_size == 1:
        return compute()
    from accelerate.utils import broadcast_object_list

    value = [compute() if args.process_index == 0 else None]
    return broadcast_object_list(value, from_process=0)[0]


def is_main(args) -> bool:
    """Does this process write the stage's files (logs, model/, summary, figures)?"""
    return args.process_index == 0
