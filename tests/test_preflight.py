"""lib.preflight: one table saying whether each input a profile needs is there. Fast, loopback only."""
import json
from pathlib import Path

import pytest

from conftest import TOOLBENCH_SAMPLE, LoopbackServer
from lib import config, preflight

GROUPS = list(config.GROUPS)


class HttpServer(LoopbackServer):
    """conftest's loopback server with the method passed on and kept:
    `respond(method, path, headers, body) -> (status, payload)`; `calls` holds (method, path,
    headers, body)."""

    def __init__(self, respond):
        self.calls = []

        def answer(path, headers, body):
            method = "GET" if body is None else "POST"
            self.calls.append((method, path, dict(headers), body))
            return respond(method, path, headers, body)
        super().__init__(answer)


def closed_port_url() -> str:
    """A loopback url nothing listens on (bound, then released)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def models_list(*ids):
    return {"object": "list", "data": [{"id": i, "object": "model", "created": 0, "owned_by": "test"}
                                       for i in ids]}


def rows_by_item(rows):
    return {r.item: r for r in rows}


# ---------------------------------------------------------------------------------------------
# A folder laid out like ToolBench's `unzip data.zip`


def record(n: int) -> dict:
    return {"id": f"Step 1: query {n}", "conversations": [
        {"from": "system", "value": "You are AutoGPT."}, {"from": "user", "value": f"\nquery {n}\nBegin!\n"},
        {"from": "assistant", "value": "\nThought: \nAction: Finish\nAction Input: {}"}]}


def query(n: int) -> dict:
    return {"query": f"query {n}", "query_id": n, "api_list": [
        {"category_name": "Weather", "tool_name": "Weather Hub", "api_name": "Current Weather",
         "required_parameters": [{"name": "city", "type": "STRING"}], "optional_parameters": []}]}


def toolbench_layout(root: Path, records: int = 3, queries: dict | None = None) -> Path:
    """root/data/{toolllama_G123_dfs_train.json, test_instruction/<group>.json, toolenv/tools/...}."""
    base = root / "data"
    (base / "test_instruction").mkdir(parents=True)
    (base / "toolllama_G123_dfs_train.json").write_text(json.dumps([record(i) for i in range(records)]))
    for group, n in (queries or {g: 2 for g in GROUPS}).items():
        (base / "test_instruction" / f"{group}.json").write_text(json.dumps([query(i) for i in range(n)]))
    for category, tool in (("Weather", "weather_hub"), ("Weather", "sky_api"), ("Finance", "fx_rates")):
        folder = base / "toolenv" / "tools" / category
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{tool}.json").write_text(json.dumps({"tool_name": tool, "api_list": []}))
    return base


def paper_cfg(tmp_path: Path, base: Path | None = None, **overrides) -> dict:
    base = base or tmp_path / "data"
    return config.load("paper", {
        "output_dir": str(tmp_path / "out"), "data.train_path": str(base / "toolllama_G123_dfs_train.json"),
        "data.test_dir": str(base / "test_instruction"), "data.toolenv_dir": str(base / "toolenv"),
        **overrides})


# ---------------------------------------------------------------------------------------------
# The memory estimate


@pytest.mark.parametrize("seq, measured_gib", [(512, 6.24), (1024, 6.64), (2048, 7.48)])
def test_memory_estimate_within_25_percent_of_h200(seq, measured_gib):
    """torch.cuda.max_memory_allocated on an NVIDIA H200: opt-350m's shape, fp16 mixed precision,
    gradient checkpointing, batch 8 (bench/results/paper_gpu_h200_*.json)."""
    from transformers import OPTConfig

    from lib.model import OPT_350M

    shape = preflight.shape_of(OPTConfig(**OPT_350M))
    assert shape.params == 331_196_416
    est = preflight.training_memory(shape, batch=8, seq=seq, mixed_precision=True, gradient_checkpointing=True)
    assert abs(est["total"] / preflight.GIB / measured_gib - 1) < 0.25
    assert est["total"] == max(est["step"], est["backward"])


def test_memory_estimate_grows_with_the_knobs():
    shape = preflight.ModelShape(params=331_196_416, layers=24, hidden=1024, ffn=4096, vocab=50272, positions=2048)
    base = preflight.training_memory(shape, 8, 2048)
    assert preflight.training_memory(shape, 16, 2048)["total"] > base["total"]
    assert preflight.training_memory(shape, 8, 2048, gradient_checkpointing=False)["total"] > base["total"]
    assert preflight.training_memory(shape, 8, 2048, mixed_precision=False)["total"] > base["total"]
    assert preflight.training_memory(shape, 8, 2048, lora=True)["total"] < base["total"]


# ---------------------------------------------------------------------------------------------
# Profiles


def test_smoke_profile_every_row(tmp_path):
    cfg = config.load("smoke", {"output_dir": str(tmp_path / "out")})
    rows = preflight.check(cfg, probe=False)
    items = [r.item for r in rows]
    assert items == (["training file"] + [f"test {g}" for g in GROUPS] +
                     ["tool documents", "model", "tokenizer", "CUDA GPU", "disk", "tool environment",
                      "inference backend", "judge"])
    assert all(r.status in preflight.STATUSES for r in rows)
    train = rows_by_item(rows)["training file"]
    assert train.status == "ok"
    assert "generated by stage 01" in train.detail or "records" in train.detail
    assert "tiny OPT" in rows_by_item(rows)["model"].detail
    assert not preflight.failed(rows), preflight.table(rows)


def test_paper_layout_shows_the_counts(tmp_path):
    base = toolbench_layout(tmp_path, records=3, queries={"G1_instruction": 200, "G1_category": 153,
                                                          "G1_tool": 7, "G2_instruction": 2,
                                                          "G2_category": 2, "G3_instruction": 100})
    cfg = paper_cfg(tmp_path, base)
    rows = rows_by_item(preflight.check(cfg, probe=False))
    train = rows["training file"]
    assert train.status == "ok" and "3 records" in train.detail and "187,542" in train.detail
    assert "200 queries = ToolBench's full set" in rows["test G1_instruction"].detail
    assert "153 queries = StableToolBench's solvable subset" in rows["test G1_category"].detail
    assert "7 queries (ToolBench 200, StableToolBench solvable 158)" in rows["test G1_tool"].detail
    assert "100 queries = ToolBench's full set" in rows["test G3_instruction"].detail
    assert rows["tool documents"].status == "ok" and "2 categories, 3 tools" in rows["tool documents"].detail
    assert rows["tool environment"].status == "skip"          # virtual server, probe=False


def test_jsonl_and_answer_folder_are_counted(tmp_path):
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("\n".join(json.dumps(record(i)) for i in range(5)) + "\n\n")
    assert preflight.count_records(jsonl) == (5, 0)
    cfg = paper_cfg(tmp_path, **{"data.train_path": str(jsonl)})
    assert "5 records" in preflight.training_file_row(cfg).detail


def test_broken_training_file_is_missing(tmp_path):
    bad = tmp_path / "train.json"
    bad.write_text('[{"id": "a", "conversations": []}, {"id": ')
    row = preflight.training_file_row(paper_cfg(tmp_path, **{"data.train_path": str(bad)}))
    assert row.status == "missing" and "unreadable" in row.detail and row.key == "data.train_path"


def test_missing_inputs_name_the_key(tmp_path):
    cfg = paper_cfg(tmp_path, tmp_path / "nowhere")
    rows = preflight.check(cfg, probe=False)
    by = rows_by_item(rows)
    assert by["training file"].status == "missing" and by["training file"].key == "data.train_path"
    assert by["test G1_instruction"].status == "missing" and "data.test_dir" in by["test G1_instruction"].key
    assert by["tool documents"].status == "missing" and by["tool documents"].key == "data.toolenv_dir"
    assert preflight.failed(rows)
    text = preflight.table(rows)
    assert "-> set data.train_path" in text and "fix the missing rows" in text
    # One aligned table: the status column starts at the same place on every row.
    lines = text.splitlines()[:-1]
    assert len({line.index(" ok ") if " ok " in line else None for line in lines} - {None}) <= 1


def test_hub_id_offline_is_missing_with_the_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    toolbench_layout(tmp_path)
    cfg = paper_cfg(tmp_path, **{"model.name_or_path": "someone/not-a-cached-model"})
    rows, shape = preflight.model_rows(cfg, probe=True)
    model, tokenizer = rows
    assert model.status == "missing" and model.key == "model.name_or_path"
    assert "huggingface-cli download someone/not-a-cached-model" in model.detail
    assert "set model.name_or_path to that folder" in model.detail
    assert tokenizer.status == "missing" and shape is None
    # opt-350m's shape is known, so the GPU and disk rows still get an estimate.
    rows, shape = preflight.model_rows(paper_cfg(tmp_path), probe=True)
    assert rows[0].status == "missing" and shape.params == 331_196_416
    bad = tmp_path / "bad-model"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    broken = preflight.model_rows(paper_cfg(tmp_path, **{"model.name_or_path": str(bad)}), True)[0][0]
    assert broken.status == "missing" and "does not load" in broken.detail
    gone = preflight.model_rows(paper_cfg(tmp_path, **{"model.name_or_path": str(tmp_path / "no" / "such")}), True)
    assert gone[0][0].status == "missing" and "no folder" in gone[0][0].detail


def test_hub_model_looked_up_over_http_without_downloading(tmp_path, monkeypatch):
    """Online and not in the cache: config.json is read over HTTP and the repository's file list
    checked for a tokenizer: read, not downloaded."""
    from transformers import OPTConfig

    from lib.model import OPT_350M

    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)     # read once, at import (conftest)
    hub_config = {**OPTConfig(**OPT_350M).to_dict(), "torch_dtype": "float16"}
    files = ["config.json", "pytorch_model.bin", "vocab.json", "merges.txt"]

    def respond(method, path, headers, body):
        if path == "/facebook/opt-350m/resolve/main/config.json":
            return 200, hub_config
        if path.startswith("/api/models/facebook/opt-350m"):
            return 200, {"id": "facebook/opt-350m", "siblings": [{"rfilename": f} for f in files]}
        return 404, {"error": "Repository not found"}

    with HttpServer(respond) as server:
        monkeypatch.setattr(preflight, "_hub_endpoint", lambda: server.url)
        # The cache lookup must fail as it would on a machine that never downloaded the model.
        monkeypatch.setattr("transformers.AutoConfig.from_pretrained",
                            lambda *a, **k: (_ for _ in ()).throw(OSError("not cached")))
        (model, tokenizer), shape = preflight.model_rows(paper_cfg(tmp_path), probe=True)
        assert model.status == "ok" and "on the hub" in model.detail, model.detail
        assert "stored in float16" in model.detail and shape.params == 331_196_416
        assert tokenizer.status == "ok" and "on the hub" in tokenizer.detail
        files.remove("vocab.json")
        tokenizer = preflight.model_rows(paper_cfg(tmp_path), probe=True)[0][1]
        assert tokenizer.status == "missing" and "no tokenizer files" in tokenizer.detail
        unknown = paper_cfg(tmp_path, **{"model.name_or_path": "nobody/nothing"})
        model = preflight.model_rows(unknown, probe=True)[0][0]
        assert model.status == "missing" and "huggingface-cli download nobody/nothing" in model.detail
        seen = len(server.calls)
        assert preflight.model_rows(paper_cfg(tmp_path), probe=False)[0][0].status == "skip"
        assert len(server.calls) == seen


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """A local folder shaped like opt-350m (2 small layers), stored in float16 like the hub's."""
    from lib import model as model_lib

    folder = tmp_path_factory.mktemp("stand_in") / "opt-350m"
    texts = [f"Thought: call api number {i} with city Paris and units metric" for i in range(200)]
    return model_lib.save_stand_in(folder, texts, vocab_size=300, num_hidden_layers=2, hidden_size=64,
                                   ffn_dim=128, num_attention_heads=2, word_embed_proj_dim=64)


