"""Stage 05 (lib/report/report.py): the row sets, tables, figures, index.json, the shipped data files.

The claim audit is tested in test_audit.py, the contamination and split checks in test_contamination.py."""
from __future__ import annotations

import csv
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import SHARED, TOOLBENCH_SAMPLE
from lib.common import config, stats, tables
from lib.report import report
from lib.report.audit import matches_printed
from lib.report.series import OFFLINE_NOTE
from test_contamination import write_queries

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
            lo, hi = stats.wilson_percent(p, n) if agg.startswith("majority") else ("", "")
            ci = f"{lo:.2f},{hi:.2f}" if agg.startswith("majority") else ","
            lines.append(f"react,{g},{n},{p},{rate:.2f},{ci},{agg},{judge}")
    path.write_text("\n".join(lines) + "\n")
    return path


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
    write_pass_rate(Path(cfg.output_dir) / "pass_rate.csv")
    write_pass_rate(Path(cfg.output_dir) / "untrained" / "pass_rate.csv", rows=[(g, n, 0) for g, n, _ in FIXED])
    return cfg, report.run(cfg)


# ----------------------------------------------------------------------------- helpers
def test_group_labels():
    assert [tables.group_label(g) for g in GROUPS[:2]] == ["G1-instruction", "G1-category"]


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
        assert matches_printed(plain, s["printed"]["average"]), s["label"]
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
    assert (ours["ci_low"], ours["ci_high"]) == tuple(f"{x:.2f}" for x in stats.wilson_percent(43, 110))
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


def test_a_table2_cell_is_the_rate_with_its_wilson_interval_or_the_printed_figure(smoke_run):
    cfg, paths = smoke_run
    fine_tuned = report.run_series(cfg)[0]
    assert fine_tuned["label"] == "Fine-tuned (smoke)" and fine_tuned["aggregation"] == "majority"
    low, high = stats.wilson_percent(12, 20)                                  # G1_tool: 12 of 20
    cell = report.table2_cell(fine_tuned, "G1_tool")
    assert cell == f"60.0 [{low:.1f}, {high:.1f}]" and f"| {cell} |" in paths["table2_md"].read_text()
    paper = report.reference_series(ROOT / "data/paper_results.csv", "paper")
    assert report.table2_cell(paper[0], "G3_instruction") == "80.0"    # as printed, no interval
    assert report.table2_cell(paper[0], "no such group") == ""


def test_markdown_and_svg_carry_stamp_and_judge_note(smoke_run):
    _, paths = smoke_run
    for key in ("table1_md", "table2_md", "audit_md", "contamination_md"):
        text = paths[key].read_text()
        assert STAMP in text and OFFLINE_NOTE in text, key
        assert "majority aggregation" in text
    assert "G1-instruction" in paths["table2_md"].read_text()
    for key in ("radar_svg", "paper_vs_reproduced_svg"):
        svg = paths[key].read_text()
        assert STAMP in svg and OFFLINE_NOTE in svg, key
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
    write_pass_rate(Path(cfg.output_dir) / "pass_rate.csv", judge="offline judge",
                    aggregations=("mean_score", "majority_vote"))
    paths = report.run(cfg)
    t1 = {r["row"]: r for r in read_csv(paths["table1_csv"])}
    assert t1["Fine-tuned (smoke)"]["aggregation"] == "majority_vote"
    assert t1["Fine-tuned (smoke)"]["pass_rate"] == f"{100 * 43 / 110:.2f}"
    assert t1["Fine-tuned (smoke), mean_score"]["ci_low"] == ""      # no Wilson interval for a mean
    assert OFFLINE_NOTE in paths["radar_svg"].read_text()


def test_judge_note_absent_for_llm_judge(tmp_path):
    cfg = load_cfg(tmp_path, profile="paper")
    write_pass_rate(Path(cfg.output_dir) / "pass_rate.csv", judge="gpt-3.5-turbo-16k",
                    aggregations=("majority",))
    text = report.run(cfg)["table1_md"].read_text()
    assert OFFLINE_NOTE not in text and "gpt-3.5-turbo-16k" in text


THREE = ["G1_instruction", "G2_instruction", "G3_instruction"]
THREE_NOTE = ("overall over 3 of 6 groups: G1_instruction, G2_instruction, G3_instruction; "
              "the paper's overall covers all six")


def test_overall_over_three_groups_is_labelled(tmp_path):
    """A run over StableToolBench's three sample groups: its overall is not the paper's 77.55."""
    cfg = load_cfg(tmp_path, profile="paper")            # not "not comparable" for being a smoke run
    write_pass_rate(Path(cfg.output_dir) / "pass_rate.csv", rows=[r for r in FIXED if r[0] in THREE])
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
