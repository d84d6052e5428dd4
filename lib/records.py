"""ToolBench's training records, read as a stream and checked field by field (stage 01's input).

Any of ToolBench's own forms (docs/formats.md): the released preprocessed list
`toolllama_G123_dfs_train.json` (a JSON list, read as a stream so memory stays flat), the same records
as JSONL, or a folder of raw answer files `<id>_ChatGPT_DFS_woFilter_w2.json`, turned into records
the way ToolBench's preprocess_toolllama_data.py does (one record per `train_messages` entry).
A record is `{"id": "Step N: <query>", "conversations": [{"from", "value"}, ...]}`. A bad record is
a DataError naming the file, the record and the field, or is counted (data.on_bad_record: skip).
"""
from __future__ import annotations

import codecs
import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterator

from lib import toolbench

ROLES = ("system", "user", "assistant", "function")
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
                value = toolbench.process_system_message(content, functions) if role == "system" else content
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
