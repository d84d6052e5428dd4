"""Stage 05 (lib/report.py): tables, figures, the claim audit, contamination, the shipped data files."""
from __future__ import annotations

import csv
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import SHARED, TOOLBENCH_SAMPLE
from lib import config, report

ROOT = config.ROOT
DESIGN = SHARED / "DESIGN.md"                                # outside the repo: checked when present
LEADERBOARD = TOOLBENCH_SAMPLE / "toolbench" / "tooleval" / "results" / "leaderboard_ChatGPT-DFSDT_winrate.csv"
GROUPS = config.GROUPS
STAMP = "smoke profile: not the paper's numbers"

# (group, n, passed) of a fixed run; pass rates and Wilson intervals follow from them.
FIXED = [("G1_instruction", 20, 9), ("G1_category", 20, 7), ("G1_tool", 20, 12),
         ("G2_instruction", 20, 5), ("G2_category", 20, 8), ("G3_instruction", 10, 2)]


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_pass_rate(path: Path, rows=FIXED, judge="offline", aggregations=("mean", "majority")) -> Path:
    """A stage-04 pass_rate.csv; 'mean' rows first so the reader must pick majority itself.
    Aggregation names may be the issue's (majority, mean) or stage 04's (majority_vote, mean_score)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["method,group,n,passed,pass_rate,ci_low,ci_high,aggregation,judge"]
    total_n, total_p = sum(r[1] for r in rows), sum(r[2] for r in rows)
    for agg in aggregations:
        for g, n, p in rows + [("overall", total_n, total_p)]:
            rate = 100 * p / n + (0.0 if agg.startswith("majority") else 2.5)
            lo, hi = report.wilson(p, n) if agg.startswith("majority") else ("", "")
            ci = f"{lo:.2f},{hi:.2f}" if agg.startswith("majority") else ","
            lines.append(f"react,{g},{n},{p},{rate:.2f},{ci},{agg},{judge}")
    path.write_text("\n".join(lines) + "\n")
    return path


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


def load_cfg(tmp: Path, profile="smoke", **extra) -> dict:
    test_dir, train = write_queries(tmp / "data")
    overrides = {"output_dir": str(tmp / "out"), "data.test_dir": str(test_dir), "data.train_path": str(train)}
    overrides.update(extra)
    return config.load(profile, overrides)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One report.run on the smoke profile with a fixed pass_rate.csv and one extra run."""
    tmp = tmp_path_factory.mktemp("report")
    extra = write_pass_rate(tmp / "other" / "pass_rate.csv", rows=[(g, n, n - p) for g, n, p in FIXED])
    cfg = load_cfg(tmp, **{"report.runs": [{"label": "Other run", "path": str(extra)}]})
    write_pass_rate(Path(cfg["output_dir"]) / "pass_rate.csv")
    write_pass_rate(Path(cfg["output_dir"]) / "untrained" / "pass_rate.csv", rows=[(g, n, 0) for g, n, _ in FIXED])
    return cfg, report.run(cfg)


# ----------------------------------------------------------------------------- helpers
def test_rounding_rule_uses_the_printed_precision():
    assert report.half_unit("77.55") == Decimal("0.005")
    assert report.half_unit("77.6") == Decimal("0.05")
    assert report.half_unit("29") == Decimal("0.5")
    assert report.matches_printed(Decimal(85300) / 1100, "77.55")       # 77.5454...
    assert not report.matches_printed(Decimal("77.75"), "77.6")
    assert report.round_like(Decimal("77.55"), "77.6") == Decimal("77.6")  # half-up, exact decimal


def test_wilson_interval_known_values():
    lo, hi = report.wilson(9, 20)
    assert (round(lo, 2), round(hi, 2)) == (25.82, 65.79)
    assert report.wilson(0, 10)[0] == 0.0 and report.wilson(10, 10)[1] == pytest.approx(100.0)


def test_group_labels():
    assert [report.group_label(g) for g in GROUPS[:2]] == ["G1-instruction", "G1-category"]


