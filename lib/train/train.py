"""Stage 02: supervised fine-tuning with TRL's SFTTrainer, read top to bottom in `run(cfg)`.

seed -> load sft/ -> tokenizer + model -> SFTTrainer (resuming from the last checkpoint) -> save
model/ -> format check on held-out prompts -> train_summary.json + loss curve. `train:` is SFTConfig
and `lora:` peft's LoraConfig, verbatim (lib/train/recipe.py); the keys of our own and the multi-GPU
command: docs/stages.md, "02: keys of our own, several GPUs". Checkpoints: lib/train/resuming.py.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

from lib.common import config, paper, store, trainer_steps
from lib.common.settings import Profile
from lib.checks import format_check
from lib.train import launch, learning_curve, ranks, recipe, resuming, training_log
from lib.models import model as model_lib


# ---------------------------------------------------------------------------------------------
# The stage


def run(cfg: Profile, callbacks: list | None = None, log=print) -> dict:
    """Train the profile's model on outputs/<profile>/sft/ and write the stage's outputs.
    One training run at a time per profile: a second one fails at once (lib.common.resume.exclusive,
    held by the main process when there are several: lib/train/ranks.py). With
    accelerate.num_processes above 1, the stage runs in that many processes (lib/train/launch.py)."""
    if launch.wanted(cfg):
        if callbacks:
            raise ValueError("callbacks live in this process and cannot follow stage 02 into the processes "
                             f"accelerate launch starts (accelerate.num_processes={cfg.accelerate.num_processes})")
        return launch.train(cfg, log)
    quiet_progress_bars()
    notes = []
    args, precision = recipe.sft_config(cfg, log=notes.append)      # this process's share of the batch
    log = log if ranks.is_main(args) else silent
    for note in notes:
        log(note)
    with ranks.one_writer(args, config.output_dir(cfg) / "checkpoints", "stage 02 training"):
        return train_here(cfg, args, precision, callbacks, log)


def train_here(cfg: Profile, args, precision: str, callbacks: list | None, log) -> dict:
    """Stage 02 in this process, one of args.world_size: all train, the main one alone writes."""
    setup = set_up(cfg, args, precision, callbacks, log)

    # Only now, with every setting and input checked, touch the folders: resume this same run from
    # its last checkpoint, or set another run's checkpoints, model and logs aside (never delete).
    # The main process decides; the others learn what it found.
    finished, last = ranks.from_main(args, lambda: resuming.resume_or_restart(
        cfg, args.output_dir, setup.planned, setup.fingerprint, log))
    if finished:
        return finished if ranks.is_main(args) else {}
    result = setup.trainer.train(resume_from_checkpoint=last)
    # Under FSDP each process holds a shard of the weights: gathering them takes every process, as
    # in the Trainer's own save_model. Elsewhere the main process has them whole.
    trainer = setup.trainer
    weights = trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
    if not ranks.is_main(args):
        return {}

    # Save: a LoRA run is merged, so downstream loads model/ like any full model.
    trained = trainer.accelerator.unwrap_model(trainer.model)
    if cfg.lora:
        trained = trained.merge_and_unload()
    model_lib.save(trained, setup.tokenizer, config.output_dir(cfg) / "model", weights)

    # Evaluate: does greedy output now follow Thought / Action / Action Input?
    trained_rate = format_check.format_rate(trained, setup.tokenizer, setup.heldout, cfg.format_check)
    records, dev_curve = plot_curves(cfg)
    summary = {**summarise(cfg, setup, result, last, records),
               "format_rate_trained": trained_rate,
               "format_rate_untrained": setup.untrained_rate,
               # First-step accuracy on the dev split at a few steps (learning_curve.jsonl); [] without one.
               "learning_curve": [{k: r[k] for k in ("step", "parses", "correct", "parse_error_rate")}
                                  for r in dev_curve],
               "stamp": cfg.stamp,
               "run_fingerprint": setup.fingerprint}
    (config.output_dir(cfg) / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def silent(*_, **__) -> None:
    """The log of a process that is not the main one: its lines would repeat the main one's."""


def quiet_progress_bars() -> None:
    """A progress bar per map() and per checkpoint written drowns the notebook's output; the
    progress lines (lib/train/training_log.py) say how far training is."""
    import datasets
    from transformers.utils import logging as transformers_logging

    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()


