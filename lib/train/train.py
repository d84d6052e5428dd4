"""Stage 02: supervised fine-tuning with TRL's SFTTrainer, read top to bottom in `run(cfg)`.

seed -> load sft/ -> tokenizer + model -> SFTTrainer (resuming from the last checkpoint) -> save
model/ -> format check on held-out prompts -> train_summary.json + loss curve. `train:` is SFTConfig
and `lora:` peft's LoraConfig, verbatim; the keys of our own and the multi-GPU command:
docs/stages.md, "02: keys of our own, several GPUs". Logging: lib/train/training_log.py.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from lib.common import config, paper, resume, store, trainer_steps
from lib.checks import format_check
from lib.train import learning_curve, training_log
from lib.models import model as model_lib



# ---------------------------------------------------------------------------------------------
# The stage


@resume.one_writer("stage 02 training", lambda cfg, *_, **__: config.output_dir(cfg) / "checkpoints")
def run(cfg: dict, callbacks: list | None = None, log=print) -> dict:
    """Train the profile's model on outputs/<profile>/sft/ and write the stage's outputs.
    One training run at a time per profile: a second one fails at once (lib.common.resume.one_writer)."""
    from transformers import set_seed

    import datasets
    from transformers.utils import logging as transformers_logging
    # A progress bar per map() and per checkpoint written drowns the notebook's output; the
    # progress lines (lib/train/training_log.py) say how far training is.
    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    t0 = time.time()
    out = config.output_dir(cfg)
    set_seed(cfg.seed)

    # Data: the stage-01 dataset, minus a held-out slice for the format check.
    dataset, heldout = load_data(cfg)

    # Tokenizer and model (the tiny one is initialised from the seed just set).
    tokenizer = model_lib.load_tokenizer(cfg)
    model = model_lib.load_model(cfg, tokenizer)
    untrained_rate = format_check.format_rate(model, tokenizer, heldout, cfg)

    # Training arguments: the profile's SFTConfig, with what this machine can do.
    args, precision = sft_config(cfg, log=log)
    dataset, lengths = limit_length(dataset, tokenizer, cfg, args.max_length)
    check_not_empty(cfg, len(dataset), args.max_length, lengths)
    # The learning curve on the dev split (the held-out first steps), when there is one.
    dev = learning_curve.dev_prompts(heldout) if cfg.format_check.curve_points else []
    max_new = cfg.format_check.max_new_tokens
    curve = [learning_curve.LearningCurve(
        out / "learning_curve.jsonl",
        lambda m, prompts: format_check.generate(m, tokenizer, prompts, max_new), dev,
        cfg.format_check.curve_points, log)] if dev else []
    trainer = make_trainer(cfg, model, tokenizer, dataset, args,
                           [training_log.JsonlLogger(out / "train_log.jsonl"), training_log.StepProgress(log),
                            *curve, *(callbacks or [])])
    # TRL drops examples whose completion was cut away entirely by its (keep_start) truncation.
    lengths["dropped_too_long"] += len(dataset) - len(trainer.train_dataset)
    lengths["truncated"] -= len(dataset) - len(trainer.train_dataset)
    # Tokens per epoch from what TRL will train on: truncated, and without the examples it dropped.
    if "input_ids" in trainer.train_dataset.column_names:
        lengths["padding_free_tokens"] = sum(map(len, trainer.train_dataset["input_ids"]))
    check_not_empty(cfg, len(trainer.train_dataset), args.max_length, lengths)

    # Only now, with every setting and input checked, touch the folders: resume this same run from
    # its last checkpoint, or set another run's checkpoints, model and logs aside (never delete).
    planned = planned_steps(args, len(trainer.train_dataset))
    fingerprint = run_fingerprint(cfg)      # a digest of sft/'s data files: computed once
    fresh = prepare_output(cfg, args.output_dir, planned, log=log, fingerprint=fingerprint)
    finished = None if fresh else finished_run(out, fingerprint, planned)
    if finished:
        # Resuming a finished run would re-save model/ (and the Trainer even takes one more step
        # when the last checkpoint ends mid-epoch), which makes stage 03 start its queries afresh.
        log(f"already trained to step {planned} with these settings and data: model/ and "
            "train_summary.json are kept as they are")
        return finished
    last = None if fresh else last_checkpoint(args.output_dir)
    if last:
        step = int(last.rsplit("-", 1)[-1])
        log(f"resuming from {last} (training to step {planned})")
        for name in ("train_log.jsonl", "learning_curve.jsonl"):
            store.rewrite_jsonl(out / name, [r for r in store.read_jsonl(out / name) if r["step"] <= step])
    result = trainer.train(resume_from_checkpoint=last)

    # Save: a LoRA run is merged, so downstream loads model/ like any full model.
    trained = trainer.model
    if cfg.lora:
        trained = trained.merge_and_unload()
    if not trainer.is_world_process_zero():
        return {}
    model_lib.save(trained, tokenizer, out / "model")

    # Evaluate: does greedy output now follow Thought / Action / Action Input?
    trained_rate = format_check.format_rate(trained, tokenizer, heldout, cfg)
    records = store.read_jsonl(out / "train_log.jsonl")
    training_log.plot_curves(records, config.output_dir(cfg, "figures") / "loss_curve.png", cfg.stamp)
    dev_curve = store.read_jsonl(out / "learning_curve.jsonl")
    learning_curve.plot(dev_curve, config.output_dir(cfg, "figures") / "learning_curve.png", cfg.stamp)
    summary = {
        "examples": len(trainer.train_dataset),
        "heldout_examples": len(heldout),
        "optimizer_steps": trainer.state.global_step,
        "effective_batch": args.per_device_train_batch_size * args.gradient_accumulation_steps
        * args.world_size,
        "precision": precision,
        "device": str(args.device),
        "wall_time_s": round(time.time() - t0, 1),
        "train_runtime_s": round(result.metrics["train_runtime"], 1),
        # Non-padding tokens per second of this process: the steps it ran times the data's tokens
        # per step (from the examples' lengths; TRL's own counter is private).
        "tokens_per_s": round(trained_tokens(lengths["padding_free_tokens"],
                                             trainer.state.global_step - (step if last else 0),
                                             len(trainer.train_dataset), args)
                              / max(result.metrics["train_runtime"], 1e-9), 1),
        # The last logged window's loss; None when the run ended before logging_steps was reached.
        "final_loss": records[-1]["loss"] if records else None,
        "train_loss": round(result.training_loss, 4),        # mean over every step of this run
        "mean_loss": round(sum(r["loss"] for r in records) / len(records), 4) if records else None,
        "max_length": args.max_length,
        **lengths,
        "lora": bool(cfg.lora),
        "resumed_from": last,
        "paper_examples": paper.number("train_examples"),
        "paper_steps_at_batch_32": paper.epoch_steps(),
        "format_rate_trained": trained_rate,
        "format_rate_untrained": untrained_rate,
        # First-step accuracy on the dev split at a few steps (learning_curve.jsonl); [] without one.
        "learning_curve": [{k: r[k] for k in ("step", "parses", "correct", "parse_error_rate")}
                           for r in dev_curve],
        "stamp": cfg.stamp,
        "run_fingerprint": fingerprint,
    }
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# ---------------------------------------------------------------------------------------------
# Data


def load_data(cfg: dict):
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


def check_not_empty(cfg: dict, left: int, max_length: int, lengths: dict) -> None:
    """Stop with the reason when the length limit left nothing to train on (TRL would only fail
    later with 'num_samples=0')."""
    if left > 0:
        return
    raise ValueError(
        f"{cfg.config_path}: no training example left: {lengths['over_max_length']} examples are "
        f"longer than train.max_length={max_length} tokens and {lengths['dropped_too_long']} were "
        f"dropped (model.over_max_positions={lengths['over_max_positions_policy']}; truncation keeps "
        "the start, so an example whose prompt fills the window keeps no completion to learn). Raise "
        "train.max_length (at most the model's positions) or use shorter examples (data.example_per).")


def sequence_lengths(dataset, tokenizer) -> list[int]:
    """Tokens of prompt + completion exactly as TRL tokenizes them (the chat template)."""
    return [len(tokenizer.apply_chat_template(p + c, tokenize=True, return_dict=True)["input_ids"])
            for p, c in zip(dataset["prompt"], dataset["completion"])]


def tokenize_example(tokenizer, example: dict, completion_only_loss: bool,
                     assistant_only_loss: bool = False) -> dict:
    """One prompt-completion example tokenized as SFTTrainer does it, before its cut to max_length:
    `input_ids` (the chat template over prompt + completion), `prompt_length` (where the completion
    starts: the tokens the prompt shares with that, the prompt rendered with its generation prompt),
    `completion_mask` (1 from there on), `assistant_masks` (1 on every assistant turn, from the
    template's generation tags) and `labels` (the ids, -100 where no loss is computed: the prompt
    with completion_only_loss, all but the assistant turns with assistant_only_loss).
    tests/test_train.py checks every field against TRL's own prepared dataset."""
    from trl.data_utils import common_prefix_length

    prompt = tokenizer.apply_chat_template(example["prompt"], add_generation_prompt=True,
                                           return_dict=True)["input_ids"]
    whole = tokenizer.apply_chat_template(example["prompt"] + example["completion"], return_dict=True,
                                          return_assistant_tokens_mask=assistant_only_loss)
    ids = whole["input_ids"]
    start = common_prefix_length(prompt, ids)
    mask = [0] * start + [1] * (len(ids) - start)
    assistant = whole["assistant_masks"] if assistant_only_loss else [1] * len(ids)
    labels = [t if (m or not completion_only_loss) and a else -100 for t, m, a in zip(ids, mask, assistant)]
    return {"input_ids": ids, "prompt_length": start, "completion_mask": mask,
            "assistant_masks": list(assistant), "labels": labels}