# ----------------------------------------------------------------------------- data files
def test_paper_results_reproduce_design_tables():
    paper = {s["label"]: s for s in report.reference_series(ROOT / "data/paper_results.csv", "paper")}
    table1 = {"Ours": "77.55", "ToolLLaMA-DFS": "30.18", "ChatGPT-CoT": "26.00",
              "ToolLLaMA-CoT": "16.27", "Claude-CoT": "2.73"}
    assert {k: s["printed"]["overall"] for k, s in paper.items()} == table1
    assert {k: s["params_b"] for k, s in paper.items()} == {
        "Ours": "0.35", "ToolLLaMA-DFS": "7", "ChatGPT-CoT": "175", "ToolLLaMA-CoT": "7", "Claude-CoT": "52"}
    for s in paper.values():
        assert set(s["printed"]) == set(GROUPS) | {"overall", "average"}
        assert sum(s["n"][g] for g in GROUPS) == 1100
    assert paper["Ours"]["printed"]["G3_instruction"] == "80.0"
    assert paper["ChatGPT-CoT"]["printed"]["G3_instruction"] == "5.0"
    assert paper["Ours"]["printed"]["average"] == "77.6"


@pytest.mark.skipif(not DESIGN.exists(), reason="DESIGN.md is outside the repository")
def test_paper_results_match_design_md_text():
    text = DESIGN.read_text()
    paper = {s["label"]: s for s in report.reference_series(ROOT / "data/paper_results.csv", "paper")}
    order = ["Ours", "ToolLLaMA-DFS", "ChatGPT-CoT", "ToolLLaMA-CoT", "Claude-CoT"]
    rows = re.findall(r"^\| (G\d-\w+|Avg \(paper\)) \| (.+) \|$", text, re.M)
    assert len(rows) == 7
    for name, cells in rows:
        group = "average" if name.startswith("Avg") else name.replace("-", "_")
        assert [c.strip() for c in cells.split("|")] == [paper[m]["printed"][group] for m in order]
    line = re.search(r"^Table 1 \(overall pass rate\):(.+?)\n\n", text, re.M | re.S).group(1)
    quoted = dict(re.findall(r"([\w-]+) \([\d.]+[MB]\) (\d+(?:\.\d+)?)", line))
    assert quoted == {k: paper[k]["printed"]["overall"] for k in order}


def test_readme_results_are_consistent():
    readme = report.reference_series(ROOT / "data/toolbench_readme_results.csv", "readme")
    assert len(readme) == 11
    for s in readme:
        plain = sum(Decimal(s["printed"][g]) for g in GROUPS) / 6
        assert report.matches_printed(plain, s["printed"]["average"]), s["label"]
    mapped = {s["paper_label"]: s["label"] for s in readme if s["paper_label"]}
    assert mapped == {"Claude-CoT": "Claude-2-ReACT (README)", "ChatGPT-CoT": "ChatGPT-ReACT (README)",
                      "ToolLLaMA-CoT": "ToolLLaMA-ReACT (README)", "ToolLLaMA-DFS": "ToolLLaMA-DFSDT (README)"}


@pytest.mark.skipif(not LEADERBOARD.exists(), reason="toolbench-sample is outside the repository")
def test_readme_results_match_toolbench_leaderboard_file():
    """The leaderboard's per-group *_WinRate columns hold the README's pass rates (see SOURCE.md)."""
    readme = {s["label"]: s for s in report.reference_series(ROOT / "data/toolbench_readme_results.csv", "readme")}
    names = {"ChatGPT-ReACT": "ChatGPT-ReACT (README)", "ToolLLaMA-DFSDT": "ToolLLaMA-DFSDT (README)",
             "GPT4-DFSDT": "GPT4-DFSDT (README)", "Claude-2-ReACT": "Claude-2-ReACT (README)"}
    board = {r["Method"]: r for r in read_csv(LEADERBOARD)}
    for method, label in names.items():
        for g in GROUPS:
            assert float(board[method][f"{g}_WinRate"]) == readme[label]["value"][g], (method, g)