def test_local_model_folder(tmp_path, stand_in):
    cfg = paper_cfg(tmp_path, **{"model.name_or_path": str(stand_in)})
    (model, tokenizer), shape = preflight.model_rows(cfg, probe=False)
    assert model.status == "ok", model.detail
    assert "stored in float16" in model.detail and "2,048 positions" in model.detail
    assert "loaded as float32" in model.detail and shape.layers == 2
    assert tokenizer.status == "ok" and "chat template compiles" in tokenizer.detail

    long = paper_cfg(tmp_path, **{"model.name_or_path": str(stand_in), "train.max_length": 4096})
    model = preflight.model_rows(long, probe=False)[0][0]
    assert model.status == "warn" and model.key == "train.max_length"

    half = paper_cfg(tmp_path, **{"model.name_or_path": str(stand_in), "model.dtype": "float16"})
    model = preflight.model_rows(half, probe=False)[0][0]
    assert model.status == "missing" and model.key == "model.dtype"

    plain = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    no_tags = paper_cfg(tmp_path, **{"model.name_or_path": str(stand_in), "model.chat_template": plain,
                                     "train.assistant_only_loss": True})
    tokenizer = preflight.model_rows(no_tags, probe=False)[0][1]
    assert tokenizer.status == "missing" and tokenizer.key == "model.chat_template"
    assert "{% generation %}" in tokenizer.detail
    broken = paper_cfg(tmp_path, **{"model.name_or_path": str(stand_in), "model.chat_template": "{% for %}"})
    assert preflight.model_rows(broken, probe=False)[0][1].status == "missing"


