"""Stage 02 in `accelerate.num_processes` processes: `accelerate launch` of `python -m lib.train.train`
with the profile's accelerate config file, started by the process that asked for the stage (the
notebook's kernel, the command line) and returning its train_summary.json.

That process first takes the checkpoints folder's lock, so a second run on the profile fails at once,
before any process starts; it hands the lock down to the launched main process (resume.handed_down,
lib/train/ranks.py) and holds it until they have all ended. The launched processes end with it
(Linux: the kernel sends them SIGTERM when it dies), so none writes on without the lock.
"""
from __future__ import annotations

import codecs
import collections
import json
import os
import re
import shlex
import signal
import subprocess
import sys

from lib.common import config, resume
from lib.common.settings import Profile


class LaunchFailed(RuntimeError):
    """A launched process of stage 02 failed; the message ends with the last lines they printed."""


def wanted(cfg: Profile) -> bool:
    """More than one process asked for, and this process is not already one of a launch's."""
    return cfg.accelerate.num_processes > 1 and not launched()


def launched() -> bool:
    """Is this one of several processes started by accelerate launch (torchrun names the world's size)?"""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def command(cfg: Profile) -> list[str]:
    """accelerate launch (its CLI, run by this Python) of stage 02 on the same profile and overrides."""
    return [sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(config.path(cfg, cfg.accelerate.config_file)),
            "--num_processes", str(cfg.accelerate.num_processes),
            # A free port of this machine: two profiles may train at once.
            "--main_process_port", "0",
            "-m", "lib.train.train", *config.launch_arguments(cfg)]


def train(cfg: Profile, log=print) -> dict:
    """Run stage 02 in cfg.accelerate.num_processes processes; its train_summary.json."""
    out = config.output_dir(cfg)
    what = f"stage 02 training, accelerate launch of {cfg.accelerate.num_processes} processes"
    with resume.exclusive(out / "checkpoints", what):
        cmd = command(cfg)
        log("launching: " + shlex.join(["accelerate", "launch", *cmd[3:]]))
        env = {**os.environ, **resume.handed_down(), "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(config.ROOT), os.environ.get("PYTHONPATH")]))}
        run(cmd, env, log)
    return json.loads((out / "train_summary.json").read_text())


def run(cmd: list[str], env: dict, log) -> None:
    """Run `cmd`, passing its output on to `log` line by line; LaunchFailed with its last lines
    when it fails. Interrupted (a notebook's stop button), it stops the processes first."""
    process = subprocess.Popen(cmd, env=env, cwd=config.ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, preexec_fn=_ending_with_parent())
    last = collections.deque(maxlen=30)
    try:
        for line in relay(process.stdout):
            last.append(line)
            log(line)
        code = process.wait()
    finally:
        if process.poll() is None:
            # accelerate launch ends its processes on SIGTERM (torchrun's agent stops its workers).
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if code != 0:
        raise LaunchFailed(f"stage 02 failed in its launched processes (exit code {code}): "
                           f"{shlex.join(cmd)}\nits last lines:\n" + "\n".join(last))


def relay(pipe):
    """The lines of a byte stream as they come. Progress bars redraw their line with carriage
    returns: each state is a line of its own here, as lib.common.progress writes for a non-print log."""
    decoder, pending = codecs.getincrementaldecoder("utf-8")(errors="replace"), ""
    for chunk in iter(lambda: pipe.read1(1 << 16), b""):
        *lines, pending = re.split(r"\r\n|\r|\n", pending + decoder.decode(chunk))
        yield from (line for line in lines if line.strip())
    pending += decoder.decode(b"", final=True)
    if pending.strip():
        yield pending


def _ending_with_parent():
    """What the launched process runs before it starts: have the kernel stop it when this process
    dies (Linux's PR_SET_PDEATHSIG), so a killed kernel leaves no run writing without the lock.
    Resolved here, in the parent: between fork and exec the child should only call, not import."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGTERM)        # 1: PR_SET_PDEATHSIG
