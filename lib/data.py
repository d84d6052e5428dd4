"""Data preparation: ToolBench training records -> SFT examples (stage 01).

Input, any of ToolBench's own forms (docs/formats.md):
  - the released preprocessed list `toolllama_G123_dfs_train.json` (a JSON list, read as a stream),
  - the same records as JSONL, one per line,
  - a folder of raw answer files `<id>_ChatGPT_DFS_woFilter_w2.json`, turned into records the way
    ToolBench's preprocess_toolllama_data.py does (one record per `train_messages` entry).
A record is `{"id": "Step N: <query>", "conversations": [{"from", "value"}, ...]}`.

Output: TRL's conversational prompt-completion examples, the completion an assistant turn:
  record          one example per record, its last assistant turn the completion. ToolLLaMA's
                  choice: the earlier turns of a conversation are records of their own.
  assistant_turn  one example per assistant turn of every record.
  conversation    one example per conversation: a record that the next record of the same query
                  extends (ToolBench writes a query's steps as growing prefixes) is left out, so each
                  conversation is seen once, whole. Meant for training on every token
                  (completion_only_loss: false), where the prefix records would repeat the same text.
With completion_only_loss (the paper profile), the loss is on the completion only, so the long system
prompt with its function list is context, not target.

Heavy libraries are imported inside the functions that use them (lib/__init__.py says why).
"""
from __future__ import annotations

import codecs
import json
import math
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterator

from lib import config, model, paper, plots, sample, store

ROLES = ("system", "user", "assistant", "function")
EXAMPLE_PER = ("record", "assistant_turn", "conversation")
# The sentence ToolBench's process_system_message anchors on, and what it adds after it.
SYSTEM_ANCHOR = "with a function call to actually excute your step."
SYSTEM_FORMAT = " Your output should follow this format:\nThought:\nAction\nAction Input:\n"
APIS_PREFIX = "\nSpecifically, you have access to the following APIs: "
_SURROGATE = re.compile("[\udc80-\udcff]")
# Every assistant turn of ToolBench's training data is a call ("Action: <function>", Finish too).
_ACTION = re.compile(r"(^|\n)\s*Action:")


class DataError(ValueError):
    """A bad input record: names the file, the record and the field."""

    def __init__(self, file, record, field: str, reason: str, problem: str):
        self.file, self.record, self.field, self.reason = str(file), record, field, reason
        super().__init__(f"{file}: record {record}: field '{field}': {problem}")


# ---------------------------------------------------------------- reading, as a stream

def _decoded_chunks(path: Path, size: int = 1 << 20) -> Iterator[str]:
    # surrogateescape keeps undecodable bytes visible as lone surrogates, so a bad byte is reported
    # against the record and field that hold it instead of failing the whole file at a byte offset.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    with open(path, "rb") as fh:
        while chunk := fh.read(size):
            yield decoder.decode(chunk)
        yield decoder.decode(b"", final=True)


