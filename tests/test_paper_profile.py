"""The paper profile as a user with a GPU runs it, in miniature: configs/paper.yaml with only the
size and location overrides that the README lists, through all five notebooks with papermill.

- model: a stand-in for facebook/opt-350m built from its config with fewer, narrower layers and
  saved in float16 like the hub checkpoint (lib.models.model.save_stand_in);
- data: ToolBench's data.zip layout in a temporary folder, from the real sample files in
  ../shared/toolbench-sample/ (training records preprocessed from real answer files, StableToolBench's
  real test queries); without ../shared, the project's own ToolBench-format sample instead;
- tool environment and judge: loopback servers speaking StableToolBench's /virtual protocol and the
  OpenAI chat-completions protocol, started here.
"""
from __future__ import annotations

import csv
import json
import shutil

import nbformat
import pytest

from conftest import TOOLBENCH_SAMPLE, LoopbackServer, chat_completion
from lib.common import config
from lib.models import model as model_lib
from lib.pipeline import checklist, preflight, run

pytestmark = pytest.mark.slow

# The only keys a user changes (README, "The paper profile"): where things are, and how much to run.
SIZE = {"train.max_steps": 2, "train.save_steps": 1, "inference.max_queries_per_group": 1,
        "inference.max_new_tokens": 32}
STAND_IN = dict(num_hidden_layers=2, hidden_size=64, ffn_dim=128, num_attention_heads=2,
                word_embed_proj_dim=32, vocab_size=2048)


def lay_out_toolbench(root):
    """root/data/... as `unzip data.zip -d root` leaves it; returns the groups it holds."""
    data = root / "data"
    (data / "test_instruction").mkdir(parents=True)
    if TOOLBENCH_SAMPLE.exists():
        shutil.copy(TOOLBENCH_SAMPLE / "derived/toolllama_format_from_data_example.json",
                    data / "toolllama_G123_dfs_train.json")
        for f in sorted((TOOLBENCH_SAMPLE / "stabletoolbench/solvable_queries/test_instruction").glob("*.json")):
            shutil.copy(f, data / "test_instruction" / f.name)
        write_tool_documents(data / "test_instruction", data / "toolenv" / "tools")
        return sorted(f.stem for f in (data / "test_instruction").glob("*.json"))
    smoke = config.load("smoke")
    from lib.data import data as data_lib
    data_lib.ensure_sample(smoke)
    shutil.copy(config.path(smoke, smoke.data.train_path), data / "toolllama_G123_dfs_train.json")
    for f in sorted(config.path(smoke, smoke.data.test_dir).glob("*.json")):
        shutil.copy(f, data / "test_instruction" / f.name)
    shutil.copytree(config.path(smoke, smoke.data.toolenv_dir) / "tools", data / "toolenv" / "tools")
    return list(config.GROUPS)


def write_tool_documents(test_dir, tools_dir):
    """toolenv/tools/<category>/<tool>.json for the sample's queries. The sample has no toolenv
    folder, so these are made from the queries' own api_list (ToolBench's tool-document fields;
    the tool description says it is a stand-in)."""
    tools = {}
    for f in test_dir.glob("*.json"):
        for query in json.loads(f.read_text()):
            for api in query["api_list"]:
                doc = tools.setdefault((api["category_name"], api["tool_name"]), {
                    "tool_name": api["tool_name"], "title": api["tool_name"],
                    "tool_description": f"{api['tool_name']} (stand-in made from the test queries)",
                    "api_list": []})
                if all(a["name"] != api["api_name"] for a in doc["api_list"]):
                    doc["api_list"].append({"name": api["api_name"], "description": api.get("api_description", ""),
                                            "method": api.get("method", "GET"),
                                            "required_parameters": api.get("required_parameters", []),
                                            "optional_parameters": api.get("optional_parameters", [])})
    from lib.toolbench.formats import standardize_name
    for (category, tool), doc in tools.items():       # ToolBench names the files by standardized tool name
        (tools_dir / category).mkdir(parents=True, exist_ok=True)
        (tools_dir / category / f"{standardize_name(tool)}.json").write_text(json.dumps(doc))


def virtual_server(path, headers, body):
    """StableToolBench's POST /virtual: a JSON object with error and response."""
    if path != "/virtual" or not {"category", "tool_name", "api_name", "tool_input", "strip",
                                  "toolbench_key"} <= set(body):
        return 400, {"error": f"bad request to {path}: {sorted(body)}"}
    return 200, {"error": "", "response": json.dumps({"echo": json.loads(body["tool_input"] or "{}")})}