def loss_settings(cfg: dict) -> dict:
    """The profile's two loss-mask settings, as tokenize_example takes them."""
    return {k: bool((cfg.train or {}).get(k)) for k in ("completion_only_loss", "assistant_only_loss")}


def mark_loss(tokenizer, input_ids, labels, width: int = 600) -> str:
    """The text of a tokenized sequence with each run of loss-bearing tokens (label not -100)
    between >>> and <<<. A run longer than `width` characters keeps its start and end around
    [... N characters ...], so a long system prompt does not hide where the loss starts."""
    def shown(text):
        if len(text) <= width:
            return text
        return f"{text[:width // 2]}[... {len(text) - width:,} characters ...]{text[-width // 2:]}"

    runs, start = [], 0
    labels = [int(x) for x in labels]
    for end in range(1, len(labels) + 1):
        if end == len(labels) or (labels[end] == -100) != (labels[start] == -100):
            text = shown(tokenizer.decode([int(t) for t in input_ids[start:end]]))
            runs.append(text if labels[start] == -100 else f">>>{text}<<<")
            start = end
    return "".join(runs)


def describe_tokens(tokenizer, input_ids, columns: dict, start: int, stop: int) -> str:
    """A table of positions start..stop-1: position, token id, the token's text, then one column per
    entry of `columns` (name: values per position; in labels, -100 means no loss there)."""
    names = list(columns)
    lines = [f"{'position':>8} {'id':>6}  {'token':<16}" + "".join(f"  {name}" for name in names)]
    for i in range(max(start, 0), min(stop, len(input_ids))):
        token = repr(tokenizer.decode([int(input_ids[i])]))
        lines.append(f"{i:>8} {int(input_ids[i]):>6}  {token:<16}"
                     + "".join(f"  {int(columns[name][i]):>{len(name)}}" for name in names))
    return "\n".join(lines)