# ----------------------------------------------------------------------------- tables and figures
def test_tables_pick_majority_and_carry_values(smoke_run):
    cfg, paths = smoke_run
    t1 = {r["row"]: r for r in read_csv(paths["table1_csv"])}
    ours = t1["Fine-tuned (smoke)"]
    assert ours["aggregation"] == "majority" and ours["judge"] == "offline"
    assert ours["pass_rate"] == f"{100 * 43 / 110:.2f}"
    assert (ours["ci_low"], ours["ci_high"]) == tuple(f"{x:.2f}" for x in report.wilson(43, 110))
    assert ours["gap_to_paper_ours_pts"] == f"{77.55 - float(ours['pass_rate']):.2f}"
    assert t1["ChatGPT-CoT"]["gap_to_paper_ours_pts"] == "51.55"
    assert t1["ChatGPT-ReACT (README)"]["pass_rate"] == "40.20"
    assert t1["Fine-tuned (smoke), mean"]["aggregation"] == "mean"
    assert t1["Other run"]["pass_rate"] == f"{100 * 67 / 110:.2f}"
    rows = list(t1)
    assert rows[:2] == ["Ours", "Fine-tuned (smoke)"]
    # The same model untrained: its own row, judged the same way, measured from the fine-tuned one.
    before = t1["Untrained (smoke)"]
    assert before["pass_rate"] == "0.00" and before["judge"] == "offline" and before["aggregation"] == "majority"
    assert before["gap_to_reproduced_pts"] == ours["pass_rate"]
    assert rows.index("Untrained (smoke)") < rows.index("Other run")
    assert rows[rows.index("ChatGPT-CoT") + 1] == "ChatGPT-ReACT (README)"      # shown beside
    t2 = {r["row"]: r for r in read_csv(paths["table2_csv"])}
    assert t2["Fine-tuned (smoke)"]["G1_tool"] == "60.0"
    assert t2["Ours"]["G2_category"] == "80.5" and t2["Ours"]["weighted_mean"] == "77.55"
    assert t2["Ours"]["printed_avg"] == "77.6"


def test_markdown_and_svg_carry_stamp_and_judge_note(smoke_run):
    _, paths = smoke_run
    for key in ("table1_md", "table2_md", "audit_md", "contamination_md"):
        text = paths[key].read_text()
        assert STAMP in text and report.OFFLINE_NOTE in text, key
        assert "majority aggregation" in text
    assert "G1-instruction" in paths["table2_md"].read_text()
    for key in ("radar_svg", "paper_vs_reproduced_svg"):
        svg = paths[key].read_text()
        assert STAMP in svg and report.OFFLINE_NOTE in svg, key
        assert "<dc:date>" not in svg
        assert "Fine-tuned (smoke)" in svg and "Untrained (smoke)" in svg, key
    series = {r["series"] for r in read_csv(paths["paper_vs_reproduced_csv"])}
    assert {"Fine-tuned (smoke)", "Untrained (smoke)", "Ours"} <= series


def test_pngs_are_non_trivial(smoke_run):
    import matplotlib.image
    _, paths = smoke_run
    for key in ("radar_png", "paper_vs_reproduced_png"):
        assert paths[key].stat().st_size > 30_000, key
        pixels = matplotlib.image.imread(paths[key])
        assert pixels.shape[0] > 500 and pixels.shape[1] > 800
        assert pixels.std() > 0.05
        assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[-1])[::97].tolist()}) > 30
        red = (pixels[..., 0] > 0.9) & (pixels[..., 1] < 0.2) & (pixels[..., 2] < 0.2)
        assert red.sum() > 500, "the red stamp banner is missing"


def test_index_names_every_output(smoke_run):
    cfg, paths = smoke_run
    index = json.loads(paths["index"].read_text())
    assert set(index) == set(paths) - {"index"}
    assert all(Path(p).exists() for p in index.values())
    assert {"table1_md", "table2_csv", "radar_png", "radar_svg", "audit_csv", "contamination_csv"} <= set(index)


