"""Data preparation: ToolBench training records -> SFT examples (stage 01).

Records (lib/toolbench/records.py) become TRL's conversational prompt-completion examples, one per
record, per assistant turn or per conversation (`data.example_per`; docs/stages.md, "01: one example
per what"). With completion_only_loss the loss is on the completion only.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterator

from lib.common import config, paper, plots, resume
from lib.common.settings import Data, Model, Profile
from lib.toolbench import formats, observations, records, sample
from lib.models import model

EXAMPLE_PER = ("record", "assistant_turn", "conversation")


# ---------------------------------------------------------------- records -> examples

def _messages(conversations: list[dict]) -> list[dict]:
    return [{"role": t["from"], "content": t["value"]} for t in conversations]


def retried_calls(messages: list[dict]) -> set[int]:
    """The assistant turns whose call failed and that the next assistant turn makes again: an Action
    whose observation carries a non-empty "error", followed by a call of the same function."""
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    found = set()
    for i, j in zip(assistant, assistant[1:]):
        if j != i + 2 or messages[i + 1]["role"] != "function":
            continue
        failed = observations.reports_error(messages[i + 1]["content"])
        action = formats.parse_step(messages[i]["content"]).action
        if failed and action and action == formats.parse_step(messages[j]["content"]).action:
            found.add(i)
    return found


def extends(record: dict, nxt: dict) -> bool:
    """Whether `nxt` is `record` continued: the same query, and record's turns are its first turns."""
    query = lambda r: r["id"].partition(": ")[2]
    n = len(record["conversations"])
    return (query(record) == query(nxt) and len(nxt["conversations"]) > n
            and nxt["conversations"][:n] == record["conversations"])


def with_extension_flags(stream) -> Iterator[dict]:
    """Each record with `extended`: whether the record after it continues it (one record of lookahead)."""
    previous = None
    for record in stream:
        if previous is not None:
            yield previous | {"extended": extends(previous, record)}
        previous = record
    if previous is not None:
        yield previous | {"extended": False}


def examples_from_record(record: dict, example_per: str, retried_in_loss: bool = True) -> list[dict]:
    """Prompt-completion examples of one record (see the module docstring for the choices). With
    `retried_in_loss` false, every message gets `loss`, false on a failed call that the next turn
    makes again (retried_calls): the chat template then leaves that turn out of the loss, so the
    model learns the recovery without learning the mistake."""
    messages = _messages(record["conversations"])
    if not retried_in_loss:
        retried = retried_calls(messages)
        messages = [m | {"loss": i not in retried} for i, m in enumerate(messages)]
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if example_per == "conversation" and record.get("extended"):
        turns = []
    elif example_per in ("record", "conversation"):
        turns = turns[-1:]
    elif example_per != "assistant_turn":
        raise ValueError(f"data.example_per must be one of {EXAMPLE_PER}, got {example_per!r}")
    return [{"id": record["id"], "prompt": messages[:i], "completion": [messages[i]]} for i in turns]


def example_counts(record: dict) -> dict:
    """How many examples each choice of data.example_per makes of one (flagged) record, without
    making them: the per-choice counts stage 01 reports whichever it writes."""
    assistant_turns = sum(turn["from"] == "assistant" for turn in record["conversations"])
    return {"record": min(assistant_turns, 1), "assistant_turn": assistant_turns,
            "conversation": 0 if record.get("extended") else min(assistant_turns, 1)}


def outline_examples(examples: list[dict], width: int = 90) -> str:
    """Examples to read, numbered: the roles of each prompt, then its completion's role and the
    start of its text (as a Python string, so newlines show)."""
    lines = []
    for i, example in enumerate(examples):
        roles = [m["role"] for m in example["prompt"]]
        [completion] = example["completion"]
        text = completion["content"]
        shown = repr(text if len(text) <= width else text[:width] + "...")
        lines += [f"[{i}] prompt: {len(roles)} messages ({', '.join(roles)})",
                  f"    completion: {completion['role']} {shown}"]
    return "\n".join(lines)