# ---------------------------------------------------------------------------------------------
# Machine rows


def fake_gpu(monkeypatch, free_gib, total_gib):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *_: (free_gib * preflight.GIB, total_gib * preflight.GIB))


def test_cuda_row(tmp_path, monkeypatch):
    from transformers import OPTConfig

    from lib.model import OPT_350M

    shape = preflight.shape_of(OPTConfig(**OPT_350M))
    cfg = paper_cfg(tmp_path)
    fake_gpu(monkeypatch, 20, 24)           # the paper's A10G 24 GB
    row = preflight.cuda_row(cfg, shape)
    assert row.status == "ok" and "Fake GPU" in row.detail and "training needs ~7.8" in row.detail
    fake_gpu(monkeypatch, 5, 24)
    assert preflight.cuda_row(cfg, shape).status == "warn"
    fake_gpu(monkeypatch, 4, 4)
    row = preflight.cuda_row(cfg, shape)
    assert row.status == "missing" and "per_device_train_batch_size" in row.key


def test_no_cuda_warns_for_fp16(tmp_path, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    row = preflight.cuda_row(paper_cfg(tmp_path), None)
    assert row.status == "warn" and "fp16 falls back to fp32" in row.detail and row.key == "train.use_cpu"
    cpu = config.load("smoke", {"output_dir": str(tmp_path / "out")})
    assert preflight.cuda_row(cpu, None).status == "ok"


def test_disk_row(tmp_path, monkeypatch):
    import collections
    shape = preflight.ModelShape(params=331_196_416, layers=24, hidden=1024, ffn=4096, vocab=50272, positions=2048)
    cfg = paper_cfg(tmp_path)
    Usage = collections.namedtuple("Usage", "total used free")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda _: Usage(100 * preflight.GIB, 0, 100 * preflight.GIB))
    row = preflight.disk_row(cfg, shape)
    assert row.status == "ok" and "3 checkpoints x 3.70 GiB" in row.detail
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda _: Usage(5 * preflight.GIB, 0, 5 * preflight.GIB))
    assert preflight.disk_row(cfg, shape).status == "missing"
    assert not (tmp_path / "out").exists()          # the output folder is not created to measure it