def test_run_is_deterministic(smoke_run, tmp_path):
    cfg, paths = smoke_run
    again = report.run(cfg)
    for key in ("radar_svg", "paper_vs_reproduced_svg", "radar_png", "table1_csv", "audit_csv"):
        assert again[key].read_bytes() == paths[key].read_bytes(), key


def test_paper_profile_without_upstream_outputs(tmp_path):
    cfg = load_cfg(tmp_path, profile="paper")
    paths = report.run(cfg)
    assert STAMP not in paths["table1_md"].read_text()
    assert "No reproduced run yet" in paths["table1_md"].read_text()
    audit = {r["claim"]: r for r in read_csv(paths["audit_csv"])}
    assert audit["data prep yields 187,542 examples"]["verdict"] == "not available"
    assert audit["training runs 5,860 steps"]["verdict"] == "not available"
    assert paths["radar_png"].stat().st_size > 30_000


def test_stage_04_names_majority_vote_and_offline_judge(tmp_path):
    """Stage 04 writes aggregation majority_vote / mean_score and judge "offline judge"."""
    cfg = load_cfg(tmp_path)
    write_pass_rate(Path(cfg["output_dir"]) / "pass_rate.csv", judge="offline judge",
                    aggregations=("mean_score", "majority_vote"))
    paths = report.run(cfg)
    t1 = {r["row"]: r for r in read_csv(paths["table1_csv"])}
    assert t1["Fine-tuned (smoke)"]["aggregation"] == "majority_vote"
    assert t1["Fine-tuned (smoke)"]["pass_rate"] == f"{100 * 43 / 110:.2f}"
    assert t1["Fine-tuned (smoke), mean_score"]["ci_low"] == ""      # no Wilson interval for a mean
    assert report.OFFLINE_NOTE in paths["radar_svg"].read_text()


def test_judge_note_absent_for_llm_judge(tmp_path):
    cfg = load_cfg(tmp_path, profile="paper")
    write_pass_rate(Path(cfg["output_dir"]) / "pass_rate.csv", judge="gpt-3.5-turbo-16k",
                    aggregations=("majority",))
    text = report.run(cfg)["table1_md"].read_text()
    assert report.OFFLINE_NOTE not in text and "gpt-3.5-turbo-16k" in text


# ----------------------------------------------------------------------------- audit
def paper_audit() -> dict[str, dict]:
    claims = report.read_claims(ROOT / "data/paper_claims.csv")
    paper = report.reference_series(ROOT / "data/paper_results.csv", "paper")
    readme = report.reference_series(ROOT / "data/toolbench_readme_results.csv", "readme")
    lines = (report.audit_training(claims) + report.audit_tables(paper, claims)
             + report.audit_text(paper, readme, claims) + report.audit_readme(paper, readme))
    return {l["claim"]: l for l in lines}


def test_audit_flags_sequence_length_against_opt_positions():
    line = paper_audit()["max sequence length 8192 with facebook/opt-350m"]
    assert line["verdict"] == "inconsistent"
    assert line["claimed"] == "8192" and line["recomputed"].startswith("2048")


def test_audit_step_count():
    line = paper_audit()["5,860 optimizer steps for 187,542 examples at batch 32, 1 epoch"]
    assert line["verdict"] == "consistent"
    assert line["recomputed"].startswith("5860.69")
    assert "= 5861 steps" in line["note"]              # what the installed Trainer would run


def test_audit_step_count_catches_a_wrong_claim():
    claims = report.read_claims(ROOT / "data/paper_claims.csv")
    for c in claims:
        if c["claim"] == "stated_steps":
            c["value"] = "5000"
    assert report.audit_training(claims)[1]["verdict"] == "inconsistent"


