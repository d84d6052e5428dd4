"""Stage 02's checkpoints: which run they belong to (its fingerprint), the step it trains to, and
whether a run resumes from its last checkpoint, is already finished, or is set aside for a fresh one.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from lib.common import config, resume, store, trainer_steps
from lib.common.settings import Profile


# Settings that only say how far to train: raising them continues the same run from its last
# checkpoint (the learning-rate schedule is then recomputed for the new total, as the Trainer does).
HOW_FAR = ("max_steps", "num_train_epochs")
LEFT_BY_A_RUN = ("model", "train_log.jsonl", "learning_curve.jsonl", "train_summary.json")


def run_fingerprint(cfg: Profile) -> str:
    """What a checkpoint must share with this run to be resumed: the knobs and the data (stage
    01's saved examples; the held-out split and the length limit follow from the knobs)."""
    settings = config.as_dict(cfg)
    keys = {k: settings[k] for k in ("seed", "model", "lora", "format_check")}
    keys["train"] = {k: v for k, v in (cfg.train or {}).items() if k not in HOW_FAR}
    sft = config.path(cfg, cfg.output_dir) / "sft"
    keys["data"] = resume.file_digest(*sorted(sft.glob("data-*.arrow")))
    return resume.fingerprint(keys)


def planned_steps(args, examples: int) -> int:
    """The optimizer step this run trains to: max_steps, or num_train_epochs of the data."""
    if args.max_steps and args.max_steps > 0:
        return args.max_steps
    per_epoch = trainer_steps.steps_per_epoch(examples, args.per_device_train_batch_size,
                                        args.gradient_accumulation_steps, args.world_size)["ceil"]
    return math.ceil(per_epoch * args.num_train_epochs)


def prepare_output(cfg: Profile, checkpoints: str, planned: int | None = None, log=print,
                   fingerprint: str | None = None) -> bool:
    """Keep the checkpoints of this same run (to resume; also when it now trains further) and
    return False; otherwise set that run aside whole and return True (a fresh start).

    Set aside: checkpoints/ is renamed checkpoints.run-<its fingerprint>.<time>/ and the run's
    model/, train_log.jsonl, learning_curve.jsonl and train_summary.json move into it. So is a run
    of the same settings whose last checkpoint is past `planned` (it trained further than asked
    now; resuming it would stop at once on the longer run's weights)."""
    folder, out = Path(checkpoints), Path(checkpoints).parent
    last = last_checkpoint(str(folder))
    past = last is not None and planned is not None and checkpoint_step(last) > planned
    return resume.restart_unless(folder, fingerprint or run_fingerprint(cfg), "run_fingerprint.txt",
                                 also=[out / name for name in LEFT_BY_A_RUN],
                                 why=f"its last checkpoint is past step {planned}" if past else None, log=log)


def resume_or_restart(cfg, checkpoints: str, planned: int, fingerprint: str, log=print) -> tuple[dict | None, str | None]:
    """(train_summary.json of this same run when it is finished, else None; the checkpoint to resume
    from, else None). A resumed run's logs lose the lines past that checkpoint, which it writes again."""
    out = config.output_dir(cfg)
    fresh = prepare_output(cfg, checkpoints, planned, log=log, fingerprint=fingerprint)
    finished = None if fresh else finished_run(out, fingerprint, planned)
    if finished:
        # Resuming a finished run would re-save model/ (and the Trainer even takes one more step
        # when the last checkpoint ends mid-epoch), which makes stage 03 start its queries afresh.
        log(f"already trained to step {planned} with these settings and data: model/ and "
            "train_summary.json are kept as they are")
        return finished, None
    last = None if fresh else last_checkpoint(checkpoints)
    if last:
        step = checkpoint_step(last)
        log(f"resuming from {last} (training to step {planned})")
        for name in ("train_log.jsonl", "learning_curve.jsonl"):
            store.rewrite_jsonl(out / name, [r for r in store.read_jsonl(out / name) if r["step"] <= step])
    return None, last


def finished_run(out: Path, fingerprint: str, planned: int) -> dict | None:
    """train_summary.json of this same run when it already trained to `planned` and saved model/."""
    path = out / "train_summary.json"
    if not path.exists() or not (out / "model" / "config.json").exists():
        return None
    summary = json.loads(path.read_text())
    same = summary.get("run_fingerprint") == fingerprint and summary.get("optimizer_steps") == planned
    return summary if same else None


def checkpoint_step(checkpoint: str) -> int:
    """The optimizer step a checkpoint folder (checkpoint-<step>) was saved at."""
    return int(checkpoint.rsplit("-", 1)[-1])


def last_checkpoint(folder: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint
    return get_last_checkpoint(folder) if Path(folder).is_dir() else None