# ---------------------------------------------------------------------------------------------
# Services over loopback


def test_virtual_server_probe(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLBENCH_KEY", "tb-secret-value")

    def respond(method, path, headers, body):
        return (500, {"error": "boom"}) if body["api_name"] == "boom" else (200, {"error": "", "response": "ok"})

    toolbench_layout(tmp_path)
    with HttpServer(respond) as server:
        cfg = paper_cfg(tmp_path, **{"inference.virtual_server_url": server.url + "/virtual"})
        row = preflight.tool_env_row(cfg, probe=True)
        assert row.status == "ok" and "answered" in row.detail
        method, path, _, body = server.calls[0]
        assert (method, path) == ("POST", "/virtual")
        assert body == {"category": "Weather", "tool_name": "weather_hub", "api_name": "current_weather",
                        "tool_input": "{}", "strip": "truncate", "toolbench_key": "tb-secret-value"}
        assert "tb-secret-value" not in row.detail
        monkeypatch.setattr(preflight, "_probe_api", lambda cfg: ("Data", "t", "boom"))
        assert preflight.tool_env_row(cfg, probe=True).status == "warn"
    dead = paper_cfg(tmp_path, **{"inference.virtual_server_url": closed_port_url() + "/virtual"})
    row = preflight.tool_env_row(dead, probe=True)
    assert row.status == "missing" and row.key == "inference.virtual_server_url"


def test_slow_virtual_server_warns(tmp_path, monkeypatch):
    """StableToolBench simulates an uncached call with an LLM: connected but slow is not missing."""
    import time

    monkeypatch.setattr(preflight, "PROBE_TIMEOUT", 0.3)
    with HttpServer(lambda *_: (time.sleep(1.0), (200, {"error": "", "response": "late"}))[1]) as server:
        cfg = paper_cfg(tmp_path, **{"inference.virtual_server_url": server.url + "/virtual"})
        row = preflight.tool_env_row(cfg, probe=True)
    assert row.status == "warn" and "no answer within 0.3 s" in row.detail


def test_rapidapi_key_is_checked_never_shown(tmp_path, monkeypatch):
    cfg = paper_cfg(tmp_path, **{"inference.tool_env": "rapidapi"})
    monkeypatch.delenv("RAPIDAPI_KEY", raising=False)
    row = preflight.tool_env_row(cfg, probe=True)
    assert row.status == "missing" and "RAPIDAPI_KEY" in row.key
    monkeypatch.setenv("RAPIDAPI_KEY", "rk-secret-value")
    row = preflight.tool_env_row(cfg, probe=True)
    assert row.status == "ok" and "rk-secret-value" not in row.detail


def judge_server():
    def respond(method, path, headers, body):
        if headers.get("Authorization") != "Bearer jk-secret-value":
            return 401, {"error": {"message": "bad key", "type": "invalid_request_error"}}
        return 200, models_list("judge-model", "other-model")
    return HttpServer(respond)


def test_judge_endpoint_lists_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "jk-secret-value")
    with judge_server() as server:
        listed = paper_cfg(tmp_path, **{"judge.base_url": server.url + "/v1", "judge.model": "judge-model",
                                        "judge.api_key_env": "JUDGE_KEY"})
        row = preflight.judge_row(listed, probe=True)
        assert row.status == "ok" and "lists judge-model" in row.detail
        assert server.calls[0][:2] == ("GET", "/v1/models")
        unlisted = paper_cfg(tmp_path, **{"judge.base_url": server.url + "/v1", "judge.model": "gpt-4o",
                                          "judge.api_key_env": "JUDGE_KEY"})
        row = preflight.judge_row(unlisted, probe=True)
        assert row.status == "warn" and "does not list gpt-4o" in row.detail and row.key == "judge.model"
        assert "judge-model" in row.detail
        for r in (preflight.judge_row(listed, True), row):
            assert "jk-secret-value" not in r.detail
        monkeypatch.setenv("JUDGE_KEY", "wrong")
        row = preflight.judge_row(listed, probe=True)
        assert row.status == "missing" and "JUDGE_KEY" in row.key and "wrong" not in row.detail
        seen = len(server.calls)
        assert preflight.judge_row(listed, probe=False).status == "skip"
        assert len(server.calls) == seen                 # probe=False sends nothing
    dead = paper_cfg(tmp_path, **{"judge.base_url": closed_port_url() + "/v1", "judge.api_key_env": "JUDGE_KEY"})
    row = preflight.judge_row(dead, probe=True)
    assert row.status == "missing" and row.key == "judge.base_url"