def test_audit_weighted_and_unweighted_means():
    audit = paper_audit()
    weighted = audit["Ours: Table 1 overall = query-weighted mean of Table 2"]
    assert (weighted["claimed"], weighted["recomputed"], weighted["verdict"]) == ("77.55", "77.5455", "consistent")
    plain = audit["Ours: Table 2 Avg = unweighted mean of Table 2"]
    assert (plain["claimed"], plain["recomputed"], plain["verdict"]) == ("77.6", "77.7500", "inconsistent")
    for model in ("ToolLLaMA-DFS", "ChatGPT-CoT", "ToolLLaMA-CoT", "Claude-CoT"):
        assert audit[f"{model}: Table 1 overall = query-weighted mean of Table 2"]["verdict"] == "consistent"
        assert audit[f"{model}: Table 2 Avg = unweighted mean of Table 2"]["verdict"] == "inconsistent"
    assert audit["ChatGPT-CoT: Table 2 Avg = unweighted mean of Table 2"]["recomputed"] == "24.2500"


def test_audit_ratio_gaps_and_readme():
    audit = paper_audit()
    ratio = audit["2.98x ChatGPT-CoT's pass rate (Ours / ChatGPT-CoT, Table 1)"]
    assert ratio["verdict"] == "consistent" and "2.9827" in ratio["recomputed"]
    gap = audit["Ours ahead of ToolLLaMA-DFS overall (gap in points)"]
    assert gap["recomputed"].startswith("+47.37 pts, ratio 2.57x")
    assert audit["Ours ahead of ChatGPT-CoT overall (gap in points)"]["recomputed"].startswith("+51.55 pts")
    vs = audit["ChatGPT-CoT (paper Table 1) vs ChatGPT-ReACT (README) Average"]
    assert vs["verdict"] == "inconsistent" and "-14.20 pts" in vs["recomputed"]
    assert audit["ToolLLaMA-DFS (paper Table 2) vs ToolLLaMA-DFSDT (README) per group"]["verdict"] == "inconsistent"


def test_audit_reads_our_outputs(tmp_path):
    cfg = load_cfg(tmp_path, profile="paper")
    out = Path(cfg["output_dir"])
    out.mkdir(parents=True)
    (out / "data_stats.json").write_text(json.dumps({
        "source": "x", "records_read": 187542, "example_per": "record", "examples_written": 187542,
        "examples_per_choice": {"record": 187542, "assistant_turn": 400000}, "max_positions": 2048,
        "over_max_positions": 12, "token_length_percentiles": {"p50": 900, "max": 9000}}))
    (out / "train_summary.json").write_text(json.dumps({
        "examples": 187542, "effective_batch": 32, "optimizer_steps": 5861,
        "paper_steps_at_batch_32": {"floor": 5860, "ceil": 5861, "paper": 5860, "examples_over_32": 5860.69}}))
    claims = report.read_claims(ROOT / "data/paper_claims.csv")
    audit = {l["claim"]: l for l in report.audit_ours(cfg, claims, [])}
    assert audit["data prep yields 187,542 examples (example_per=record)"]["verdict"] == "consistent"
    assert audit["examples with one example per assistant_turn"]["verdict"] == "inconsistent"
    assert audit["our optimizer steps = ceil(examples / effective batch) x epochs"]["verdict"] == "consistent"
    assert audit["paper's 5,860 steps vs our run"]["verdict"] == "inconsistent"
    assert audit["paper's steps at batch 32 (train_summary.paper_steps_at_batch_32)"]["verdict"] == "consistent"


def paper_steps_line(tmp_path, stated=None) -> dict:
    """audit_ours' row for train_summary.json as stage 02 writes it (lib.train.paper_steps())."""
    from lib import train

    cfg = load_cfg(tmp_path, profile="paper")
    out = Path(cfg["output_dir"])
    out.mkdir(parents=True)
    (out / "train_summary.json").write_text(json.dumps({
        "examples": 187542, "effective_batch": 32, "optimizer_steps": 5861,
        "paper_steps_at_batch_32": train.paper_steps()}))
    claims = report.read_claims(ROOT / "data/paper_claims.csv")
    for c in claims:
        if stated and c["claim"] == "stated_steps":
            c["value"] = stated
    audit = {l["claim"]: l for l in report.audit_ours(cfg, claims, [])}
    return audit["paper's steps at batch 32 (train_summary.paper_steps_at_batch_32)"]


