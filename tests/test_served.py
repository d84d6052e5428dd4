"""lib.models.served: the model server stage 03 starts (command lines, start, wait, stop)."""
import json
import os
import sys
import time

import pytest

from lib.common import config
from lib.models import served

PY = sys.executable


# ---------------------------------------------------------------------------------------------
# Command lines, the serving folder, the profile's knobs: no server.
# ---------------------------------------------------------------------------------------------

def test_command_lines_for_transformers_serve_and_vllm(monkeypatch, tmp_path):
    monkeypatch.setattr(served, "executable", lambda name: name)
    assert served.command("transformers", tmp_path, 8123, "cpu", "float32", 7, ["--log-level", "warning"]) == [
        "transformers", "serve", str(tmp_path), "--host", "127.0.0.1", "--port", "8123", "--device", "cpu",
        "--dtype", "float32", "--default-seed", "7", "--log-level", "warning"]
    # vLLM (a GPU; not installed here, so only its command line is checked): prefix caching on, as
    # every ReAct step extends the previous prompt; the folder's sampling defaults left out.
    assert served.command("vllm", tmp_path, 8123, "cuda", "float32", 7, ["--gpu-memory-utilization", 0.5]) == [
        "vllm", "serve", str(tmp_path), "--host", "127.0.0.1", "--port", "8123", "--enable-prefix-caching",
        "--generation-config", "vllm", "--dtype", "float32", "--seed", "7", "--gpu-memory-utilization", "0.5"]
    with pytest.raises(ValueError, match="inference.serve must be one of transformers, vllm"):
        served.command("tgi", tmp_path, 1)


def test_a_missing_server_command_says_what_to_install(monkeypatch):
    monkeypatch.setattr(served.shutil, "which", lambda name: None)
    monkeypatch.setattr(served.sys, "executable", "/nowhere/bin/python")
    with pytest.raises(served.ServerFailed, match=r"vllm is not installed .*pip install vllm"):
        served.executable("vllm")
    with pytest.raises(served.ServerFailed, match=r"transformers\[serving\]"):
        served.executable("transformers")


def test_the_serving_folder_carries_the_profile_template_and_cuts_prompts_on_the_left(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "chat_template.jinja").write_text("an older template")
    (model / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "chat_template": "older"}))
    view = served.serving_folder(model, "{{ messages }}", tmp_path / "view")
    assert (view / "model.safetensors").is_symlink() and (view / "model.safetensors").read_bytes() == b"weights"
    assert (view / "chat_template.jinja").read_text() == "{{ messages }}"
    assert json.loads((view / "tokenizer_config.json").read_text()) == {"eos_token": "</s>", "truncation_side": "left"}
    assert (model / "chat_template.jinja").read_text() == "an older template"      # the model folder is untouched


def test_the_profile_names_the_server_only_for_the_openai_backend():
    cfg = config.load("smoke", {"inference.backend": "openai", "inference.serve": "transformers",
                                "inference.serve_args": ["--log-level", "warning"]})
    assert cfg.inference.serve == "transformers" and cfg.inference.serve_timeout_s == 600
    with pytest.raises(config.ConfigError, match="inference.serve starts .* set inference.backend: openai"):
        config.load("smoke", {"inference.serve": "transformers"})
    with pytest.raises(config.ConfigError, match="'inference.serve' must be one of transformers, vllm"):
        config.load("smoke", {"inference.backend": "openai", "inference.serve": "tgi"})


# ---------------------------------------------------------------------------------------------
# Start, wait, stop, with stand-in commands (no model).
# ---------------------------------------------------------------------------------------------

def test_a_server_that_exits_is_named_with_its_last_log_lines(tmp_path):
    cmd = [PY, "-c", "print('loading weights'); print('no model at /x', flush=True); raise SystemExit(3)"]
    with pytest.raises(served.ServerFailed) as err:
        served.ModelServer(cmd, served.free_port(), tmp_path / "s.log", timeout_s=30).start()
    message = str(err.value)
    assert "exited with code 3" in message and "command: " + " ".join(cmd) in message
    assert "loading weights" in message and "no model at /x" in message and str(tmp_path / "s.log") in message


def test_a_server_that_never_answers_times_out_and_is_stopped(tmp_path):
    cmd = [PY, "-c", "import time; print('still loading', flush=True); time.sleep(120)"]
    server = served.ModelServer(cmd, served.free_port(), tmp_path / "s.log", timeout_s=1)
    t0 = time.monotonic()
    with pytest.raises(served.ServerFailed, match=r"did not answer GET .*/health within 1 s \(inference.serve_timeout_s\)"
                                                  r"(.|\n)*still loading"):
        server.start()
    assert time.monotonic() - t0 < 20 and server.process is None and "stopped" in server.state()


def stand_in(tmp_path, port):
    """A server that answers GET /health 200, run from a shell as a child of its own: stopping it
    must end the whole process group, as for transformers serve's model process."""
    (tmp_path / "health").write_text("ok")
    return ["sh", "-c", f"{PY} -m http.server {port} --bind 127.0.0.1 --directory {tmp_path} & wait"]


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, RuntimeError])
def test_the_server_stops_however_the_block_ends(tmp_path, interrupt):
    port = served.free_port()
    with pytest.raises(interrupt):
        with served.ModelServer(stand_in(tmp_path, port), port, tmp_path / "s.log", timeout_s=30) as server:
            assert server.healthy() and server.running()
            pid = server.process.pid
            raise interrupt("stop")
    assert not server.healthy() and server.process is None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)       # nothing of its group is left

