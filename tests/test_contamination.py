"""The contamination check and the split check (lib/report/contamination.py): planted duplicates, sources, ToolBench's split."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TOOLBENCH_SAMPLE
from lib.common import config
from lib.report import contamination

GROUPS = config.GROUPS


def training_record(i: int, query: str) -> dict:
    return {"id": f"Step {i % 3 + 1}: {query}",
            "conversations": [{"from": "system", "value": "You are AutoGPT ... APIs: [...]"},
                              {"from": "user", "value": f"\n{query}\nBegin!\n"},
                              {"from": "assistant", "value": "\nThought: \nAction: x_for_y\nAction Input: {}"}]}


LONG = ("I am planning a surprise birthday party for my best friend next weekend and I need "
        "to find a venue in downtown Chicago that can host thirty guests with vegetarian catering")
NEAR = LONG.replace("thirty guests", "forty guests")
UNRELATED = [f"Give me the weather forecast for city number {i} and also convert {i} dollars to euros"
             for i in range(40)]


def write_queries(tmp: Path, train_format: str = "json") -> tuple[Path, Path]:
    """Test files with one planted exact duplicate (case and punctuation changed) in G1_instruction,
    one planted near duplicate in G2_category, and unrelated queries elsewhere."""
    test_dir = tmp / "test_instruction"
    test_dir.mkdir(parents=True, exist_ok=True)
    train_queries = [LONG, "Find the cheapest flight from Paris to Tokyo in March for two adults please",
                     *[f"Translate sentence number {i} about gardening tools into Spanish" for i in range(30)]]
    tests = {g: [{"query": f"Tell me a joke about the {g} group number {k}", "query_id": k}
                 for k in range(3)] for g in GROUPS}
    tests["G1_instruction"].append({"query": LONG.upper().replace(" and ", ", and; "), "query_id": 100})
    tests["G2_category"].append({"query": NEAR, "query_id": 200})
    tests["G3_instruction"] += [{"query": q, "query_id": 300 + i} for i, q in enumerate(UNRELATED[:5])]
    for g, qs in tests.items():
        (test_dir / f"{g}.json").write_text(json.dumps(qs))
    # Several records per query, as in ToolBench's one-record-per-step file.
    records = [training_record(i, q) for i, q in enumerate(train_queries * 3)]
    train = tmp / ("train.jsonl" if train_format == "jsonl" else "train.json")
    text = ("\n".join(json.dumps(r) for r in records) if train_format == "jsonl" else json.dumps(records))
    train.write_text(text)
    return test_dir, train


def test_normalise_and_ngrams():
    assert contamination.normalise("  Hello,   WORLD!\nBegin_now ") == "hello world begin now"
    assert contamination.ngrams("a b c d", 3) == {("a", "b", "c"), ("b", "c", "d")}
    assert contamination.ngrams("a b", 3) == {("a", "b")}


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_contamination_finds_planted_duplicates(tmp_path, fmt):
    test_dir, train = write_queries(tmp_path, fmt)
    cfg = config.load("smoke", {"output_dir": str(tmp_path / "out"), "data.test_dir": str(test_dir),
                                "data.train_path": str(train)})
    queries, source = contamination.training_queries(cfg)
    assert source == str(train) and len(queries) == 96
    assert queries[0][1] == LONG                       # the user turn without "Begin!"
    rows, pairs = contamination.contamination(contamination.test_queries(cfg), queries, 8, 0.5)
    by = {r["group"]: r for r in rows}
    assert (by["G1_instruction"]["exact_dups"], by["G1_instruction"]["near_dups"]) == (1, 0)
    assert (by["G2_category"]["exact_dups"], by["G2_category"]["near_dups"]) == (0, 1)
    assert float(by["G2_category"]["max_jaccard"]) >= 0.5
    assert by["G3_instruction"]["exact_dups"] == by["G3_instruction"]["near_dups"] == 0
    assert float(by["G3_instruction"]["max_overlap"]) == 0.0
    assert (by["overall"]["n_test"], by["overall"]["exact_dups"], by["overall"]["near_dups"]) == (25, 1, 1)
    assert by["overall"]["n_train_queries"] == 32          # distinct queries, not records
    assert {(p["query_id"], p["kind"]) for p in pairs} == {(100, "exact"), (200, "near")}


def test_contamination_threshold_and_sft_source(tmp_path):
    from datasets import Dataset

    test_dir, _ = write_queries(tmp_path)
    out = tmp_path / "out"
    Dataset.from_list([{"id": "Step 1: x", "prompt": [{"role": "system", "content": "s"},
                                                      {"role": "user", "content": f"\n{NEAR}\nBegin!\n"}]}]
                      ).save_to_disk(str(out / "sft"))
    cfg = config.load("smoke", {"output_dir": str(out), "data.test_dir": str(test_dir),
                                "data.train_path": str(tmp_path / "missing.json")})
    queries, source = contamination.training_queries(cfg)
    assert source.endswith("sft") and queries == [("Step 1: x", NEAR, frozenset())]
    rows, _ = contamination.contamination(contamination.test_queries(cfg), queries, 8, 0.5)
    by = {r["group"]: r for r in rows}
    assert by["G2_category"]["exact_dups"] == 1 and by["G1_instruction"]["near_dups"] == 1
    strict, _ = contamination.contamination(contamination.test_queries(cfg), queries, 8, 0.99)
    assert {r["group"]: r for r in strict}["G1_instruction"]["near_dups"] == 0


def test_split_check_finds_unseen_tools_and_categories_as_toolbench_splits_them(tmp_path):
    from lib.toolbench import sample
    sample.generate(tmp_path / "s", seed=3, train_queries=40, queries_per_group=3)
    cfg = config.load("smoke", {"output_dir": str(tmp_path / "out"),
                                "data.test_dir": str(tmp_path / "s" / "test_instruction"),
                                "data.train_path": str(tmp_path / "s" / "train" / "toolllama_G123_dfs_train.json"),
                                "data.toolenv_dir": str(tmp_path / "s" / "toolenv")})
    train, _ = contamination.training_queries(cfg)
    by = {r["group"]: r for r in contamination.split_check(cfg, contamination.test_queries(cfg), train)}
    assert by["G1_tool"]["seen_tool"] == 0 and by["G1_tool"]["seen_category"] == 3
    assert by["G1_category"]["seen_category"] == by["G2_category"]["seen_category"] == 0
    for group in ("G1_instruction", "G2_instruction", "G3_instruction"):
        assert by[group]["seen_tool"] == by[group]["n_test"] > 0
    assert by["overall"]["train_tools"] == len({t for _, _, ts in train for t in ts}) > 5
    # A training tool that a test query uses is found: plant one and the count moves.
    planted = train + [("x", "q", frozenset({sample.formats.standardize_name(sample.UNSEEN_TOOLS[0])}))]
    tools_now = {r["group"]: r for r in contamination.split_check(cfg, contamination.test_queries(cfg), planted)}
    assert tools_now["G1_tool"]["seen_tool"] >= 1
    # Without tool documents the categories are unknown, not "0 seen".
    cfg = config.derive(cfg, {"data.toolenv_dir": str(tmp_path / "nowhere")})
    assert contamination.split_check(cfg, contamination.test_queries(cfg), train)[0]["seen_category"] == ""


@pytest.mark.skipif(not (TOOLBENCH_SAMPLE / "derived").exists(), reason="toolbench-sample is outside the repository")
def test_split_check_reads_the_tools_of_real_toolbench_training_records():
    train = TOOLBENCH_SAMPLE / "derived/toolllama_format_from_data_example.json"
    cfg = config.load("smoke", {"data.train_path": str(train), "data.toolenv_dir": "/nonexistent"})
    records, _ = contamination.training_queries(cfg)
    tools = set().union(*(r[2] for r in records))
    assert len(records) == 33 and len(tools) >= 5
    # Read independently: the function list after ToolBench's "following APIs" sentence, as a literal.
    import ast
    raw = json.loads(train.read_text())
    names = {fn["name"] for r in raw for fn in ast.literal_eval(
        r["conversations"][0]["value"].rsplit("following APIs: ", 1)[1])}
    assert {n.rsplit("_for_", 1)[1] for n in names if "_for_" in n} == tools