def test_audit_paper_steps_from_train_summary(tmp_path):
    """The paper's 5,860 is floor(187,542 / 32), older Trainers' count; today's Trainer runs 5,861."""
    line = paper_steps_line(tmp_path)
    assert (line["claimed"], line["verdict"]) == ("5860", "consistent")
    assert "floor 5860" in line["recomputed"] and "ceil 5861" in line["recomputed"]
    assert "5,861" in line["note"] and "floor" in line["note"]


def test_audit_paper_steps_catches_a_wrong_claim(tmp_path):
    assert paper_steps_line(tmp_path, stated="5000")["verdict"] == "inconsistent"


THREE = ["G1_instruction", "G2_instruction", "G3_instruction"]
THREE_NOTE = ("overall over 3 of 6 groups: G1_instruction, G2_instruction, G3_instruction; "
              "the paper's overall covers all six")


def test_overall_over_three_groups_is_labelled(tmp_path):
    """A run over StableToolBench's three sample groups: its overall is not the paper's 77.55."""
    cfg = load_cfg(tmp_path, profile="paper")            # not "not comparable" for being a smoke run
    write_pass_rate(Path(cfg["output_dir"]) / "pass_rate.csv", rows=[r for r in FIXED if r[0] in THREE])
    paths = report.run(cfg)
    ours = {r["row"]: r for r in read_csv(paths["table1_csv"])}["Fine-tuned (paper)"]
    assert ours["covers"] == "+".join(THREE) and THREE_NOTE in ours["figure"]
    assert {r["row"]: r for r in read_csv(paths["table1_csv"])}["Ours"]["covers"] == "+".join(GROUPS)
    for key in ("table1_md", "table2_md", "audit_md", "radar_svg", "paper_vs_reproduced_svg"):
        assert THREE_NOTE in paths[key].read_text(), key
    bars = {(r["group"], r["series"]): r for r in read_csv(paths["paper_vs_reproduced_csv"])}
    assert bars["overall", "Fine-tuned (paper)"]["covers"] == "+".join(THREE)
    audit = {r["claim"]: r for r in read_csv(paths["audit_csv"])}
    vs_paper = audit["Fine-tuned (paper) overall pass rate vs the paper's 77.55"]
    assert vs_paper["verdict"] == "not comparable (3 of 6 groups)" and THREE_NOTE in vs_paper["note"]


def test_overall_over_all_six_groups_has_no_note(smoke_run):
    _, paths = smoke_run
    assert "overall over" not in paths["table1_md"].read_text()
    ours = {r["row"]: r for r in read_csv(paths["table1_csv"])}["Fine-tuned (smoke)"]
    assert ours["covers"] == "+".join(GROUPS) and ours["figure"] == "overall row of pass_rate.csv"


# ----------------------------------------------------------------------------- contamination
def test_normalise_and_ngrams():
    assert report.normalise("  Hello,   WORLD!\nBegin_now ") == "hello world begin now"
    assert report.ngrams("a b c d", 3) == {("a", "b", "c"), ("b", "c", "d")}
    assert report.ngrams("a b", 3) == {("a", "b")}


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_contamination_finds_planted_duplicates(tmp_path, fmt):
    test_dir, train = write_queries(tmp_path, fmt)
    cfg = config.load("smoke", {"output_dir": str(tmp_path / "out"), "data.test_dir": str(test_dir),
                                "data.train_path": str(train)})
    queries, source = report.training_queries(cfg)
    assert source == str(train) and len(queries) == 96
    assert queries[0][1] == LONG                       # the user turn without "Begin!"
    rows, pairs = report.contamination(report.test_queries(cfg), queries, 8, 0.5)
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
    queries, source = report.training_queries(cfg)
    assert source.endswith("sft") and queries == [("Step 1: x", NEAR, frozenset())]
    rows, _ = report.contamination(report.test_queries(cfg), queries, 8, 0.5)
    by = {r["group"]: r for r in rows}
    assert by["G2_category"]["exact_dups"] == 1 and by["G1_instruction"]["near_dups"] == 1
    strict, _ = report.contamination(report.test_queries(cfg), queries, 8, 0.99)
    assert {r["group"]: r for r in strict}["G1_instruction"]["near_dups"] == 0