def describe_batch(batch: dict) -> str:
    """Per row of a collated batch: its positions, and of them the padding (attention 0; the
    collator pads labels with -100), the other masked positions (-100: the prompt, with
    completion_only_loss) and those that carry loss."""
    lines = []
    for i, (attention, labels) in enumerate(zip(batch["attention_mask"], batch["labels"])):
        padding = int((attention == 0).sum())
        masked = int(((labels == -100) & (attention == 1)).sum())
        lines.append(f"row {i}: {len(labels)} positions = {len(labels) - padding} tokens + {padding} padding; "
                     f"-100 on the {padding} padding and {masked} prompt positions; "
                     f"{int((labels != -100).sum())} carry loss")
    return "\n".join(lines)


def limit_length(dataset, tokenizer, cfg: dict, max_length: int):
    """Count (and with over_max_positions: drop, remove) the examples longer than max_length."""
    policy = cfg.model.over_max_positions or "truncate"     # null: truncate
    lengths = sequence_lengths(dataset, tokenizer)
    too_long = [i for i, n in enumerate(lengths) if n > max_length]
    stats = {"over_max_length": len(too_long), "over_max_positions_policy": policy,
             "truncated": 0, "dropped_too_long": 0,
             "padding_free_tokens": sum(min(n, max_length) for n in lengths)}
    if policy == "drop" and too_long:
        keep = sorted(set(range(len(dataset))) - set(too_long))
        dataset = dataset.select(keep)
        stats["dropped_too_long"] = len(too_long)
    elif policy == "truncate":
        stats["truncated"] = len(too_long)
    return dataset, stats


