"""lib.models.served (the model server stage 03 starts: command lines, start, wait, stop) and
backends.ServedBackend: the same trajectories as the in-process backend from a real `transformers
serve`, and a server that dies mid-run loses no finished query."""
import json
import os
import re
import sys
import time

import pytest

from conftest import LoopbackServer, chat_completion
from lib.common import config
from lib.infer import inference
from lib.models import backends, served
from lib.toolbench import offline_env, trajectories

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


def test_the_preflight_row_checks_the_server_command_not_the_server(tmp_path, monkeypatch):
    from lib.pipeline import service_checks

    cfg = config.load("smoke", {"output_dir": str(tmp_path), "inference.backend": "openai",
                                "inference.serve": "transformers"})
    row = service_checks.backend_row(cfg, probe=True)
    assert (row.status, row.key) == ("ok", "inference.serve") and "transformers serve on" in row.detail
    assert "trained by stage 02" in row.detail
    row = service_checks.backend_row(config.derive(cfg, {"inference.model_dir": str(tmp_path / "none")}), probe=True)
    assert row.status == "missing" and row.key == "inference.model_dir"
    monkeypatch.setattr(served.shutil, "which", lambda name: None)         # a machine without vLLM
    monkeypatch.setattr(served.sys, "executable", "/nowhere/bin/python")
    row = service_checks.backend_row(config.derive(cfg, {"inference.serve": "vllm"}), probe=True)
    assert row.status == "missing" and "vllm is not installed" in row.detail


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


# ---------------------------------------------------------------------------------------------
# ServedBackend's requests and a server that stops answering mid-run, over loopback (no model).
# ---------------------------------------------------------------------------------------------

class Stub:
    """What ServedBackend asks of its server: the URLs, the model's name, a state, a log."""

    def __init__(self, url, log):
        self.url, self.base_url, self.model, self.name, self.log = url, url + "/v1", "/served/model", "transformers serve", log
        self.users = 1

    def state(self):
        return "exited with code -9"

    def log_lines(self):
        return f"last lines of {self.log}:\n  engine died"

    def stop(self):
        pass


@pytest.fixture(scope="module")
def small_tokenizer():
    from lib.models import model as model_lib
    texts = ["Thought: call it\nAction: f\nAction Input: {}", "Function: {}", "System: You are"] * 30
    tok = model_lib.train_tokenizer(texts, 300)
    tok.chat_template = config.load("smoke").model.chat_template
    return tok


def test_served_requests_ask_for_the_in_process_prompt_cut_and_sampling(small_tokenizer, tmp_path):
    conversation = [{"role": "system", "content": "You are " * 50}, {"role": "user", "content": "hi"}]
    with LoopbackServer(lambda path, headers, body: (200, chat_completion(body["model"], "x\nFunction: y", 3))) as srv:
        backend = backends.ServedBackend(Stub(srv.url, tmp_path / "s.log"), small_tokenizer, 64, 16, 0.0, seed=5)
        generation = backend.generate([conversation])[0]
        greedy = srv.requests[-1][2]
        backends.ServedBackend(Stub(srv.url, tmp_path / "s.log"), small_tokenizer, 64, 16, 0.1, 5).generate([conversation])
        sampled = srv.requests[-1][2]
        backends.ServedBackend(Stub(srv.url, tmp_path / "s.log"), small_tokenizer, 64, 16, 0.1, 5, kind="vllm").generate(
            [conversation])
        vllm = srv.requests[-1][2]
    assert (generation.text, generation.tokens, generation.truncated) == ("x", 3, True)   # cut at the next turn
    assert backend.prompt_tokens(conversation) > backend.max_prompt == 64 - 16
    assert greedy["chat_template_kwargs"] == {"truncation": True, "max_length": 48} and "generation_config" not in greedy
    assert greedy["model"] == "/served/model" and greedy["max_tokens"] == 16 and greedy["seed"] == 5
    assert json.loads(sampled["generation_config"]) == {"do_sample": True, "top_k": 0, "top_p": 1.0}
    assert vllm["truncate_prompt_tokens"] == 48 and "chat_template_kwargs" not in vllm
    assert backend.render(conversation) == small_tokenizer.apply_chat_template(conversation, add_generation_prompt=True,
                                                                               tokenize=False)