def test_split_check_finds_unseen_tools_and_categories_as_toolbench_splits_them(tmp_path):
    from lib import sample
    sample.generate(tmp_path / "s", seed=3, train_queries=40, queries_per_group=3)
    cfg = config.load("smoke", {"output_dir": str(tmp_path / "out"),
                                "data.test_dir": str(tmp_path / "s" / "test_instruction"),
                                "data.train_path": str(tmp_path / "s" / "train" / "toolllama_G123_dfs_train.json"),
                                "data.toolenv_dir": str(tmp_path / "s" / "toolenv")})
    train, _ = report.training_queries(cfg)
    by = {r["group"]: r for r in report.split_check(cfg, report.test_queries(cfg), train)}
    assert by["G1_tool"]["seen_tool"] == 0 and by["G1_tool"]["seen_category"] == 3
    assert by["G1_category"]["seen_category"] == by["G2_category"]["seen_category"] == 0
    for group in ("G1_instruction", "G2_instruction", "G3_instruction"):
        assert by[group]["seen_tool"] == by[group]["n_test"] > 0
    assert by["overall"]["train_tools"] == len({t for _, _, ts in train for t in ts}) > 5
    # A training tool that a test query uses is found: plant one and the count moves.
    planted = train + [("x", "q", frozenset({sample.toolbench.standardize_name(sample.UNSEEN_TOOLS[0])}))]
    tools_now = {r["group"]: r for r in report.split_check(cfg, report.test_queries(cfg), planted)}
    assert tools_now["G1_tool"]["seen_tool"] >= 1
    # Without tool documents the categories are unknown, not "0 seen".
    cfg["data"]["toolenv_dir"] = str(tmp_path / "nowhere")
    assert report.split_check(cfg, report.test_queries(cfg), train)[0]["seen_category"] == ""


def test_params_counted_from_safetensors_headers(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"a": np.zeros((3, 4), np.float32), "b": np.zeros(5, np.float16)}, str(tmp_path / "model.safetensors"))
    assert report.count_params(tmp_path) == 17
    assert report.count_params(tmp_path / "missing") is None


def test_nothing_upstream_at_all(tmp_path):
    """The paper profile's default data paths absent too: every output still written, marked so."""
    cfg = config.load("paper", {"output_dir": str(tmp_path / "out"),
                                "data.test_dir": str(tmp_path / "no_tests"),
                                "data.train_path": str(tmp_path / "no_train.json")})
    paths = report.run(cfg)
    (row,) = read_csv(paths["contamination_csv"])
    assert (row["group"], row["n_test"], row["train_source"]) == ("overall", "0", "not available")
    audit = {r["claim"]: r["verdict"] for r in read_csv(paths["audit_csv"])}
    assert audit["test queries in data.test_dir"] == "not available"


@pytest.mark.skipif(not (TOOLBENCH_SAMPLE / "derived").exists(), reason="toolbench-sample is outside the repository")
def test_split_check_reads_the_tools_of_real_toolbench_training_records():
    train = TOOLBENCH_SAMPLE / "derived/toolllama_format_from_data_example.json"
    cfg = config.load("smoke", {"data.train_path": str(train), "data.toolenv_dir": "/nonexistent"})
    records, _ = report.training_queries(cfg)
    tools = set().union(*(r[2] for r in records))
    assert len(records) == 33 and len(tools) >= 5
    # Read independently: the function list after ToolBench's "following APIs" sentence, as a literal.
    import ast
    raw = json.loads(train.read_text())
    names = {fn["name"] for r in raw for fn in ast.literal_eval(
        r["conversations"][0]["value"].rsplit("following APIs: ", 1)[1])}
    assert {n.rsplit("_for_", 1)[1] for n in names if "_for_" in n} == tools
