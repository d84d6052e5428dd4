"""ToolBench's training records, read as a stream and checked field by field (stage 01's input).

Any of ToolBench's own forms (docs/formats.md): the released JSON list (read as a stream), JSONL, or
a folder of raw answer files turned into records as ToolBench's preprocess_toolllama_data.py does.
A bad record is a DataError naming the file, the record and the field, or is counted
(data.on_bad_record: skip).
"""
from __future__ import annotations

import codecs
import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterator

from lib.toolbench import formats

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
                value = formats.process_system_message(content, functions) if role == "system" else content
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


ANSWER_SAMPLE = 5       # file names an answer-folder report lists
PREPROCESS_METHOD = "DFS_woFilter_w2"       # preprocess_toolllama_data.py's default --method


def answer_file_name(name: str) -> tuple[str, str]:
    """(query id, method) of a raw answer file name `<id>_<method>.json`: ("10",
    "ChatGPT_DFS_woFilter_w2"), ("1073", "CoT@1"); ("<stem>", "") for a name without "_"."""
    stem = name[:-5] if name.endswith(".json") else name
    query_id, _, method = stem.partition("_")
    return query_id, method


def method_matches(method: str, wanted: str) -> bool:
    """Whether a file's method part is `wanted`: the same, or `wanted` after a model prefix
    ("ChatGPT_DFS_woFilter_w2" is DFS_woFilter_w2). ToolBench's preprocess keeps a file when the
    method occurs anywhere in its name (`if method not in data_file: continue`); this agrees on every
    name ToolBench and StableToolBench write (`<id>_<method>.json`, rapidapi.py run_single_task)
    without taking CoT@10 for CoT@1."""
    return method == wanted or method.endswith("_" + wanted)


def answer_files(folder: Path, answer_methods=None, report: dict | None = None) -> list[Path]:
    """The raw answer files of `folder` (and its subfolders, e.g. G1_answer/ G2_answer/) to read.

    With `answer_methods` (data.answer_methods, a list), only the files whose method part matches
    one of them (method_matches), as ToolBench's preprocess reads one method (--method, CoT@1 or
    DFS_woFilter_w2); None reads every method. Two files kept for the same query (the same id in
    folders of the same name, e.g. 588_CoT@1.json and 588_DFS_woFilter_w2.json) would train on that
    query twice: a DataError naming the folder, the id and both files, and what to set. `report`,
    when given, is filled with what was found: `files_found`, `files_kept`, `methods_found` and
    `methods_kept` ({method: files}), `answer_methods`, and `sample` (the first ANSWER_SAMPLE names
    kept, relative to `folder`)."""
    folder = Path(folder)
    files = sorted(folder.rglob("*.json"))
    if not files:
        raise FileNotFoundError(f"{folder}: no answer files (*.json) in this folder")
    if answer_methods is not None and (isinstance(answer_methods, str) or not all(
            isinstance(m, str) and m for m in answer_methods)):
        raise ValueError(f"data.answer_methods must be a list of method names (e.g. [DFS_woFilter_w2]) "
                         f"or null, got {answer_methods!r}")
    method_of = {file: answer_file_name(file.name)[1] for file in files}
    kept = [file for file in files if answer_methods is None
            or any(method_matches(method_of[file], m) for m in answer_methods)]
    if report is not None:
        report.update({"folder": str(folder), "files_found": len(files), "files_kept": len(kept),
                       "methods_found": dict(sorted(Counter(method_of.values()).items())),
                       "methods_kept": dict(sorted(Counter(method_of[f] for f in kept).items())),
                       "answer_methods": None if answer_methods is None else list(answer_methods),
                       "sample": [str(f.relative_to(folder)) for f in kept[:ANSWER_SAMPLE]]})
    if not kept:
        raise FileNotFoundError(
            f"{folder}: no answer file of the methods {list(answer_methods)} (data.answer_methods); "
            f"the folder's {len(files)} files have the methods {sorted(set(method_of.values()))}")
    # A query is its group folder's name and its id: G1_answer/10_... and G2_answer/10_... are two
    # queries, while StableToolBench's answer/<system>/G1_instruction/588_<method>.json files of two
    # systems or methods answer the same one.
    first: dict[tuple, Path] = {}
    for file in kept:
        key = (file.parent.name, answer_file_name(file.name)[0])
        if key in first:
            other, names = first[key], [str(f.relative_to(folder)) for f in (first[key], file)]
            if method_of[other] != method_of[file]:
                # ToolBench's preprocess reads DFS_woFilter_w2 unless told otherwise (--method)
                pick = next((PREPROCESS_METHOD for f in (other, file) if method_matches(method_of[f], PREPROCESS_METHOD)),
                            method_of[file])
                fix = (f"set data.answer_methods to the one method to read, e.g. [{pick}] "
                       f"(methods here: {method_of[other]}, {method_of[file]})")
            else:
                fix = (f"both are method {method_of[file]}: point data.train_path at one system's folder "
                       f"({other.parent.parent.name} or {file.parent.parent.name})")
            raise DataError(folder, f"query id {key[1]!r} of {key[0]}", "(file name)", "duplicate_query",
                            f"two answer files for the same query, {names[0]} and {names[1]}, so its "
                            f"records would be read twice; {fix}")
        first[key] = file
    return kept


