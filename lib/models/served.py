"""The model server stage 03 starts itself (`inference.serve`): `transformers serve` (a CPU) or vLLM (a
GPU) as a subprocess on a free loopback port, on the model folder as the in-process backend loads
it, waited for until it answers, and stopped on every way out.

The server loads a view of the model folder (`serving_folder`): the folder's files linked, the
profile's chat template written beside them (the in-process backend renders with `model.chat_template`,
not whatever the folder carries) and the tokenizer set to cut a prompt on the left, as
HFBackend.encode keeps a too-long prompt's last tokens. lib/models/backends.py's ServedBackend talks to it.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

KINDS = ("transformers", "vllm")
HOST = "127.0.0.1"
LOG_LINES = 20          # the server's last log lines an error quotes


class ServerFailed(RuntimeError):
    """The model server did not start: it exited, or did not answer in time. The message names the
    command and quotes the server's last log lines."""


def executable(name: str) -> str:
    """A console script of this Python's environment (the venv the project runs in), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise ServerFailed(f"{name} is not installed in {Path(sys.executable).parent} nor on PATH"
                           + (": pip install vllm (a CUDA machine)" if name == "vllm" else
                              ": pip install 'transformers[serving]'"))
    return found


def free_port() -> int:
    """A TCP port nothing listens on now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


# Every piece of the command line is a knob of the profile (or the port found for it).
def command(kind: str, folder, port: int, device: str = "auto", dtype: str = "auto", seed: int | None = None,
            extra: list | None = None) -> list[str]:
    """The command line that serves `folder` on HOST:`port`.

    transformers serve: pinned to the folder, on the device and dtype the in-process backend would
    pick (lib.models.backends.inference_device), one `generate` per request as in-process (no
    --continuous-batching: its paged attention rounds otherwise). vLLM: prefix caching on, as every
    ReAct step's prompt extends the previous one; `--generation-config vllm` leaves out the folder's
    generation_config.json sampling defaults, so a request samples with temperature alone, as the
    in-process backend does (top_k 0, top_p 1)."""
    folder = str(folder)
    if kind == "transformers":
        cmd = [executable("transformers"), "serve", folder, "--host", HOST, "--port", str(port),
               "--device", device, "--dtype", dtype]
        if seed is not None:
            cmd += ["--default-seed", str(seed)]
    elif kind == "vllm":
        cmd = [executable("vllm"), "serve", folder, "--host", HOST, "--port", str(port),
               "--enable-prefix-caching", "--generation-config", "vllm", "--dtype", dtype]
        if seed is not None:
            cmd += ["--seed", str(seed)]
    else:
        raise ValueError(f"inference.serve must be one of {', '.join(KINDS)} or null, got {kind!r}")
    return cmd + [str(a) for a in extra or []]


def sampling_body(kind: str, temperature: float | None) -> dict:
    """What a request adds (`extra_body`) so that the server samples as OpenAI's API does at
    `temperature` (top_k off, top_p 1): transformers serve otherwise decodes as the folder's
    generation config says (greedy, for most); vLLM needs nothing (`--generation-config vllm`)."""
    if kind == "transformers" and temperature and temperature > 0:
        return {"generation_config": json.dumps({"do_sample": True, "top_k": 0, "top_p": 1.0})}
    return {}