def iter_json_list(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (index, element) of a top-level JSON list without loading the file whole."""
    decoder = json.JSONDecoder()
    chunks = _decoded_chunks(path)
    buf, pos, index, started = "", 0, 0, False
    while True:
        # Skip whitespace, the opening bracket and separators; refill the buffer when it runs dry.
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n,[]":
                if buf[pos] == "[":
                    started = True
                if buf[pos] == "]":
                    return
                pos += 1
            if pos < len(buf):
                break
            nxt = next(chunks, None)
            if nxt is None:
                if not started:
                    raise DataError(path, "-", "(file)", "malformed_json", "empty file, expected a JSON list")
                raise DataError(path, index, "(file)", "malformed_json", "the JSON list is not closed by ']'")
            buf, pos = buf[pos:] + nxt, 0
        if not started:
            raise DataError(path, "-", "(file)", "malformed_json",
                            f"expected a JSON list, found {buf[pos]!r} at the start")
        while True:
            try:
                value, end = decoder.raw_decode(buf, pos)
                break
            except json.JSONDecodeError as err:
                nxt = next(chunks, None)
                if nxt is None:
                    # A list cannot be resynchronised after a broken element, so this always raises.
                    raise DataError(path, index, "(json)", "malformed_json",
                                    f"malformed JSON: {err.msg} (char {err.pos} of the element)") from None
                buf, pos = buf[pos:] + nxt, 0
        yield index, value
        index += 1
        pos = end


def _answer_records(answer: dict, file: Path) -> Iterator[tuple[str, dict]]:
    """ToolBench's preprocessing of one raw answer file: one record per train_messages entry.

    Yields (reason, None) for entries ToolBench skips, so the count of each is reported.
    """
    generation = answer.get("answer_generation")
    if not isinstance(generation, dict):
        raise DataError(file, 0, "answer_generation", "missing_field", "missing or not an object")
    if not generation.get("valid_data"):
        yield "invalid_answer_file", None
        return
    for field in ("train_messages", "query", "function"):
        if field not in generation:
            raise DataError(file, 0, f"answer_generation.{field}", "missing_field", "missing")
    query, functions = generation["query"], generation["function"]
    for messages in generation["train_messages"]:
        conversations, pending_thought = [], ""
        last = len(messages) - 1
        for i, message in enumerate(messages):
            role, content = message.get("role"), message.get("content")
            if role != "assistant":
                value = process_system_message(content, functions) if role == "system" else content
                conversations.append({"from": role, "value": value})
                pending_thought = ""
                continue
            call = message.get("function_call")
            if call is None:
                if i == last:       # the record's target must be a call, as in ToolBench
                    conversations = None
                    break
                pending_thought += f"\nThought: {content}"
                continue
            step = pending_thought or "\nThought: "
            step += f"\nAction: {call['name']}\nAction Input: {call['arguments']}"
            conversations.append({"from": "assistant", "value": step})
            pending_thought = ""
            if i == last:
                break
        if conversations is None or messages[-1].get("role") != "assistant":
            yield "last_turn_not_a_call", None
            continue
        yield "", {"id": f"Step {last}: {query}", "conversations": conversations}


def process_system_message(system_message: str, functions: list) -> str:
    """ToolBench's system prompt: the ReAct format after the anchor, the functions appended as a repr."""
    if SYSTEM_ANCHOR not in system_message:
        raise ValueError(f"system message lacks ToolBench's sentence {SYSTEM_ANCHOR!r}")
    return (system_message.replace(SYSTEM_ANCHOR, SYSTEM_ANCHOR + SYSTEM_FORMAT)
            + APIS_PREFIX + str(functions))


def iter_records(path: Path) -> Iterator[tuple[str, object, dict | None, tuple | None]]:
    """Yield (file, where, record, bad) from a JSON list, a JSONL file or a folder of answer files.

    `record` is None where there is none: then `bad` is (reason, field, message) for broken input,
    or (reason, None, None) for an entry that ToolBench's own preprocessing skips.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training data not found: {path} (set data.train_path in the profile)")
    if path.is_dir():
        files = sorted(path.rglob("*.json"))
        if not files:
            raise FileNotFoundError(f"{path}: no answer files (*.json) in this folder")
        for file in files:
            try:
                answer = json.loads(file.read_bytes().decode("utf-8", errors="surrogateescape"))
                for n, (skip, record) in enumerate(_answer_records(answer, file)):
                    yield str(file), n, record, (skip, None, None) if skip else None
            except json.JSONDecodeError as err:
                yield str(file), 0, None, ("malformed_json", "(json)", f"{err.msg} at char {err.pos}")
            except DataError as err:
                yield str(file), 0, None, (err.reason, err.field, str(err).rpartition(": ")[2])
    elif path.suffix == ".jsonl":
        with open(path, "rb") as fh:
            for line_no, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw.decode("utf-8", errors="surrogateescape"))
                except json.JSONDecodeError as err:
                    yield str(path), f"line {line_no}", None, (
                        "malformed_json", "(json)", f"{err.msg} at char {err.pos}")
                    continue
                yield str(path), f"line {line_no}", record, None
    else:
        for index, record in iter_json_list(path):
            yield str(path), index, record, None


def check_record(record) -> tuple[str, str, str] | None:
    """(reason, field, problem) for the first thing wrong with a record, or None if it is usable."""
    if not isinstance(record, dict):
        return "not_an_object", "(record)", f"expected an object, got {type(record).__name__}"
    if not isinstance(record.get("id"), str):
        return "missing_id", "id", "missing or not a string"
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        return "missing_conversations", "conversations", "missing, empty or not a list"
    for i, turn in enumerate(conversations):
        where = f"conversations[{i}]"
        if not isinstance(turn, dict):
            return "bad_turn", where, "expected an object with 'from' and 'value'"
        if turn.get("from") not in ROLES:
            return "unknown_role", f"{where}.from", f"unknown role {turn.get('from')!r} (expected one of {ROLES})"
        value = turn.get("value")
        if not isinstance(value, str) or not value.strip():
            return "empty_value", f"{where}.value", "empty or not a string"
        if _SURROGATE.search(value):
            return "non_utf8", f"{where}.value", "holds bytes that are not valid UTF-8"
        if turn["from"] == "assistant" and not _ACTION.search(value):
            return "no_action", f"{where}.value", "an assistant turn with no 'Action:' line (no call to learn)"
    if _SURROGATE.search(record["id"]):
        return "non_utf8", "id", "holds bytes that are not valid UTF-8"
    if not any(t["from"] == "assistant" for t in conversations):
        return "no_assistant_turn", "conversations", "no assistant turn to train on"
    return None


def iter_valid_records(path: Path, on_bad_record: str, dropped: Counter) -> Iterator[dict]:
    """Records that pass check_record; bad ones raise DataError, or are counted in `dropped` (skip)."""
    if on_bad_record not in ("raise", "skip"):
        raise ValueError(f"data.on_bad_record must be 'raise' or 'skip', got {on_bad_record!r}")
    for file, where, record, bad in iter_records(path):
        if bad is not None and bad[1] is None:  # skipped by ToolBench's own preprocessing: counted
            dropped[bad[0]] += 1
            continue
        if bad is None:
            bad = check_record(record)
        if bad is None:
            yield record
            continue
        reason, field, message = bad
        rid = record.get("id") if isinstance(record, dict) and isinstance(record.get("id"), str) else None
        label = f"{where} (id {rid[:80]!r})" if rid else where
        if on_bad_record == "raise":
            raise DataError(file, label, field, reason, message)
        dropped[reason] += 1


# ---------------------------------------------------------------- records -> examples

def _messages(conversations: list[dict]) -> list[dict]:
    return [{"role": t["from"], "content": t["value"]} for t in conversations]


def extends(record: dict, nxt: dict) -> bool:
    """Whether `nxt` is `record` continued: the same query, and record's turns are its first turns."""
    query = lambda r: r["id"].partition(": ")[2]
    n = len(record["conversations"])
    return (query(record) == query(nxt) and len(nxt["conversations"]) > n
            and nxt["conversations"][:n] == record["conversations"])


def with_extension_flags(records) -> Iterator[dict]:
    """Each record with `extended`: whether the record after it continues it (one record of lookahead)."""
    previous = None
    for record in records:
        if previous is not None:
            yield previous | {"extended": extends(previous, record)}
        previous = record
    if previous is not None:
        yield previous | {"extended": False}


def examples_from_record(record: dict, example_per: str) -> list[dict]:
    """Prompt-completion examples of one record (see the module docstring for the choices)."""
    messages = _messages(record["conversations"])
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if example_per == "conversation" and record.get("extended"):
        turns = []
    elif example_per in ("record", "conversation"):
        turns = turns[-1:]
    elif example_per != "assistant_turn":
        raise ValueError(f"data.example_per must be one of {EXAMPLE_PER}, got {example_per!r}")
    return [{"id": record["id"], "prompt": messages[:i], "completion": [messages[i]]} for i in turns]


def _to_examples(batch: dict, example_per: str) -> dict:
    out = {"id": [], "prompt": [], "completion": []}
    for rid, conversations, extended in zip(batch["id"], batch["conversations"], batch["extended"]):
        record = {"id": rid, "conversations": conversations, "extended": extended}
        for example in examples_from_record(record, example_per):
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

def ensure_sample(cfg: dict) -> None:
    """(Re)generate the project's own sample corpus in data.sample_dir when missing or stale."""
    sample_dir = config.path(cfg, cfg["data"]["sample_dir"])
    options = sample_options(cfg)
    if cfg["data"]["generate_sample"] and not sample.is_current(sample_dir, cfg["seed"], **options):
        shutil.rmtree(sample_dir, ignore_errors=True)
        sample.generate(sample_dir, cfg["seed"], **options)


def sample_options(cfg: dict) -> dict:
    """lib.sample.generate's options from the profile: data.sample_train_queries (240 unless set),
    data.sample_queries_per_group (8), data.sample_invented_values (0), data.sample_retry_share (0)."""
    data = cfg["data"]
    return {"train_queries": int(data.get("sample_train_queries") or 240),
            "queries_per_group": int(data.get("sample_queries_per_group") or 8),
            "invented_values": float(data.get("sample_invented_values") or 0.0),
            "retry_share": float(data.get("sample_retry_share") or 0.0)}


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
            raise DataError(train_path, "(all)", "(file)", "no_records",
                            f"no usable training record (records skipped: {skipped})") from None
        if isinstance(cause, (ValueError, OSError)) and cause is not err:
            raise cause from None
        raise


def prepare(cfg: dict) -> dict:
    """Stage 01: read, check, transform, tokenize-count, save. Returns data_stats.
    One stage-01 run at a time per profile: a second one fails at once (lib.store.exclusive)."""
    with store.exclusive(config.output_dir(cfg) / "sft", "stage 01 data"):
        return _prepare(cfg)


def _prepare(cfg: dict) -> dict:
    from datasets import disable_progress_bars

    disable_progress_bars()
    data = cfg["data"]
    ensure_sample(cfg)
    train_path = config.path(cfg, data["train_path"])
    out = config.output_dir(cfg)
    cache = config.output_dir(cfg, "cache")

    # Read as a stream into an Arrow file on disk, so memory stays flat however large the input.
    dropped: Counter = Counter()
    max_records = data["max_records"]

    def records():
        for n, record in enumerate(iter_valid_records(train_path, data["on_bad_record"], dropped)):
            if max_records is not None and n >= max_records:
                return
            yield record

    def flagged():
        yield from with_extension_flags(records())

    work = Path(tempfile.mkdtemp(dir=cache))
    try:
        raw = _read_records(flagged, train_path, work, dropped)
        num_proc = data["num_proc"] if len(raw) >= 1000 else None
        per_choice = raw.map(lambda b: {"turns": [sum(t["from"] == "assistant" for t in c)
                                                  for c in b["conversations"]]},
                             batched=True, num_proc=num_proc, remove_columns=raw.column_names)
        examples_per_choice = {"record": len(raw), "assistant_turn": int(sum(per_choice["turns"])),
                               "conversation": len(raw) - int(sum(raw["extended"]))}
        sft = raw.map(_to_examples, batched=True, num_proc=num_proc, remove_columns=raw.column_names,
                      fn_kwargs={"example_per": data["example_per"]})
        tokenizer = model.load_tokenizer(cfg, _tokenizer_texts(cfg, sft))
        sft = sft.map(_count_tokens, batched=True, num_proc=num_proc, fn_kwargs={"tokenizer": tokenizer})
        # Written aside, then swapped in, so an interrupted run never leaves half a dataset behind.
        target, staging = out / "sft", out / "sft.partial"
        shutil.rmtree(staging, ignore_errors=True)
        sft.save_to_disk(str(staging))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        lengths, completion_lengths = sft["n_tokens"], sft["n_completion_tokens"]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    positions = model.max_positions(cfg)
    stats = {
        "source": str(train_path),
        "records_read": len(raw) + sum(dropped.values()),
        "records_used": len(raw),
        "example_per": data["example_per"],
        "examples_written": len(sft),
        "examples_per_choice": examples_per_choice,
        "paper_examples": paper.number("train_examples"),
        "dropped": dict(sorted(dropped.items())),
        "on_bad_record": data["on_bad_record"],
        "max_positions": positions,
        "over_max_positions": sum(n > positions for n in lengths),
        "token_length_percentiles": percentiles(lengths),
        "completion_token_percentiles": percentiles(completion_lengths),
        "tokenizer": cfg["model"]["name_or_path"] or f"tiny byte-level BPE ({len(tokenizer)} tokens), trained here",
        "stamp": cfg["stamp"],
    }
    (out / "data_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    stats["histogram"] = str(plot_lengths(lengths, positions, cfg))
    return stats


def _tokenizer_texts(cfg: dict, sft):
    """Training text for the tiny tokenizer; None for a pretrained one (it has its own)."""
    if cfg["model"]["name_or_path"]:
        return None
    limit = min(len(sft), cfg["model"]["tokenizer_train_texts"] or len(sft))
    # Role-prefixed as the chat template renders them, so "Assistant:" and the like become whole
    # tokens: a small model then sees at once where a turn starts.
    return (f"{m['role'].capitalize()}: {m['content']}"
            for row in sft.select(range(limit)) for m in row["prompt"] + row["completion"])


def plot_lengths(lengths, positions: int, cfg: dict) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.hist(lengths, bins=cfg["data"]["histogram_bins"], color="#4C72B0")
    ax.axvline(positions, color="#C44E52", linestyle="--", label=f"model positions ({positions})")
    ax.set_xlabel("tokens per example (prompt + completion)")
    ax.set_ylabel("examples")
    ax.set_title(f"Training example lengths, {len(lengths):,} examples")
    ax.legend()
    fig.tight_layout(rect=(0, 0, 1, 0.92) if cfg["stamp"] else (0, 0, 1, 1))    # room for the banner
    plots.stamp_figure(fig, cfg["stamp"], size=18)
    path = config.output_dir(cfg, "figures") / "token_lengths.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def describe(stats: dict) -> str:
    """A few readable lines about a data_stats.json, for the notebook."""
    choice = stats["examples_per_choice"]
    lines = [
        f"source: {stats['source']}",
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


def render_example(cfg: dict, index: int = 0, width: int = 1200) -> str:
    """One training example as the model sees it, the trained-on completion between >>> and <<<."""
    from datasets import load_from_disk

    example = load_from_disk(str(config.path(cfg, cfg["output_dir"]) / "sft"))[index]
    tokenizer = model.load_tokenizer(cfg)
    prompt = tokenizer.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(example["prompt"] + example["completion"], tokenize=False)
    shown = prompt if len(prompt) <= width else prompt[: width // 2] + "\n[...]\n" + prompt[-width // 2:]
    return f"{shown}>>>{full[len(prompt):]}<<<"