def describe_unrolling(flagged: list[dict]) -> str:
    """A table of (flagged) records: id, turns, assistant turns, `extended`, and the examples each
    choice of data.example_per makes of it, with the totals."""
    head = f"{'record':<44} {'turns':>5} {'assistant':>9} {'extended':>8}" + "".join(f" {c:>14}" for c in EXAMPLE_PER)
    lines, totals = [head], dict.fromkeys(EXAMPLE_PER, 0)
    for record in flagged:
        made = {choice: len(examples_from_record(record, choice)) for choice in EXAMPLE_PER}
        totals = {choice: totals[choice] + made[choice] for choice in EXAMPLE_PER}
        rid = record["id"] if len(record["id"]) <= 44 else record["id"][:41] + "..."
        assistant = sum(turn["from"] == "assistant" for turn in record["conversations"])
        lines.append(f"{rid:<44} {len(record['conversations']):>5} {assistant:>9} {str(record.get('extended')):>8}"
                     + "".join(f" {made[c]:>14}" for c in EXAMPLE_PER))
    lines.append(f"{'examples':<44} {'':>5} {'':>9} {'':>8}" + "".join(f" {totals[c]:>14}" for c in EXAMPLE_PER))
    return "\n".join(lines)


def _count_choices(batch: dict) -> dict:
    counts = [example_counts({"conversations": c, "extended": e})
              for c, e in zip(batch["conversations"], batch["extended"])]
    return {choice: [n[choice] for n in counts] for choice in EXAMPLE_PER}


def _to_examples(batch: dict, example_per: str, retried_in_loss: bool = True) -> dict:
    out = {"id": [], "prompt": [], "completion": []}
    for rid, conversations, extended in zip(batch["id"], batch["conversations"], batch["extended"]):
        record = {"id": rid, "conversations": conversations, "extended": extended}
        for example in examples_from_record(record, example_per, retried_in_loss):
            for key in out:
                out[key].append(example[key])
    return out


def _count_tokens(batch: dict, tokenizer) -> dict:
    texts = [tokenizer.apply_chat_template(p + c, tokenize=False)
             for p, c in zip(batch["prompt"], batch["completion"])]
    completions = [c[0]["content"] + tokenizer.eos_token for c in batch["completion"]]
    return {"n_tokens": [len(ids) for ids in tokenizer(texts)["input_ids"]],
            "n_completion_tokens": [len(ids) for ids in tokenizer(completions)["input_ids"]]}


def percentiles(values, qs=(50, 90, 95, 99)) -> dict:
    """Nearest-rank percentiles (no interpolation: every figure is a real example's length)."""
    ordered = sorted(values)
    if not ordered:
        return {f"p{q}": None for q in qs} | {"max": None}
    pick = {f"p{q}": ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] for q in qs}
    return pick | {"max": ordered[-1]}


# ---------------------------------------------------------------- the stage

def ensure_sample(cfg: Profile) -> None:
    """(Re)generate the project's own sample corpus in data.sample_dir when missing or stale."""
    sample_dir = config.path(cfg, cfg.data.sample_dir)
    options = sample_options(cfg.data)
    if cfg.data.generate_sample and not sample.is_current(sample_dir, cfg.seed, **options):
        shutil.rmtree(sample_dir, ignore_errors=True)
        sample.generate(sample_dir, cfg.seed, **options)


def will_generate(cfg: Profile, target: Path) -> bool:
    """True when stage 01 will (re)generate the project's sample corpus and `target` is part of it."""
    if not cfg.data.generate_sample:
        return False
    sample_dir = config.path(cfg, cfg.data.sample_dir).resolve()
    inside = target.resolve() == sample_dir or sample_dir in target.resolve().parents
    return inside and not sample.is_current(sample_dir, cfg.seed, **sample_options(cfg.data))


def sample_options(data_cfg: Data) -> dict:
    """lib.toolbench.sample.generate's options from the profile's data.sample_* knobs."""
    return {"train_queries": data_cfg.sample_train_queries, "queries_per_group": data_cfg.sample_queries_per_group,
            "invented_values": data_cfg.sample_invented_values, "retry_share": data_cfg.sample_retry_share}


