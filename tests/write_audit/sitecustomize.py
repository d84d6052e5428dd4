"""Which process writes which file, and a kill at a chosen write: for the tests of stage 02 in
several processes (tests/test_train.py), which put this folder on PYTHONPATH. Python's `site` imports
`sitecustomize` in every process it starts, so the launched processes (accelerate launch's own and
each rank) audit themselves without a line of test code in lib/.

WRITE_AUDIT_DIR set: each process appends a line to WRITE_AUDIT_DIR/<pid>.jsonl for every file it
opens for writing, renames or removes under WRITE_AUDIT_ROOT: {"rank": RANK (null: not a rank), "event",
"path"}. KILL_AT=<file name>:<n>: rank 0 kills itself with SIGKILL (as the OOM killer or a lost machine
would) when it opens that file for writing the n-th time.
"""
import json
import os
import signal
import sys


def _install(folder: str, root: str, kill_at: str) -> None:
    rank = os.environ.get("RANK")
    # os.write on a descriptor opened before the hook: writing the audit raises no audit event.
    out = os.open(os.path.join(folder, f"{os.getpid()}.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    name, _, times = kill_at.partition(":")
    opened = {"n": 0}
    writes = os.O_WRONLY | os.O_RDWR

    def under_root(path):
        if isinstance(path, int) or path is None:
            return None
        path = os.path.abspath(os.fsdecode(path))
        return path if path.startswith(root) else None

    def record(event, path):
        os.write(out, (json.dumps({"rank": None if rank is None else int(rank), "event": event,
                                   "path": os.path.relpath(path, root)}) + "\n").encode())

    def hook(event, args):
        if event == "open":
            path = under_root(args[0])
            if path is None or not (args[2] or 0) & writes:
                return
            record("open", path)
            if rank == "0" and name and os.path.basename(path) == name:
                opened["n"] += 1
                if opened["n"] == int(times):
                    os.kill(os.getpid(), signal.SIGKILL)
        elif event in ("os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.mkdir"):
            path = under_root(args[0])
            if path is not None:
                record(event, path)

    sys.addaudithook(hook)


if os.environ.get("WRITE_AUDIT_DIR"):
    _install(os.environ["WRITE_AUDIT_DIR"], os.path.abspath(os.environ["WRITE_AUDIT_ROOT"]),
             os.environ.get("KILL_AT", ""))