def serving_folder(model_dir, chat_template: str | None, into) -> Path:
    """`into`, made a view of `model_dir` the server loads: every file linked, except the tokenizer's
    config, copied with truncation_side left (the server cuts a too-long prompt as HFBackend does,
    keeping its last tokens), and the chat template, written from `chat_template` (the profile's)."""
    model_dir, into = Path(model_dir).resolve(), Path(into)
    into.mkdir(parents=True, exist_ok=True)
    for path in model_dir.iterdir():
        if path.is_file() and path.name not in ("tokenizer_config.json", "chat_template.jinja"):
            (into / path.name).symlink_to(path)
    tokenizer_config = model_dir / "tokenizer_config.json"
    settings = json.loads(tokenizer_config.read_text()) if tokenizer_config.exists() else {}
    settings["truncation_side"] = "left"
    if chat_template is not None:
        settings.pop("chat_template", None)     # chat_template.jinja below is the one
        (into / "chat_template.jinja").write_text(chat_template, encoding="utf-8")
    elif (model_dir / "chat_template.jinja").exists():
        (into / "chat_template.jinja").symlink_to(model_dir / "chat_template.jinja")
    (into / "tokenizer_config.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
    return into


class ModelServer:
    """One server process: started by `start` (or `with`), which returns once GET /health answers
    200, and stopped by `stop`, which ends its whole process group (transformers serve runs the model
    in a child process, vLLM in several). Also stopped at interpreter exit (atexit), and, where
    util-linux's setpriv is there, when the process that started it dies without cleaning up
    (kill -9): a model server left behind holds its port and, on a GPU, most of its memory.
    Its output goes to `log_path`."""

    # The command and where it answers, its log, its time-out, and the names it goes by.
    def __init__(self, cmd: list[str], port: int, log_path, timeout_s: float = 600, name: str | None = None,
                 model: str | None = None):
        self.cmd, self.port, self.log_path, self.timeout_s = list(cmd), port, Path(log_path), timeout_s
        self.name = name or " ".join(Path(cmd[0]).name.split() + cmd[1:2])
        self.url = f"http://{HOST}:{port}"
        self.process: subprocess.Popen | None = None
        self.model = model          # the name requests give it: the folder it serves
        self.users = 0          # backends sharing it (lib.models.backends.ServedBackend)
        self.on_stop = []       # callables run once it has stopped (the serving folder's removal)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def start(self) -> "ModelServer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.cmd
        setpriv = shutil.which("setpriv")
        if setpriv and sys.platform.startswith("linux"):
            cmd = [setpriv, "--pdeathsig", "TERM", "--", *cmd]
        with open(self.log_path, "wb") as log:
            # Its own session: Ctrl+C in the terminal reaches this process, which stops the server
            # (with's exit, KeyboardInterrupt included), and stop() ends the whole group at once.
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        atexit.register(self.stop)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                raise ServerFailed(f"{self.name} exited with code {code} before it answered on {self.url}."
                                   f"\ncommand: {' '.join(self.cmd)}\n{self.log_lines()}")
            if self.healthy():
                return
            if time.monotonic() > deadline:
                raise ServerFailed(f"{self.name} did not answer GET {self.url}/health within {self.timeout_s:g} s "
                                   f"(inference.serve_timeout_s).\ncommand: {' '.join(self.cmd)}\n{self.log_lines()}")
            time.sleep(0.5)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """End the server's process group: SIGTERM, then SIGKILL to what is left after 15 s (the
        group outlives its leader while a child, the model's process, shuts down). Safe to call again."""
        process, self.process = self.process, None
        if process is not None:
            self._exit_code = process.poll()
            if not _signal_group(process.pid, signal.SIGTERM) or not _group_ends(process, 15):
                _signal_group(process.pid, signal.SIGKILL)
                _group_ends(process, 5)
            atexit.unregister(self.stop)
        while self.on_stop:
            self.on_stop.pop()()

    def state(self) -> str:
        """How the server is: running, or its exit code (for an error message)."""
        if self.process is None:
            code = getattr(self, "_exit_code", None)
            return "stopped" + (f" (it had exited with code {code})" if code is not None else "")
        code = self.process.poll()
        return f"running (pid {self.process.pid})" if code is None else f"exited with code {code}"

    def log_lines(self, n: int = LOG_LINES) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            lines = []
        return f"last {len(lines)} lines of {self.log_path}:\n" + "\n".join("  " + l for l in lines)

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_group(pgid: int, sig) -> bool:
    """Send `sig` to the process group; False when none of it is left."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def _group_ends(leader: subprocess.Popen, seconds: float) -> bool:
    """Wait until the leader has exited (reaped) and no process of its group is left."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if leader.poll() is not None and not _signal_group(leader.pid, 0):
            return True
        time.sleep(0.1)
    return False


_SHARED: dict[tuple, ModelServer] = {}


# Each argument is one the server's command line or its folder needs.
def shared(kind: str, model_dir, chat_template: str | None, log_path, device: str = "auto", dtype: str = "auto",
           seed: int | None = None, extra: list | None = None, timeout_s: float = 600) -> ModelServer:
    """The running server for this model folder and these settings that this process started
    already, else a new one on a free port (a notebook's walk-through and the stage it then runs
    share one: two vLLM servers on one GPU would each claim most of its memory). Each user calls
    `release`; the last one stops it."""
    key = (kind, str(Path(model_dir).resolve()), chat_template, device, dtype, seed, tuple(extra or ()))
    server = _SHARED.get(key)
    if server is None or not server.running():
        view = Path(tempfile.mkdtemp(prefix="served-model-"))
        port = free_port()
        server = ModelServer(command(kind, serving_folder(model_dir, chat_template, view / "model"), port,
                                     device, dtype, seed, extra), port, log_path, timeout_s,
                             name=f"{kind} serve", model=str(view / "model"))
        server.on_stop.append(lambda: shutil.rmtree(view, ignore_errors=True))
        server.on_stop.append(lambda: _SHARED.pop(key, None) if _SHARED.get(key) is server else None)
        server.start()
        _SHARED[key] = server
    server.users += 1
    return server


def release(server: ModelServer) -> None:
    """One user less; the server stops when none is left."""
    server.users -= 1
    if server.users <= 0:
        server.stop()