def training_records(cfg: Profile, dropped: Counter | None = None, files: dict | None = None) -> Iterator[dict]:
    """Stage 01's records, as a stream: read from data.train_path (records.iter_valid_records: bad
    ones raise or are counted in `dropped`, per data.on_bad_record), at most data.max_records, each
    with `extended` (whether the record after it continues it). `files` is filled with the files
    read, as records.iter_records reports them."""
    data_cfg = cfg.data
    train_path = config.path(cfg, data_cfg.train_path)
    max_records = data_cfg.max_records
    dropped = Counter() if dropped is None else dropped

    def valid():
        for n, record in enumerate(records.iter_valid_records(train_path, data_cfg.on_bad_record, dropped,
                                                              data_cfg.answer_methods, files)):
            if max_records is not None and n >= max_records:
                return
            yield record

    yield from with_extension_flags(valid())


def first_query(cfg: Profile) -> list[dict]:
    """The records of the training data's first query, as stage 01 reads them: the first record
    and those that continue it, up to the first one that no later record extends (ToolBench writes
    a query's steps as growing prefixes, so that one holds the whole conversation)."""
    query = []
    for record in training_records(cfg):
        query.append(record)
        if not record["extended"]:
            break
    return query


def _read_records(generate, train_path: Path, work: Path, dropped: Counter):
    """The records as an on-disk Dataset. The datasets library wraps an error raised while reading
    in DatasetGenerationError (and says SchemaInferenceError for no records at all): here the
    error that names the file, record and field reaches the caller, and the terminal, instead."""
    from datasets import Dataset
    from datasets.exceptions import DatasetGenerationError

    try:
        return Dataset.from_generator(generate, cache_dir=str(work), keep_in_memory=False)
    except (DatasetGenerationError, ValueError) as err:
        cause = (err.__cause__ or err.__context__) if isinstance(err, DatasetGenerationError) else err
        if type(cause).__name__ == "SchemaInferenceError":
            skipped = ", ".join(f"{n} {why}" for why, n in sorted(dropped.items())) or "none"
            raise records.DataError(train_path, "(all)", "(file)", "no_records",
                            f"no usable training record (records skipped: {skipped})") from None
        if isinstance(cause, (ValueError, OSError)) and cause is not err:
            raise cause from None
        raise


