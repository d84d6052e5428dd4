"""Stage 03's trajectory files (docs/formats.md): one trajectory per line, read and checked field by
field, as stage 03 resumes from them and stage 04 judges them."""
from __future__ import annotations

import json
from pathlib import Path

REQUIRED_FIELDS = {"query_id": (int, str), "query": str, "finish_type": str, "final_answer": str,
                   "steps": list}
STEP_FIELDS = ("action", "action_input", "observation")


class TrajectoryError(ValueError):
    """A trajectory line that cannot be used; names file, line, query id and field."""


def _bad(path, line, qid, field, why) -> TrajectoryError:
    return TrajectoryError(f"{path}, line {line}, query_id {qid!r}: field '{field}' {why}")


def _check(rec, path, line_no) -> None:
    if not isinstance(rec, dict):
        raise _bad(path, line_no, None, "<line>", "is not a JSON object")
    qid = rec.get("query_id")
    for field, kind in REQUIRED_FIELDS.items():
        if field not in rec:
            raise _bad(path, line_no, qid, field, "is missing")
        if not isinstance(rec[field], kind) or isinstance(rec[field], bool):
            raise _bad(path, line_no, qid, field, f"has type {type(rec[field]).__name__}")
    for i, step in enumerate(rec["steps"]):
        if not isinstance(step, dict):
            raise _bad(path, line_no, qid, f"steps[{i}]", "is not an object")
        for field in STEP_FIELDS:
            if not isinstance(step.get(field, ""), str):
                raise _bad(path, line_no, qid, f"steps[{i}].{field}", "is not a string")


def read(path: str | Path, partial: bool = False) -> list[dict]:
    """One trajectory per line; raises TrajectoryError naming file, line, query id and field. A
    query id twice in the file is refused (naming both lines): judging both would count the query
    twice in the pass rate, judging one would silently pick a run.

    `partial`: the file of a stage 03 that may still be running or was stopped, read to resume or
    report it: a missing file is [] and a last line without its newline (a write cut short,
    lib.common.store's next append removes it) is not a line. Otherwise (stage 04: a finished
    group) a missing file raises FileNotFoundError and a torn last line says stage 03 was stopped."""
    path = Path(path)
    if partial and not path.exists():
        return []
    # Bytes, split on newlines: a write cut short may end inside a character, which is no line.
    lines = path.read_bytes().split(b"\n")
    rows, first_line = [], {}
    for line_no, text in enumerate(lines, 1):
        torn = line_no == len(lines)        # after the last newline: empty, or a write cut short
        if not text.strip() or (partial and torn):
            continue
        try:
            rec = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            cut = ("; the last line is cut short: stage 03 was stopped mid-write, rerun it to finish "
                   "the group") if torn else ""
            raise _bad(path, line_no, None, "<line>", f"is not valid JSON ({getattr(err, 'msg', 'not UTF-8')}){cut}") from None
        _check(rec, path, line_no)
        qid = rec["query_id"]
        if str(qid) in first_line:
            raise TrajectoryError(f"{path}: query_id {qid!r} appears twice, on lines "
                                  f"{first_line[str(qid)]} and {line_no}; stage 04 judges each "
                                  f"query once: remove one of the two lines")
        first_line[str(qid)] = line_no
        rows.append(rec)
    return rows