# ---------------------------------------------------------------------------------------------
# Trainer configuration


def precision_kwargs(train: dict, cuda: bool) -> tuple[dict, str, str | None]:
    """(fp16/bf16 kwargs, precision used, note): fp16 needs CUDA; without it we fall back to fp32.

    bf16 is honoured on CPU too (torch's CPU autocast). SFTConfig defaults bf16 to True when
    neither is set, so both are always passed explicitly.
    """
    fp16, bf16 = bool(train.get("fp16")), bool(train.get("bf16"))
    note = None
    if fp16 and not cuda:
        fp16, note = False, "fp16 was requested but there is no CUDA device: training in fp32"
    if bf16 and cuda:
        import torch
        if not torch.cuda.is_bf16_supported():
            bf16, fp16, note = False, True, "bf16 is not supported by this GPU: training in fp16"
    used = "fp16" if fp16 else "bf16" if bf16 else "fp32"
    return {"fp16": fp16, "bf16": bf16}, used, note


def sft_config(cfg: dict, log=print):
    """SFTConfig(**cfg.train) with output_dir, precision and max_length fitted to the machine."""
    import torch
    from trl import SFTConfig

    train = dict(cfg.train or {})
    cuda = torch.cuda.is_available() and not train.get("use_cpu")
    mixed, precision, note = precision_kwargs(train, cuda)
    if note:
        log(note)
    train.update(mixed)
    limit = model_lib.max_positions(cfg)
    if train.get("max_length") is None or train["max_length"] > limit:
        log(f"train.max_length={train.get('max_length')} exceeds the model's {limit} positions: "
            f"using {limit}")
        train["max_length"] = limit
    args = SFTConfig(output_dir=str(config.output_dir(cfg, "checkpoints")), **train)
    return args, precision


# The settings notebook 02's prose names, printed beside it so that a drifted sentence shows.
RECIPE = ("model.name_or_path", "data.example_per", "train.completion_only_loss", "train.assistant_only_loss",
          "train.num_train_epochs",
          "train.max_steps", "train.learning_rate", "train.lr_scheduler_type", "train.warmup_steps",
          "train.per_device_train_batch_size", "train.gradient_accumulation_steps", "train.max_grad_norm",
          "train.optim", "train.weight_decay", "train.fp16", "train.bf16", "train.gradient_checkpointing",
          "train.max_length", "lora.r", "lora.lora_dropout")


def describe_recipe(cfg: dict, *others: dict, keys=RECIPE) -> str:
    """A table of `keys` (dotted) with their values in `cfg` and in each profile of `others`;
    "(default)" where a profile does not set the key (SFTConfig's default then applies)."""
    def value(profile, dotted):
        section, _, key = dotted.partition(".")
        settings = config.as_dict(profile)
        if settings[section] is None:
            return f"({section}: null)"         # lora: null is full fine-tuning
        found = settings[section].get(key, "(default)")
        return "null" if found is None else str(found)

    profiles = (cfg, *others)
    width = max(map(len, keys)) + 2
    lines = ["".join([f"{'key':<{width}}", *(f"{p.profile:<22}" for p in profiles)]).rstrip()]
    lines += ["".join([f"{k:<{width}}", *(f"{value(p, k):<22}" for p in profiles)]).rstrip() for k in keys]
    return "\n".join(lines)


def make_trainer(cfg: dict, model, tokenizer, dataset, args, callbacks=()):
    """TRL's SFTTrainer; it tokenizes with the tokenizer's chat template and builds the labels."""
    import datasets
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    datasets.disable_progress_bars()      # also when called alone, as notebook 02 does
    score_loss_positions_only()
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(cfg), callbacks=list(callbacks))
    # With disable_tqdm the Trainer prints every log as a raw dict; train_log.jsonl and the progress
    # lines (lib/train/training_log.py) already say the same, readably.
    trainer.remove_callback(PrinterCallback)
    return trainer