@dataclass(frozen=True)
class Setup:
    """Stage 02 ready to train: every setting and input checked, no output folder touched yet."""
    trainer: object                 # TRL's SFTTrainer
    tokenizer: object
    heldout: object                 # the format check's held-out examples
    args: object                    # the SFTConfig it trains with
    precision: str
    lengths: dict                   # recipe.limit_length's counts, with what TRL dropped
    untrained_rate: float | None    # the format check before training
    planned: int                    # the optimizer step it trains to
    fingerprint: str                # resuming.run_fingerprint, a digest of sft/'s data files (main process; '' elsewhere)
    started: float                  # time.time() when the stage began


def set_up(cfg: Profile, args, precision: str, callbacks: list | None, log) -> Setup:
    """Data, tokenizer, model and trainer, with the untrained model's format rate (main process)."""
    from transformers import set_seed

    started = time.time()
    set_seed(cfg.seed)
    main = ranks.is_main(args)
    # Data: the stage-01 dataset, minus a held-out slice for the format check. The split and the
    # length limit write index files into sft/: the main process first, the others read them.
    with args.main_process_first(desc="stage 02's data"):
        dataset, heldout = load_data(cfg)

    # Tokenizer and model (the tiny one is initialised from the seed just set).
    tokenizer = model_lib.load_tokenizer(cfg)
    model = model_lib.load_model(cfg, tokenizer)
    untrained_rate = format_check.format_rate(model, tokenizer, heldout, cfg.format_check) if main else None

    # The examples longer than the SFTConfig's max_length (fitted to the model's positions).
    with args.main_process_first(desc="stage 02's length limit"):
        dataset, lengths = recipe.limit_length(dataset, tokenizer, cfg, args.max_length)
    recipe.check_not_empty(cfg, len(dataset), args.max_length, lengths)
    trainer = recipe.make_trainer(cfg, model, tokenizer, dataset, args,
                                  [*stage_callbacks(cfg, tokenizer, heldout, log), *(callbacks or [])])
    recipe.check_sharding(cfg, trainer)
    count_what_trl_dropped(lengths, len(dataset), trainer.train_dataset)
    recipe.check_not_empty(cfg, len(trainer.train_dataset), args.max_length, lengths)
    return Setup(trainer, tokenizer, heldout, args, precision, lengths, untrained_rate,
                 resuming.planned_steps(args, len(trainer.train_dataset)),
                 resuming.run_fingerprint(cfg) if main else "", started)


def stage_callbacks(cfg: Profile, tokenizer, heldout, log) -> list:
    """train_log.jsonl, the progress lines, and the learning curve on the dev split (the held-out
    first steps), when there is one."""
    out = config.output_dir(cfg)
    dev = learning_curve.dev_prompts(heldout) if cfg.format_check.curve_points else []
    max_new = cfg.format_check.max_new_tokens
    curve = [learning_curve.LearningCurve(
        out / "learning_curve.jsonl",
        lambda m, prompts: format_check.generate(m, tokenizer, prompts, max_new), dev,
        cfg.format_check.curve_points, log)] if dev else []
    return [training_log.JsonlLogger(out / "train_log.jsonl"), training_log.StepProgress(log), *curve]


def count_what_trl_dropped(lengths: dict, given: int, train_dataset) -> None:
    """TRL drops examples whose completion was cut away entirely by its (keep_start) truncation:
    they count as dropped, not truncated, and the tokens per epoch are those TRL will train on."""
    lengths["dropped_too_long"] += given - len(train_dataset)
    lengths["truncated"] -= given - len(train_dataset)
    if "input_ids" in train_dataset.column_names:
        lengths["padding_free_tokens"] = sum(map(len, train_dataset["input_ids"]))


def plot_curves(cfg: Profile) -> tuple[list[dict], list[dict]]:
    """The loss curve and the learning curve as figures; returns their records."""
    out = config.output_dir(cfg)
    records = store.read_jsonl(out / "train_log.jsonl")
    training_log.plot_curves(records, config.output_dir(cfg, "figures") / "loss_curve.png", cfg.stamp)
    dev_curve = store.read_jsonl(out / "learning_curve.jsonl")
    learning_curve.plot(dev_curve, config.output_dir(cfg, "figures") / "learning_curve.png", cfg.stamp)
    return records, dev_curve


