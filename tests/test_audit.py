"""The claim audit (lib/report/audit.py): the printed-precision rule, the paper's arithmetic, our own outputs."""
from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from lib.common import config
from lib.report import report
from lib.report.audit import (audit_ours, audit_readme, audit_tables, audit_text, audit_training, half_unit,
                       matches_printed, query_weighted_mean, read_claims, round_like, table_lines,
                       unweighted_mean)
from test_report import load_cfg

ROOT = config.ROOT


def test_rounding_rule_uses_the_printed_precision():
    assert half_unit("77.55") == Decimal("0.005")
    assert half_unit("77.6") == Decimal("0.05")
    assert half_unit("29") == Decimal("0.5")
    assert matches_printed(Decimal(85300) / 1100, "77.55")       # 77.5454...
    assert not matches_printed(Decimal("77.75"), "77.6")
    assert round_like(Decimal("77.55"), "77.6") == Decimal("77.6")  # half-up, exact decimal


def paper_audit() -> dict[str, dict]:
    claims = read_claims(ROOT / "data/paper_claims.csv")
    paper = report.reference_series(ROOT / "data/paper_results.csv", "paper")
    readme = report.reference_series(ROOT / "data/toolbench_readme_results.csv", "readme")
    lines = (audit_training(claims) + audit_tables(paper, claims)
             + audit_text(paper, readme, claims) + audit_readme(paper, readme))
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
    claims = read_claims(ROOT / "data/paper_claims.csv")
    for c in claims:
        if c["claim"] == "stated_steps":
            c["value"] = "5000"
    assert audit_training(claims)[1]["verdict"] == "inconsistent"


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


def test_one_paper_row_recomputed_exactly_from_its_printed_groups():
    ours = report.reference_series(ROOT / "data/paper_results.csv", "paper")[0]
    assert ours["label"] == "Ours"
    # (78.5 + 74.0 + 79.0 + 74.5 + 80.5) x 200 + 80.0 x 100 over 1,100 queries; the plain mean over six.
    assert query_weighted_mean(ours) == Decimal(85300) / 1100
    assert unweighted_mean(ours) == Decimal("77.75")
    lines = table_lines(ours)
    assert [l["verdict"] for l in lines] == ["consistent", "inconsistent", "inconsistent", "consistent"]
    assert all(l in audit_tables(report.reference_series(ROOT / "data/paper_results.csv", "paper"),
                                 read_claims(ROOT / "data/paper_claims.csv")) for l in lines)


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
    out = Path(cfg.output_dir)
    out.mkdir(parents=True)
    (out / "data_stats.json").write_text(json.dumps({
        "source": "x", "records_read": 187542, "example_per": "record", "examples_written": 187542,
        "examples_per_choice": {"record": 187542, "assistant_turn": 400000}, "max_positions": 2048,
        "over_max_positions": 12, "token_length_percentiles": {"p50": 900, "max": 9000}}))
    (out / "train_summary.json").write_text(json.dumps({
        "examples": 187542, "effective_batch": 32, "optimizer_steps": 5861,
        "paper_steps_at_batch_32": {"floor": 5860, "ceil": 5861, "paper": 5860, "examples_over_32": 5860.69}}))
    claims = read_claims(ROOT / "data/paper_claims.csv")
    audit = {l["claim"]: l for l in audit_ours(cfg, claims, [])}
    assert audit["data prep yields 187,542 examples (example_per=record)"]["verdict"] == "consistent"
    assert audit["examples with one example per assistant_turn"]["verdict"] == "inconsistent"
    assert audit["our optimizer steps = ceil(examples / effective batch) x epochs"]["verdict"] == "consistent"
    assert audit["paper's 5,860 steps vs our run"]["verdict"] == "inconsistent"
    assert audit["paper's steps at batch 32 (train_summary.paper_steps_at_batch_32)"]["verdict"] == "consistent"


def paper_steps_line(tmp_path, stated=None) -> dict:
    """audit_ours' row for train_summary.json as stage 02 writes it (lib.common.paper.epoch_steps())."""
    from lib.common import paper

    cfg = load_cfg(tmp_path, profile="paper")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True)
    (out / "train_summary.json").write_text(json.dumps({
        "examples": 187542, "effective_batch": 32, "optimizer_steps": 5861,
        "paper_steps_at_batch_32": paper.epoch_steps()}))
    claims = read_claims(ROOT / "data/paper_claims.csv")
    for c in claims:
        if stated and c["claim"] == "stated_steps":
            c["value"] = stated
    audit = {l["claim"]: l for l in audit_ours(cfg, claims, [])}
    return audit["paper's steps at batch 32 (train_summary.paper_steps_at_batch_32)"]


def test_audit_paper_steps_from_train_summary(tmp_path):
    """The paper's 5,860 is floor(187,542 / 32), older Trainers' count; today's Trainer runs 5,861."""
    line = paper_steps_line(tmp_path)
    assert (line["claimed"], line["verdict"]) == ("5860", "consistent")
    assert "floor 5860" in line["recomputed"] and "ceil 5861" in line["recomputed"]
    assert "5,861" in line["note"] and "floor" in line["note"]


def test_audit_paper_steps_catches_a_wrong_claim(tmp_path):
    assert paper_steps_line(tmp_path, stated="5000")["verdict"] == "inconsistent"
