"""Append-only JSONL: how the stages add records to the files that hold their finished work.

A run can be killed at any instant, and hours of GPU work or paid judge requests sit in these files:
`append_jsonl` / `JsonlAppender` cut a torn last line before appending (each record flushed and
fsynced), and `read_jsonl` skips one. Their folders are kept by lib/common/resume.py (docs/stages.md,
"Interrupting and resuming").
"""
from __future__ import annotations

import json
import os
from pathlib import Path


class JsonlError(ValueError):
    """A line of a JSONL file that is not a JSON record (not the torn last line)."""


def _torn_tail_offset(path: Path) -> int | None:
    """Where the file's torn last line starts, or None when it ends on a complete line."""
    size = path.stat().st_size
    if size == 0:
        return None
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return None
        # Scan back to the last newline: the fragment after it is what a crash left half-written.
        block, end = 1 << 16, size
        while end > 0:
            start = max(0, end - block)
            fh.seek(start)
            chunk = fh.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                return start + cut + 1
            end = start
        return 0


def cut_torn_tail(path) -> int:
    """Remove a torn last line from `path`; returns how many bytes were cut (0: none)."""
    path = Path(path)
    if not path.exists():
        return 0
    offset = _torn_tail_offset(path)
    if offset is None:
        return 0
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(offset)
    return size - offset


class JsonlAppender:
    """Appends records to one JSONL file; use as a context manager or call `close()`."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.cut = cut_torn_tail(self.path)
        self.fh = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def append_jsonl(path, record: dict) -> None:
    """Append one record (opens, cuts a torn tail, writes, fsyncs, closes)."""
    with JsonlAppender(path) as out:
        out.write(record)


def read_jsonl(path, on_bad=None) -> list[dict]:
    """Every complete record of `path` ([] when it does not exist). A bad line that is not the torn
    last one raises JsonlError, or, with `on_bad(message)`, is reported there and skipped (for a
    cache, whose lost lines are only work to redo)."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    torn = not raw.endswith(b"\n")
    records = []
    for number, line in enumerate(lines, 1):
        if torn and number == len(lines):
            break           # no newline yet: the write was cut short (the next append removes it)
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            message = f"{path}: line {number} is not a JSON record ({err.msg})"
            if on_bad is None:
                raise JsonlError(message) from None
            on_bad(message)
    return records


def rewrite_jsonl(path, records: list[dict]) -> None:
    """Replace the file's records at once (write beside it, then rename), e.g. to trim a log back
    to the checkpoint a run resumes from; a crash leaves the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records),
                   encoding="utf-8")
    os.replace(tmp, path)