def test_a_server_that_stops_answering_stops_the_stage_and_a_rerun_continues(small_tokenizer, tmp_path):
    """Item 5 of the issue, without a model: the endpoint answers until query 2 has its answer, then
    fails (503, as transformers serve answers when its model's process died). The finished queries
    stay in the file, the error names the server and its state, and a rerun continues from them."""
    from test_inference import ANSWER, CW, query, step

    state = {"up": True, "answered": set()}

    def respond(path, headers, body):
        if not state["up"]:
            return 503, {"error": "engine_dead"}
        qid = re.search(r"q\d+", body["messages"][1]["content"]).group()
        if len(body["messages"]) == 2:
            return 200, chat_completion(body["model"], step(CW, {"city": "Paris"}), 4)
        state["answered"].add(qid)
        if qid == "q2":
            state["up"] = False
        return 200, chat_completion(body["model"], ANSWER, 4)

    rows = [{"category": "Weather", "tool_name": "Weather API!", "api_name": "Current Weather",
             "arguments": {"city": "Paris"}, "response": {"temp": 21}}]
    (tmp_path / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = offline_env.OfflineToolEnv(tmp_path / "responses.jsonl")
    queries = [query(i) for i in range(5)]
    for q in queries:
        q.text = f"weather for q{q.query_id}"
    path = tmp_path / "G1_instruction.jsonl"
    how = config.load("smoke", {"inference.batch_size": 1}).inference
    with LoopbackServer(respond) as srv:
        backend = backends.ServedBackend(Stub(srv.url, tmp_path / "s.log"), small_tokenizer, 2048, 16, 0.0)
        backend.client = backend.client.with_options(max_retries=0)
        with pytest.raises(backends.EndpointUnavailable) as err:
            inference.run_group(queries, backend, env, path, how)
        message = str(err.value)
        assert f"transformers serve at {srv.url} does not answer (InternalServerError" in message
        assert "exited with code -9" in message and "engine died" in message
        assert f"the queries finished before (3 in this run) are kept in {path}" in message
        assert "a rerun continues" in message
        assert [l["query_id"] for l in trajectories.read(path, partial=True)] == [0, 1, 2]
        state["up"] = True
        counters = inference.run_group(queries, backend, env, path, how)
    assert (counters["skipped"], counters["ran"]) == (3, 2)
    assert sorted(l["query_id"] for l in trajectories.read(path, partial=True)) == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------
# A real `transformers serve` on a model folder: the in-process trajectories, and a crash mid-run.
# ---------------------------------------------------------------------------------------------

TRAIN_STEPS = 120       # seconds on 2 cores: enough for clear greedy choices and some turns ended at eos


@pytest.fixture(scope="module")
def served_setup(tmp_path_factory):
    """The sample's test queries and recorded responses, and a model folder as stage 02 leaves one:
    a tiny OPT (1,024 positions, so later prompts are cut) briefly trained on the sample's
    conversations, so that its turns end at eos and its greedy choices are clear ones, saved with its
    tokenizer and the profile's chat template."""
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    from lib.models import model as model_lib
    from lib.toolbench import sample

    root = tmp_path_factory.mktemp("served")
    sample.generate(root / "sample", seed=3, train_queries=40, queries_per_group=3)
    template = config.load("smoke").model.chat_template
    records = json.loads(next((root / "sample" / "train").glob("*.json")).read_text())
    conversations = [[{"role": t["from"], "content": t["value"]} for t in r["conversations"]] for r in records]
    tok = model_lib.train_tokenizer([m["content"] for c in conversations for m in c], 1024)
    tok.chat_template = template
    torch.manual_seed(0)
    model = OPTForCausalLM(OPTConfig(vocab_size=len(tok), hidden_size=64, ffn_dim=256, num_hidden_layers=2,
                                     num_attention_heads=4, word_embed_proj_dim=64, max_position_embeddings=1024,
                                     dropout=0.0, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                     eos_token_id=tok.eos_token_id))
    texts = [tok(tok.apply_chat_template(c, tokenize=False), add_special_tokens=False)["input_ids"][-1024:]
             for c in conversations]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for k in range(TRAIN_STEPS):
        ids = torch.tensor([texts[k % len(texts)]])
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model_lib.save(model.eval(), tok, root / "model")
    return root


def stage_cfg(root, out, changes=None):
    return config.load("smoke", {
        "output_dir": str(out), "data.test_dir": str(root / "sample" / "test_instruction"),
        "data.toolenv_dir": str(root / "sample" / "toolenv"), "inference.groups": ["G1_instruction", "G1_tool"],
        "inference.model_dir": str(root / "model"), "inference.temperature": 0, "inference.max_iterations": 4,
        "inference.max_new_tokens": 64, "inference.untrained_run": False, **(changes or {})})


def lines_by_id(out):
    return {(l["group"], l["query_id"]): l for p in (out / "trajectories").glob("*.jsonl")
            for l in trajectories.read(p, partial=True)}


class KillWhenKept:
    """The served backend as stage 03 drives it, that kills its server's process group (kill -9: a
    crash, not a stop) once a query's line is in the trajectories."""

    def __init__(self, backend, out):
        self.backend, self.out, self.fingerprint = backend, out, backend.fingerprint

    def generate(self, conversations):
        if self.backend.server.running() and lines_by_id(self.out):
            os.killpg(self.backend.server.process.pid, 9)
        return self.backend.generate(conversations)


def test_transformers_serve_gives_the_in_process_trajectories_and_a_crash_loses_nothing(served_setup, tmp_path):
    root = served_setup
    # In process, with the smoke profile's own batching (8 rows, key/value cache reused, 16-token chunks).
    in_process = stage_cfg(root, tmp_path / "hf")
    inference.run(in_process, log=None)
    reference = lines_by_id(tmp_path / "hf")
    assert len(reference) == 6 and sum(l["prompts_truncated"] for l in reference.values()) > 0
    assert any(l["tokens_generated"] < 64 * l["total_steps"] for l in reference.values())     # a turn ended at eos

    out = tmp_path / "served"
    cfg = stage_cfg(root, out, {"inference.backend": "openai", "inference.serve": "transformers",
                                "inference.batch_size": 2})
    backend = backends.make_backend(cfg)
    server = backend.server
    assert server.running() and server.cmd[1:3] == ["serve", server.model]
    hf = backends.load_hf_backend(in_process)
    messages = inference.load_test_queries(cfg)["G1_instruction"][0].start()
    assert backend.render(messages) == hf.render(messages)
    assert backend.prompt_tokens(messages) == hf.prompt_tokens(messages) and backend.max_prompt == hf.max_prompt

    with pytest.raises(backends.EndpointUnavailable) as err:
        inference.run(cfg, backend=KillWhenKept(backend, out), log=None)
    message = str(err.value)
    assert f"transformers serve at {server.url} does not answer (APIConnectionError" in message
    assert "exited with code -9" in message and str(out / "served-transformers.log") in message
    assert "are kept in" in message and "a rerun continues" in message
    kept = lines_by_id(out)
    assert 0 < len(kept) < 6 and all(kept[k] == reference[k] for k in kept)
    backend.close()

    # The rerun starts a server of its own, continues from the kept queries, and stops it.
    summary = inference.run(cfg, log=None)
    assert (summary["total"]["skipped_done"], summary["total"]["ran_now"]) == (len(kept), 6 - len(kept))
    served_lines = lines_by_id(out)
    assert sorted(served_lines) == sorted(reference)
    for key in reference:       # line by line: every step, observation, token count and cut prompt
        assert served_lines[key] == reference[key], key
    assert not served._SHARED and not server.running()