def judge_server(path, headers, body):
    """An OpenAI-compatible endpoint: GET /models lists the judge's model; chat completions judge
    every answer Unsolved and every task Solvable."""
    if body is None and path.endswith("/models"):
        return 200, {"object": "list", "data": [{"id": "gpt-3.5-turbo-16k", "object": "model",
                                                  "created": 0, "owned_by": "test"}]}
    text = body["messages"][-1]["content"]
    reply = {"reason": "r", "task_status": "Solvable"} if "task_status" in text else \
        {"reason": "r", "answer_status": "Unsolved"}
    return 200, chat_completion(body["model"], json.dumps(reply))


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    groups = lay_out_toolbench(root / "toolbench")
    records = json.loads((root / "toolbench/data/toolllama_G123_dfs_train.json").read_text())
    texts = [m["value"] for r in records for m in r["conversations"]]
    stand_in = model_lib.save_stand_in(root / "opt-350m", texts, tokenizer_vocab=2048, **STAND_IN)
    patch = pytest.MonkeyPatch()
    patch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    patch.setenv("TOOLBENCH_KEY", "tb-test")
    with LoopbackServer(virtual_server) as tools, LoopbackServer(judge_server) as judge:
        overrides = {**SIZE, "output_dir": str(root / "out"), "model.name_or_path": str(stand_in),
                     "data.train_path": str(root / "toolbench/data/toolllama_G123_dfs_train.json"),
                     "data.test_dir": str(root / "toolbench/data/test_instruction"),
                     "data.toolenv_dir": str(root / "toolbench/data/toolenv"),
                     "inference.groups": groups,
                     "inference.virtual_server_url": tools.url + "/virtual",
                     "judge.base_url": judge.url + "/v1"}
        try:
            # As `make reproduce PROFILE=paper` does: the pre-flight check first.
            preflight_rows = preflight.check(config.load("paper", overrides))
            executed = run.run("paper", overrides, force=True)
        finally:
            patch.undo()
        yield {"out": root / "out", "executed": executed, "preflight": preflight_rows, "groups": groups, "records": records,
               "cfg": config.load("paper", overrides), "stand_in": stand_in,
               "tool_calls": list(tools.requests), "judge_calls": list(judge.requests)}


def test_the_preflight_check_found_every_input(paper_run):
    rows = {r.item: r for r in paper_run["preflight"]}
    assert not checklist.failed(paper_run["preflight"]), checklist.table(paper_run["preflight"])
    assert f"{len(paper_run['records'])} records" in rows["training file"].detail
    assert "float16" in rows["model"].detail
    assert rows["tool environment"].status == rows["judge"].status == "ok"


def test_all_five_notebooks_ran_on_the_paper_profile(paper_run):
    assert [p.name for p in paper_run["executed"]] == [s.notebook for s in run.STAGES]
    for path in paper_run["executed"]:
        nb = nbformat.read(path, as_version=4)
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.name}: {errors[0]['ename']}: {errors[0]['evalue']}"
    assert all(run.done_marker(paper_run["cfg"], stage).exists() for stage in run.STAGES)


def test_only_size_and_location_keys_differ_from_the_paper_profile(paper_run):
    paper, used = config.as_dict(config.load("paper")), config.as_dict(paper_run["cfg"])
    changed = {f"{section}.{k}" for section in ("data", "model", "train", "inference", "judge")
               for k in set(paper[section]) | set(used[section]) if paper[section].get(k) != used[section].get(k)}
    allowed = set(SIZE) | {"model.name_or_path", "data.train_path", "data.test_dir", "data.toolenv_dir",
                           "inference.groups", "inference.virtual_server_url", "judge.base_url"}
    assert changed <= allowed, changed - allowed
    # The stand-in is stored like the hub checkpoint, in float16, with opt-350m's architecture.
    saved = json.loads((paper_run["stand_in"] / "config.json").read_text())
    assert saved["dtype"] == "float16" and saved["do_layer_norm_before"] is False


def test_training_followed_the_paper_recipe(paper_run):
    summary = json.loads((paper_run["out"] / "train_summary.json").read_text())
    assert summary["optimizer_steps"] == 2 and summary["effective_batch"] == 32
    # No CUDA here: fp16 falls back to fp32 and says so; the weights trained in float32.
    assert summary["precision"] == "fp32" and summary["max_length"] == 2048
    assert summary["final_loss"] is None and summary["train_loss"] > 0      # logging_steps is 10
    trained = json.loads((paper_run["out"] / "model" / "config.json").read_text())
    assert trained["dtype"] == "float32"
    assert sorted(p.name for p in (paper_run["out"] / "checkpoints").glob("checkpoint-*")) == \
        ["checkpoint-1", "checkpoint-2"]
    stats = json.loads((paper_run["out"] / "data_stats.json").read_text())
    assert stats["example_per"] == "record" and stats["records_read"] == len(paper_run["records"])


def test_inference_ran_one_query_per_group_against_the_virtual_server_protocol(paper_run):
    for group in paper_run["groups"]:
        lines = (paper_run["out"] / "trajectories" / f"{group}.jsonl").read_text().splitlines()
        assert len(lines) == 1
        line = json.loads(lines[0])
        assert line["method"] == "CoT@1" or line["answer"]["method"]
    for path, _, body in paper_run["tool_calls"]:
        assert path == "/virtual" and body["toolbench_key"] == "tb-test"


def test_judge_and_figures_cover_the_measured_groups(paper_run):
    with open(paper_run["out"] / "pass_rate.csv") as fh:
        rows = {r["group"]: r for r in csv.DictReader(fh)}
    assert set(paper_run["groups"]) <= set(rows)
    assert all("gpt-3.5-turbo-16k" in r["judge"] for r in rows.values())
    # An overall over fewer than the six groups says which it pools.
    assert rows["overall"]["covers"] == "+".join(paper_run["groups"])
    if len(paper_run["groups"]) < 6:
        assert "of 6 groups" in (paper_run["out"] / "figures" / "table1.md").read_text()
    # The pre-flight probe listed the models; a random model never calls Finish, which ToolEval
    # fails without asking the judge, so no chat completion was requested.
    assert [path for path, _, _ in paper_run["judge_calls"]] == ["/v1/models"]
    index = json.loads((paper_run["out"] / "figures" / "index.json").read_text())
    assert index and all(p.exists() or (paper_run["out"] / "figures" / p).exists()
                         for p in map(__import__("pathlib").Path, index.values()))