def iter_records(path: Path, answer_methods=None, report: dict | None = None
                 ) -> Iterator[tuple[str, object, dict | None, tuple | None]]:
    """Yield (file, where, record, bad) from a JSON list, a JSONL file or a folder of answer files.

    `record` is None where there is none: then `bad` is (reason, field, message) for broken input,
    or (reason, None, None) for an entry that ToolBench's own preprocessing skips. A folder's files
    are those `answer_files(path, answer_methods)` picks; `report`, when given, is filled with the
    files read: `form` ("answer folder", "json list" or "jsonl"), `files_found`, `files_kept`,
    `sample`, and for a folder what answer_files reports.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training data not found: {path} (set data.train_path in the profile)")
    if report is not None and not path.is_dir():
        report.update({"form": "jsonl" if path.suffix == ".jsonl" else "json list",
                       "files_found": 1, "files_kept": 1, "sample": [path.name]})
    if path.is_dir():
        if report is not None:
            report["form"] = "answer folder"
        for file in answer_files(path, answer_methods, report):
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


def first_record(path: Path, answer_methods=None) -> tuple[str, object, dict]:
    """(file, where, record) of the first record of the training data, as read and not yet checked;
    entries that ToolBench's own preprocessing skips (or that are not JSON) are passed over."""
    for file, where, record, _ in iter_records(path, answer_methods):
        if record is not None:
            return file, where, record
    raise DataError(path, "(all)", "(file)", "no_records", "no record in the training data")


def outline(record: dict, width: int = 90) -> str:
    """A record to read: its id, then one line per turn with its index, role, length and the start
    of its value (as a Python string, so newlines show). A ToolBench system prompt alone runs to
    thousands of characters, so whole values would bury the turns."""
    lines = [f"id: {record['id']!r}"]
    for i, turn in enumerate(record["conversations"]):
        value = turn["value"]
        shown = repr(value if len(value) <= width else value[:width] + "...")
        lines.append(f"  [{i}] {turn['from']:<9} {len(value):>6,} chars  {shown}")
    return "\n".join(lines)


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


def iter_valid_records(path: Path, on_bad_record: str, dropped: Counter, answer_methods=None,
                       report: dict | None = None) -> Iterator[dict]:
    """Records that pass check_record; bad ones raise DataError, or are counted in `dropped` (skip).
    `answer_methods` and `report` as iter_records takes them."""
    if on_bad_record not in ("raise", "skip"):
        raise ValueError(f"data.on_bad_record must be 'raise' or 'skip', got {on_bad_record!r}")
    for file, where, record, bad in iter_records(path, answer_methods, report):
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