def test_judge_config_without_endpoint_or_key(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    row = preflight.judge_row(paper_cfg(tmp_path), probe=False)     # api.openai.com needs a key
    assert row.status == "missing" and "OPENAI_API_KEY" in row.key
    row = preflight.judge_row(paper_cfg(tmp_path, **{"judge.base_url": None}), probe=False)
    assert row.status == "missing" and "judge.base_url" in row.key
    assert preflight.judge_row(paper_cfg(tmp_path, **{"judge.kind": "offline"}), True).status == "ok"


def test_openai_backend_endpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "jk-secret-value")
    with judge_server() as server:
        cfg = paper_cfg(tmp_path, **{"inference.backend": "openai", "inference.openai_base_url": server.url + "/v1",
                                     "inference.openai_model": "other-model", "inference.openai_api_key_env": "JUDGE_KEY"})
        assert preflight.backend_row(cfg, probe=True).status == "ok"
        cfg["inference"]["openai_model"] = "absent"
        row = preflight.backend_row(cfg, probe=True)
        assert row.status == "warn" and row.key == "inference.openai_model"
    unset = paper_cfg(tmp_path, **{"inference.backend": "openai"})
    assert preflight.backend_row(unset, probe=True).status == "missing"
    gone = paper_cfg(tmp_path, **{"inference.model_dir": str(tmp_path / "no-model")})
    assert preflight.backend_row(gone, probe=True).key == "inference.model_dir"