def score_loss_positions_only() -> bool:
    """Have TRL's fused LM head score only the positions the loss reads on a CPU too.

    SFTTrainer computes the loss in chunks without the full logits (trl.kernels.ChunkedLogProbFunction).
    Where Triton runs (CUDA, XPU) it projects only the positions whose label is kept; elsewhere it
    projects every position onto the 49,152-token vocabulary and zeroes the rest afterwards (fixed
    shapes, for compilers such as Neuron's). With the loss on the assistant turns of a conversation
    whose system prompt is most of it, that was 37% of a CPU step. The choice is TRL's private
    `trl.trainer.utils._use_triton`; on a CPU it now answers yes for that choice alone (the kernel
    itself still runs torch ops there). The loss and gradients are the same (tests/test_train.py);
    bench/README.md has the speed. Returns whether the hook was found (False: TRL changed, nothing done)."""
    import trl.trainer.utils as trl_utils

    chooses = getattr(trl_utils, "_use_triton", None)
    if chooses is None:
        return False
    if not getattr(chooses, "scores_loss_positions_on_cpu", False):
        def compact(device) -> bool:
            return device.type == "cpu" or chooses(device)
        compact.scores_loss_positions_on_cpu, compact.original = True, chooses
        trl_utils._use_triton = compact
    return True


def lora_config(cfg: dict):
    if not cfg.lora:
        return None
    from peft import LoraConfig
    return LoraConfig(**cfg.lora)


# ---------------------------------------------------------------------------------------------
# Checkpoints and the training log


# Settings that only say how far to train: raising them continues the same run from its last
# checkpoint (the learning-rate schedule is then recomputed for the new total, as the Trainer does).
HOW_FAR = ("max_steps", "num_train_epochs")
LEFT_BY_A_RUN = ("model", "train_log.jsonl", "learning_curve.jsonl", "train_summary.json")


def run_fingerprint(cfg: dict) -> str:
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


def prepare_output(cfg: dict, checkpoints: str, planned: int | None = None, log=print,
                   fingerprint: str | None = None) -> bool:
    """Keep the checkpoints of this same run (to resume; also when it now trains further) and
    return False; otherwise set that run aside whole and return True (a fresh start).

    Set aside: checkpoints/ is renamed checkpoints.run-<its fingerprint>.<time>/ and the run's
    model/, train_log.jsonl, learning_curve.jsonl and train_summary.json move into it. So is a run
    of the same settings whose last checkpoint is past `planned` (it trained further than asked
    now; resuming it would stop at once on the longer run's weights)."""
    folder, out = Path(checkpoints), Path(checkpoints).parent
    last = last_checkpoint(str(folder))
    past = last is not None and planned is not None and int(last.rsplit("-", 1)[-1]) > planned
    return resume.restart_unless(folder, fingerprint or run_fingerprint(cfg), "run_fingerprint.txt",
                                 also=[out / name for name in LEFT_BY_A_RUN],
                                 why=f"its last checkpoint is past step {planned}" if past else None, log=log)


def trained_tokens(epoch_tokens: int, steps: int, examples: int, args) -> float:
    """Tokens seen in `steps` optimizer steps, from the tokens of one pass over the data."""
    per_epoch = trainer_steps.steps_per_epoch(examples, args.per_device_train_batch_size,
                                        args.gradient_accumulation_steps, args.world_size)["ceil"]
    return epoch_tokens * steps / max(per_epoch, 1)


def finished_run(out: Path, fingerprint: str, planned: int) -> dict | None:
    """train_summary.json of this same run when it already trained to `planned` and saved model/."""
    path = out / "train_summary.json"
    if not path.exists() or not (out / "model" / "config.json").exists():
        return None
    summary = json.loads(path.read_text())
    same = summary.get("run_fingerprint") == fingerprint and summary.get("optimizer_steps") == planned
    return summary if same else None


def last_checkpoint(folder: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint
    return get_last_checkpoint(folder) if Path(folder).is_dir() else None


# ---------------------------------------------------------------------------------------------
# Held-out samples for the notebook


def first_turn_before_after(cfg: dict, heldout, index: int = 0) -> str:
    """Stage 02's learning curve as text for one dev query: the base model's zero-shot first turn
    (step 0) beside the fine-tuned one (the last point), as the stage generated them."""
    records = store.read_jsonl(config.path(cfg, cfg.output_dir) / "learning_curve.jsonl")
    return learning_curve.side_by_side(records, learning_curve.dev_prompts(heldout), index)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.train.train", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, value parsed as YAML (e.g. train.max_steps=5)")
    args = parser.parse_args(argv)
    try:
        overrides = config.parse_overrides(args.set)
    except config.ConfigError as err:
        parser.error(str(err))
    summary = run(config.load(args.profile, overrides))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