def summarise(cfg: Profile, setup: Setup, result, resumed_from: str | None, records: list[dict]) -> dict:
    """train_summary.json up to the format rates: the data, the run's steps, speed and losses."""
    trainer, args = setup.trainer, setup.args
    return {
        "examples": len(trainer.train_dataset),
        "heldout_examples": len(setup.heldout),
        "optimizer_steps": trainer.state.global_step,
        "effective_batch": args.per_device_train_batch_size * args.gradient_accumulation_steps
        * args.world_size,
        # Processes and each one's share of that batch (lib/common/global_batch.py).
        "processes": args.world_size,
        "per_process_batch": [args.per_device_train_batch_size, args.gradient_accumulation_steps],
        "precision": setup.precision,
        "device": str(args.device),
        "wall_time_s": round(time.time() - setup.started, 1),
        "train_runtime_s": round(result.metrics["train_runtime"], 1),
        # Non-padding tokens per second of this process: the steps it ran times the data's tokens
        # per step (from the examples' lengths; TRL's own counter is private).
        "tokens_per_s": round(trained_tokens(setup.lengths["padding_free_tokens"],
                                             trainer.state.global_step
                                             - (resuming.checkpoint_step(resumed_from) if resumed_from else 0),
                                             len(trainer.train_dataset), args)
                              / max(result.metrics["train_runtime"], 1e-9), 1),
        # The last logged window's loss; None when the run ended before logging_steps was reached.
        "final_loss": records[-1]["loss"] if records else None,
        "train_loss": round(result.training_loss, 4),        # mean over every step of this run
        "mean_loss": round(sum(r["loss"] for r in records) / len(records), 4) if records else None,
        "max_length": args.max_length,
        **setup.lengths,
        "lora": bool(cfg.lora),
        "resumed_from": resumed_from,
        "paper_examples": paper.number("train_examples"),
        "paper_steps_at_batch_32": paper.epoch_steps(),
    }


def trained_tokens(epoch_tokens: int, steps: int, examples: int, args) -> float:
    """Tokens seen in `steps` optimizer steps, from the tokens of one pass over the data."""
    per_epoch = trainer_steps.steps_per_epoch(examples, args.per_device_train_batch_size,
                                        args.gradient_accumulation_steps, args.world_size)["ceil"]
    return epoch_tokens * steps / max(per_epoch, 1)


# ---------------------------------------------------------------------------------------------
# Data


def load_data(cfg: Profile):
    """outputs/<profile>/sft/ split into (train, heldout); the held-out slice is a seeded sample."""
    from datasets import DatasetDict, load_from_disk

    folder = config.path(cfg, cfg.output_dir) / "sft"
    if not folder.exists():
        raise FileNotFoundError(f"no training data at {folder}: run the data stage (01) first")
    dataset = load_from_disk(str(folder))
    if isinstance(dataset, DatasetDict):
        dataset = dataset["train"]
    missing = {"prompt", "completion"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"{folder}: missing column(s) {sorted(missing)}; expected TRL's "
                         "conversational prompt-completion form (docs/formats.md)")
    n = int(cfg.format_check.heldout or 0)
    if n >= len(dataset):
        raise ValueError(f"{cfg.config_path}: format_check.heldout={n} leaves nothing to train "
                         f"on ({len(dataset)} examples in {folder})")
    if n == 0:
        return dataset, dataset.select([])
    split = dataset.train_test_split(test_size=n, seed=cfg.seed, shuffle=True)
    return split["train"], split["test"]


# ---------------------------------------------------------------------------------------------
# Held-out samples for the notebook


def first_turn_before_after(cfg: Profile, heldout, index: int = 0) -> str:
    """Stage 02's learning curve as text for one dev query: the base model's zero-shot first turn
    (step 0) beside the fine-tuned one (the last point), as the stage generated them."""
    records = store.read_jsonl(config.path(cfg, cfg.output_dir) / "learning_curve.jsonl")
    return learning_curve.side_by_side(records, learning_curve.dev_prompts(heldout), index)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.train.train", description=__doc__.splitlines()[0])
    config.add_arguments(parser)
    args = parser.parse_args(argv)
    summary = run(config.load(args.profile, config.overrides_of(parser, args)))
    if summary:         # the main process's; the others of a launch return none
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