# ---------------------------------------------------------------------------------------------
# Read-only, and real ToolBench files


def listing(*roots):
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for root in roots if root.exists()
            for p in [root, *root.rglob("*")]}


def test_check_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "jk-secret-value")
    toolbench_layout(tmp_path)
    with judge_server() as server:
        paper = paper_cfg(tmp_path, **{"judge.base_url": server.url + "/v1", "judge.model": "judge-model",
                                       "judge.api_key_env": "JUDGE_KEY",
                                       "inference.virtual_server_url": server.url + "/virtual"})
        smoke = config.load("smoke", {"output_dir": str(tmp_path / "smoke-out"),
                                      "data.sample_dir": str(tmp_path / "sample"),
                                      "data.train_path": str(tmp_path / "sample" / "train" / "t.json"),
                                      "data.test_dir": str(tmp_path / "sample" / "test_instruction"),
                                      "data.toolenv_dir": str(tmp_path / "sample" / "toolenv")})
        before = listing(tmp_path)
        for cfg in (paper, smoke):
            preflight.check(cfg, probe=True)
        assert listing(tmp_path) == before
    assert not (tmp_path / "out").exists() and not (tmp_path / "smoke-out").exists()
    assert not (tmp_path / "sample").exists()


needs_sample = pytest.mark.skipif(not TOOLBENCH_SAMPLE.exists(), reason="../shared/toolbench-sample absent")


@needs_sample
def test_real_toolbench_files(tmp_path):
    stable = TOOLBENCH_SAMPLE / "stabletoolbench" / "solvable_queries" / "test_instruction"
    train = TOOLBENCH_SAMPLE / "derived" / "toolllama_format_from_data_example.json"
    cfg = paper_cfg(tmp_path, **{
        "data.train_path": str(train),
        "data.test_dir": str(stable), "inference.groups": ["G1_instruction", "G2_instruction", "G3_instruction"]})
    rows = rows_by_item(preflight.check(cfg, probe=False))
    assert f"{len(json.loads(train.read_text()))} records" in rows["training file"].detail
    assert "163 queries = StableToolBench's solvable subset" in rows["test G1_instruction"].detail
    assert "106 queries = StableToolBench's solvable subset" in rows["test G2_instruction"].detail
    assert "61 queries = StableToolBench's solvable subset" in rows["test G3_instruction"].detail
    # A folder of raw answer files is a training input too, counted through ToolBench's preprocessing.
    records, _ = preflight.count_records(TOOLBENCH_SAMPLE / "data_example" / "answer")
    assert records > 0