@resume.one_writer("stage 01 data", lambda cfg: config.output_dir(cfg) / "sft")
def prepare(cfg: Profile) -> dict:
    """Stage 01: read, check, transform, tokenize-count, save. Returns data_stats.
    One stage-01 run at a time per profile: a second one fails at once (lib.common.resume.one_writer)."""
    from datasets import disable_progress_bars

    disable_progress_bars()
    data_cfg = cfg.data
    ensure_sample(cfg)
    train_path = config.path(cfg, data_cfg.train_path)
    out = config.output_dir(cfg)
    cache = config.output_dir(cfg, "cache")

    # Read as a stream into an Arrow file on disk, so memory stays flat however large the input.
    dropped: Counter = Counter()
    files: dict = {}        # which files were read (records.iter_records fills it)

    def flagged():
        yield from training_records(cfg, dropped, files)

    work = Path(tempfile.mkdtemp(dir=cache))
    try:
        raw = _read_records(flagged, train_path, work, dropped)
        sft, examples_per_choice, tokenizer = _to_sft(cfg, raw)
        _save_swapped(sft, out / "sft")
        lengths, completion_lengths = sft["n_tokens"], sft["n_completion_tokens"]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    positions = model.max_positions(cfg.model)
    stats = {
        "source": str(train_path),
        "input_files": files,
        "records_read": len(raw) + sum(dropped.values()),
        "records_used": len(raw),
        "example_per": data_cfg.example_per,
        "examples_written": len(sft),
        "examples_per_choice": examples_per_choice,
        "paper_examples": paper.number("train_examples"),
        "dropped": dict(sorted(dropped.items())),
        "on_bad_record": data_cfg.on_bad_record,
        "max_positions": positions,
        "over_max_positions": sum(n > positions for n in lengths),
        "token_length_percentiles": percentiles(lengths),
        "completion_token_percentiles": percentiles(completion_lengths),
        "tokenizer": cfg.model.name_or_path or f"tiny byte-level BPE ({len(tokenizer)} tokens), trained here",
        "stamp": cfg.stamp,
    }
    (out / "data_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    stats["histogram"] = str(plot_lengths(lengths, positions, cfg))
    return stats


def _to_sft(cfg: Profile, raw):
    """The records as SFT examples (data.example_per) with their token counts; how many examples
    each choice of example_per would give; the tokenizer that counted them."""
    data_cfg = cfg.data
    num_proc = data_cfg.num_proc if len(raw) >= 1000 else None
    per_choice = raw.map(_count_choices, batched=True, num_proc=num_proc, remove_columns=raw.column_names)
    examples_per_choice = {choice: int(sum(per_choice[choice])) for choice in EXAMPLE_PER}
    sft = raw.map(_to_examples, batched=True, num_proc=num_proc, remove_columns=raw.column_names,
                  fn_kwargs={"example_per": data_cfg.example_per,
                             "retried_in_loss": data_cfg.retried_calls_in_loss is not False})
    tokenizer = model.load_tokenizer(cfg, _tokenizer_texts(cfg.model, sft))
    sft = sft.map(_count_tokens, batched=True, num_proc=num_proc, fn_kwargs={"tokenizer": tokenizer})
    return sft, examples_per_choice, tokenizer


def _save_swapped(sft, target: Path) -> None:
    """Written aside, then swapped in, so an interrupted run never leaves half a dataset behind."""
    staging = target.parent / f"{target.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    sft.save_to_disk(str(staging))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def _tokenizer_texts(model_cfg: Model, sft):
    """Training text for the tiny tokenizer; None for a pretrained one (it has its own)."""
    if model_cfg.name_or_path:
        return None
    limit = min(len(sft), model_cfg.tokenizer_train_texts or len(sft))
    # Role-prefixed as the chat template renders them, so "Assistant:" and the like become whole
    # tokens: a small model then sees at once where a turn starts.
    return (f"{m['role'].capitalize()}: {m['content']}"
            for row in sft.select(range(limit)) for m in row["prompt"] + row["completion"])


def plot_lengths(lengths, positions: int, cfg: Profile) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.hist(lengths, bins=cfg.data.histogram_bins, color="#4C72B0")
    ax.axvline(positions, color="#C44E52", linestyle="--", label=f"model positions ({positions})")
    ax.set_xlabel("tokens per example (prompt + completion)")
    ax.set_ylabel("examples")
    ax.set_title(f"Training example lengths, {len(lengths):,} examples")
    ax.legend()
    fig.tight_layout(rect=(0, 0, 1, 0.92) if cfg.stamp else (0, 0, 1, 1))    # room for the banner
    plots.stamp_figure(fig, cfg.stamp, size=18)
    path = config.output_dir(cfg, "figures") / "token_lengths.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def describe(stats: dict) -> str:
    """A few readable lines about a data_stats.json, for the notebook."""
    choice = stats["examples_per_choice"]
    lines = [
        f"source: {stats['source']}",
        *([describe_files(stats["input_files"])] if stats.get("input_files") else []),
        f"records read: {stats['records_read']:,}   used: {stats['records_used']:,}   "
        f"dropped: {stats['dropped'] or 'none'}",
        f"examples written ({stats['example_per']}): {stats['examples_written']:,}",
        "  per choice: " + ", ".join(f"{k} {v:,}" for k, v in choice.items())
        + f"  (the paper reports {stats['paper_examples']:,})",
        f"tokens per example: {stats['token_length_percentiles']}",
        f"longer than the model's {stats['max_positions']} positions: {stats['over_max_positions']:,}",
        f"tokenizer: {stats['tokenizer']}",
    ]
    if stats.get("stamp"):
        lines.insert(0, f"[{stats['stamp']}]")
    return "\n".join(lines)


def describe_files(files: dict) -> str:
    """One line on the files stage 01 read (data_stats.json's input_files)."""
    if files.get("form") != "answer folder":
        return f"read: 1 file ({files.get('form')})"
    read = ", ".join(f"{m or '(no method)'} {n:,}" for m, n in files["methods_kept"].items())
    line = f"read: {files['files_kept']:,} of {files['files_found']:,} answer files ({read})"
    if files["answer_methods"] is not None:
        line += f", data.answer_methods {files['answer_methods']}"
    return line + f"; first: {', '.join(files['sample'])}"
