"""What is finished and what resumes: fingerprints, marks, set-aside runs, one writer a folder.

A run can be killed at any instant, rerun with other settings, or started twice by mistake, and
hours of GPU work or paid judge requests sit in its folders. So every stage keeps them one way:
- `one_writer` / `exclusive`: a stage holds its output folder's lock for its whole run; a second run
  on the same folder fails at once, naming the process that holds it (the OS releases the lock when
  that process dies, so a killed run leaves no stale lock behind). A process that holds a lock and
  starts others to do the writing (stage 02's `accelerate launch`) hands it down (`handed_down`).
- `fingerprint` / `file_digest`: the short name of what a folder is made from (settings, inputs).
- `mark`, `mark_of`, `is_marked`, `unmark`: a small file holding a fingerprint: a done marker
  (outputs/<profile>/stages/NN.done) or the stamp of a folder (checkpoints/run_fingerprint.txt).
- `set_aside`: a folder of another run (and the files that go with it) moves to
  `<name>.<label>.<time>/` beside it. Nothing is ever deleted; the log says where it went.
- `resumable` (a folder stamped with its key in RUN_KEY.json, brought back when set aside earlier)
  and `restart_unless` (a folder stamped with a mark): resume the same run, set any other aside.
  Both stamp only under the folder's lock, and a stage calls them only after checking every
  setting and input, so a failing run never moves a finished one.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import time
from pathlib import Path

RUN_KEY = "RUN_KEY.json"
# The pid of a process that holds folder locks for the processes it starts (handed_down).
HOLDER_ENV = "TOOLSFT_LOCK_HOLDER"

# Folders this process holds the lock of: stamping one that is not held is a bug (two writers).
_held: set[Path] = set()


class FolderBusy(RuntimeError):
    """Another process is writing the same output folder."""


def fingerprint(key) -> str:
    """16 hex digits of sha256 over `key` as sorted JSON: equal keys, equal fingerprints."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(*paths) -> str:
    """sha256 over the given files' bytes (folders: their files, sorted), to tell inputs apart."""
    digest = hashlib.sha256()
    for p in map(Path, paths):
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                digest.update(f.name.encode())
                with open(f, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        digest.update(chunk)
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- marks


def mark(path, digest: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(digest + "\n")


def mark_of(path) -> str | None:
    path = Path(path)
    return path.read_text().strip() if path.exists() else None


def is_marked(path, digest: str) -> bool:
    return mark_of(path) == digest


def unmark(path) -> None:
    Path(path).unlink(missing_ok=True)


# ---------------------------------------------------------------- one writer a folder


@contextlib.contextmanager
def exclusive(folder, what: str):
    """Hold `.<folder>.lock` beside the output folder while writing it; FolderBusy if another holds
    it, unless that is the process that started this one to write it (handed_down)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = folder.with_name(f".{folder.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    inherited = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
        inherited = _holder_is_ours(holder)
        if not inherited:
            os.close(fd)
            raise FolderBusy(f"{folder} is being written by another run ({holder}); wait for it to "
                             f"finish or stop that process, then run again") from None
    held = folder.resolve()
    try:
        if not inherited:       # the holder's line stays: it names the run
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}, {what}, since {time.strftime('%H:%M:%S')}\n".encode(), 0)
        _held.add(held)
        yield folder
    finally:
        _held.discard(held)
        os.close(fd)        # releases the lock


def one_writer(what: str, folder_of):
    """Decorate a stage so that it runs holding exclusive(folder_of(*its arguments), what)."""
    def decorate(stage):
        @functools.wraps(stage)
        def locked(*args, **kwargs):
            with exclusive(folder_of(*args, **kwargs), what):
                return stage(*args, **kwargs)
        return locked
    return decorate


def handed_down() -> dict[str, str]:
    """The environment for processes this one starts to write the folders whose locks it holds:
    there, `exclusive` on such a folder finds the lock held by this process and goes ahead
    (accelerate launch's processes cannot inherit the lock itself: it goes with an open file)."""
    return {HOLDER_ENV: str(os.getpid())}


def _holder_is_ours(holder: str) -> bool:
    """Is the lock's holder the process that started this one for it (handed_down)? Among several
    started processes only the one of rank 0 (RANK, as torchrun numbers them) may take it up."""
    pid = os.environ.get(HOLDER_ENV)
    return bool(pid) and holder.startswith(f"pid {pid},") and os.environ.get("RANK", "0") == "0"


def _check_held(folder: Path) -> None:
    resolved = folder.resolve()
    if not any(resolved == h or h in resolved.parents for h in _held):
        raise RuntimeError(f"{folder}: stamped without holding its lock (resume.exclusive / one_writer)")


# ---------------------------------------------------------------- resume or set aside


def set_aside(folder, label: str, also=()) -> Path | None:
    """Move `folder` to `<name>.<label>.<UTC time>/` beside it, with the files or folders in `also`
    moved into it, and return the new path; None when there was nothing to move. Never deletes."""
    folder = Path(folder)
    also = [Path(p) for p in also if Path(p).exists()]
    has_files = folder.exists() and any(folder.iterdir())
    if not has_files and not also:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = folder.with_name(f"{folder.name}.{label}.{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}.{label}.{stamp}-{n}")
    if has_files:
        folder.rename(target)
    else:
        target.mkdir(parents=True)
    for item in also:
        item.rename(target / item.name)
    return target


def resumable(folder, key: dict, log=print) -> Path:
    """`folder` for an append-only, resumable stage, stamped with `key` (what its contents are made
    from: model, settings, inputs) in RUN_KEY.json.

    The same key resumes; with another key the old folder is set aside whole as
    <name>.run-<its key digest>.<time>/, and a folder set aside earlier with this very key is
    brought back to resume (going back to earlier settings costs no rerun); else the stage starts
    afresh instead of mixing results of two different runs."""
    folder, log = Path(folder), log or (lambda *a, **k: None)
    _check_held(folder)
    stamp, text = folder / RUN_KEY, json.dumps(key, sort_keys=True, indent=1, default=str)
    if folder.exists() and any(folder.iterdir()) and (not stamp.exists() or stamp.read_text() != text):
        old = hashlib.sha256(stamp.read_bytes()).hexdigest()[:8] if stamp.exists() else "unkeyed"
        moved = set_aside(folder, f"run-{old}")
        log(f"{folder} holds a run with other settings or inputs: set aside as {moved} "
            f"(its {RUN_KEY} says what it was made from)")
    if not folder.exists() or not any(folder.iterdir()):
        earlier = [p for p in folder.parent.glob(f"{folder.name}.run-*")
                   if (p / RUN_KEY).exists() and (p / RUN_KEY).read_text() == text]
        if earlier:
            back = max(earlier, key=lambda p: p.stat().st_mtime)
            if folder.exists():
                folder.rmdir()      # empty: nothing lost
            back.rename(folder)
            log(f"{back} was made with these same settings and inputs: brought back as {folder} to resume")
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(text)
    return folder


def restart_unless(folder, digest: str, stamp: str, also=(), why: str | None = None,
                   log=print) -> bool:
    """Keep `folder` when its `stamp` mark holds `digest` and there is no `why` (a reason to
    start over all the same): return False, resume there. Otherwise set it aside whole as
    <name>.run-<its mark>.<time>/, with the files and folders in `also` moved into it, stamp the
    empty folder and return True (a fresh start)."""
    folder = Path(folder)
    _check_held(folder)
    old = mark_of(folder / stamp)
    if old == digest and why is None:
        return False
    moved = set_aside(folder, f"run-{old or 'unkeyed'}", also=also)
    if moved:
        reason = why if old == digest else "it was made with other settings or data"
        log(f"{folder}: the run there is set aside as {moved} ({reason}); starting afresh")
    mark(folder / stamp, digest)
    return True
