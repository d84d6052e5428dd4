"""Stage 04 (lib/judge/judge.py) end to end: selection, pass-rate and checks tables, resuming, by the
offline judge and by the LLM judge against a scripted OpenAI-compatible server on 127.0.0.1 (real
HTTP through the openai client). The rules each have their own tests: test_tooleval, test_stats,
test_trajectory_checks, test_offline_judge, test_judgments, test_llm_judge, test_win_rate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lib.common import config, resume, stats, store, tables
from lib.toolbench import tooleval
from lib.checks import trajectory_checks
from lib.judge import judge, judgments, llm_judge, pass_rates

from judge_helpers import GOOD, SECRET, finish, llm_cfg, make_cfg, query, read_csv, step, traj


# ------------------------------------------------------------------------------------------------
# The offline judge through judge.run
# ------------------------------------------------------------------------------------------------
def test_offline_run_writes_both_aggregations_labelled_offline_and_resumes(tmp_path):
    g1 = [traj(1, GOOD), traj(2, GOOD[:1], finish_type="max_iterations"),
          traj(3, [GOOD[0], step("get_stock_for_x", "{}"), finish()])]
    g3 = [traj(10, GOOD), traj(11, [step("get_weather_for_weather_hub", '{"city": "P"}',
                                          '{"error": "500", "response": ""}'), finish()])]
    qs = {"G1_instruction": [query(1), query(2), query(3)], "G3_instruction": [query(10), query(11)]}
    cfg = make_cfg(tmp_path, {"G1_instruction": g1, "G3_instruction": g3}, qs, kind="offline")
    table = judge.run(cfg, log=lambda *a: None)
    out = Path(cfg.output_dir)
    rows = read_csv(out / "pass_rate.csv")
    assert list(rows[0]) == pass_rates.CSV_COLUMNS
    assert {r["aggregation"] for r in rows} == {"majority", "mean"}
    assert {r["judge"] for r in rows} == {"offline judge"}
    by = {(r["aggregation"], r["group"]): r for r in rows}
    # q1 Solved (pass), q2 no Finish (fail), q3 grounded but one call hallucinated -> Unsure (coins), q10 Solved,
    # q11 only an erroring call -> Unsolved (fail).
    assert by["mean", "G1_instruction"]["pass_rate"] == "50.0"      # (1 + 0 + 0.5) / 3
    assert by["mean", "G3_instruction"]["pass_rate"] == "50.0"
    assert by["mean", "overall"]["pass_rate"] == "50.0"            # 2.5 / 5
    recs = {r["query_id"]: r for r in store.read_jsonl(out / "judgments" / "G1_instruction.jsonl")}
    assert recs[1]["passed"] and not recs[2]["passed"] and recs[2]["precheck"] == "no Finish call"
    assert all(a["coin"] for a in recs[3]["assessments"])
    assert recs[3]["passed"] == tooleval.majority([a["vote"] for a in recs[3]["assessments"]])
    passed = sum(r["passed"] for r in recs.values()) + 1                # + q10
    overall = by["majority", "overall"]
    assert int(overall["n"]) == 5 and int(overall["passed"]) == passed
    assert float(overall["pass_rate"]) == round(100 * passed / 5, 2)
    assert float(overall["ci_low"]) == round(100 * stats.wilson(passed, 5)[0], 2)
    assert "offline judge" in (out / "pass_rate.md").read_text() and "NOT ToolEval" in (
        out / "pass_rate.md").read_text()
    assert list(table["aggregation"].unique()) == ["majority", "mean"]
    checks = {r["group"]: r for r in read_csv(out / "checks.csv")}
    assert checks["G1_instruction"]["finished"] == "66.67"
    # Deterministic, and a rerun judges nothing again.
    before = (out / "pass_rate.csv").read_text()
    lines = (out / "judgments" / "G1_instruction.jsonl").read_text().splitlines()
    (out / "judgments" / "G1_instruction.jsonl").write_text(
        "\n".join(lines[:2]) + "\n" + lines[2][:40], encoding="utf-8")   # cut mid-line
    judge.run(cfg, log=lambda *a: None)
    after_lines = (out / "judgments" / "G1_instruction.jsonl").read_text().splitlines()
    assert len(after_lines) == 3 and after_lines[2] == lines[2]
    assert (out / "pass_rate.csv").read_text() == before


def test_a_second_stage_04_on_the_same_folder_is_refused_and_judges_nothing(tmp_path):
    cfg = make_cfg(tmp_path, {"G1_instruction": [traj(1, GOOD)]}, {"G1_instruction": [query(1)]},
                   kind="offline")
    out = Path(cfg.output_dir)
    with resume.exclusive(out / "judgments", "stage 04 judge"):     # another run holds it
        with pytest.raises(resume.FolderBusy, match=r"judgments is being written by another run \(pid \d+, stage 04"):
            judge.run(cfg, log=lambda *a: None)
    assert not (out / "judgments" / "G1_instruction.jsonl").exists()
    judge.run(cfg, log=lambda *a: None)
    assert len(store.read_jsonl(out / "judgments" / "G1_instruction.jsonl")) == 1


def test_stage_04_judges_the_queries_stage_03_selects_and_leaves_the_rest(tmp_path):
    """inference.max_queries_per_group=1 after a run of 3: stage 03 reports 1 query, so does 04."""
    trajs = [traj(1, GOOD), traj(2, GOOD), traj(3, GOOD[:1], finish_type="max_iterations")]
    cfg = make_cfg(tmp_path, {"G1_instruction": trajs}, {"G1_instruction": [query(i) for i in (1, 2, 3)]},
                   kind="offline")
    cfg = config.derive(cfg, {"inference.max_queries_per_group": 1})
    out = Path(cfg.output_dir)
    file_before = (out / "trajectories" / "G1_instruction.jsonl").read_bytes()
    logged = []
    judge.run(cfg, log=logged.append)
    note = "G1_instruction: judged 1 of 3 trajectories in the file: inference.max_queries_per_group=1"
    assert note in logged and note in (out / "pass_rate.md").read_text()
    assert [r["query_id"] for r in store.read_jsonl(out / "judgments" / "G1_instruction.jsonl")] == [1]
    rows = {(r["aggregation"], r["group"]): r for r in read_csv(out / "pass_rate.csv")}
    assert rows["majority", "G1_instruction"]["n"] == rows["majority", "overall"]["n"] == "1"
    summary = json.loads((out / "judge_summary.json").read_text())
    assert summary["selection"]["G1_instruction"]["in_file"] == 3
    assert summary["selection"]["G1_instruction"]["judged"] == 1
    assert (out / "trajectories" / "G1_instruction.jsonl").read_bytes() == file_before   # untouched
    # Two selected, one never run by stage 03: judged what there is, and said so as a warning.
    (out / "trajectories" / "G1_instruction.jsonl").write_text(json.dumps(traj(2, GOOD)) + "\n")
    cfg = config.derive(cfg, {"inference.max_queries_per_group": 2})
    logged.clear()
    judge.run(cfg, log=logged.append)
    assert ("WARNING: G1_instruction: 1 of the 2 selected queries have no trajectory "
            "(stage 03 did not finish them: 1)") in logged


def test_a_group_without_queries_is_named_not_a_silent_nan(tmp_path):
    qs = {"G1_instruction": [query(1)], "G2_instruction": [query(2)]}
    cfg = make_cfg(tmp_path, {"G1_instruction": [traj(1, GOOD)], "G2_instruction": []}, qs, kind="offline")
    logged = []
    judge.run(cfg, log=logged.append)
    out = Path(cfg.output_dir)
    assert any(line.startswith("WARNING: G2_instruction: ") and "no queries" in line for line in logged)
    assert "G2_instruction: no queries" in (out / "pass_rate.md").read_text()
    rows = read_csv(out / "pass_rate.csv")
    assert {r["group"] for r in rows} == {"G1_instruction", "overall"}
    assert all(r["pass_rate"] != "nan" for r in rows)
    assert {r["covers"] for r in rows if r["group"] == "overall"} == {"G1_instruction"}
    summary = json.loads((out / "judge_summary.json").read_text())
    assert summary["no_queries"] == ["G2_instruction"]
    # Every group empty: nothing to report, an error rather than a table of nan.
    cfg = make_cfg(tmp_path / "none", {"G1_instruction": []}, {"G1_instruction": [query(1)]}, kind="offline")
    with pytest.raises(judgments.JudgeInputError, match="no trajectories to judge"):
        judge.run(cfg, log=lambda *a: None)


def test_checks_without_any_call_report_no_rate_not_100(tmp_path):
    """0 calls: valid names / valid inputs are 0/0, so n/a with the count of calls, never 100%;
    a trajectory without calls does not count as valid beside one that made calls."""
    silent = [step("", "", "", parse_error="no Action")]
    g1 = [traj(1, silent, finish_type="max_iterations", parse_errors=1)]
    g2 = [traj(2, silent, finish_type="max_iterations", parse_errors=1),
          traj(3, [step("get_stock_for_x", "not json"), finish()])]
    qs = {"G1_instruction": [query(1)], "G2_instruction": [query(2), query(3)]}
    cfg = make_cfg(tmp_path, {"G1_instruction": g1, "G2_instruction": g2}, qs, kind="offline")
    judge.run(cfg, log=lambda *a: None)
    checks = {r["group"]: r for r in read_csv(Path(cfg.output_dir) / "checks.csv")}
    none = checks["G1_instruction"]
    assert none["valid_names"] == none["valid_inputs"] == none["hallucination_rate"] == ""    # not 100
    assert (none["n_calls"], none["with_calls"]) == ("0", "0")
    some = checks["G2_instruction"]
    assert (some["n_calls"], some["with_calls"]) == ("2", "1")
    assert some["valid_names"] == some["valid_inputs"] == "0.0"      # over the run that called
    assert "n/a" in tables.markdown_table(pass_rates.CHECK_COLUMNS, pass_rates.checks_rows({"G1": [{"checks":
        trajectory_checks.deterministic_checks(g1[0], query(1))}]}))


def test_overall_over_some_groups_names_them(tmp_path):
    """StableToolBench's samples hold 3 of the 6 groups: their overall is not the paper's overall."""
    three = ["G1_instruction", "G2_instruction", "G3_instruction"]
    cfg = make_cfg(tmp_path, {g: [traj(i, GOOD)] for i, g in enumerate(three)},
                   {g: [query(i)] for i, g in enumerate(three)}, kind="offline")
    judge.run(cfg, log=lambda *a: None)
    out = Path(cfg.output_dir)
    rows = {(r["aggregation"], r["group"]): r for r in read_csv(out / "pass_rate.csv")}
    assert rows["majority", "overall"]["covers"] == "G1_instruction+G2_instruction+G3_instruction"
    assert rows["majority", "G2_instruction"]["covers"] == "G2_instruction"
    note = ("overall over 3 of 6 groups: G1_instruction, G2_instruction, G3_instruction; "
            "the paper's overall covers all six")
    assert note in (out / "pass_rate.md").read_text()
    assert pass_rates.overall_note(list(config.GROUPS)) == ""


# ------------------------------------------------------------------------------------------------
# The LLM judge through judge.run
# ------------------------------------------------------------------------------------------------
def test_llm_judge_end_to_end_votes_cache_and_no_key_on_disk(tmp_path, server, monkeypatch):
    trajs = [traj(1, GOOD, "SOLVED please"), traj(2, GOOD, "UNSOLVED please"),
             traj(3, GOOD, "UNSURE please"), traj(4, GOOD, "NOPE please"),
             traj(5, GOOD[:1], "SOLVED but never finished", finish_type="max_iterations")]
    cfg = llm_cfg(tmp_path, server, trajs, monkeypatch, max_workers=3)
    judge.run(cfg, log=lambda *a: None)
    out = Path(cfg.output_dir)
    # Requests per assessment: SOLVED 1, UNSOLVED 2 (answer, task), UNSURE 3 (answer, whole run,
    # task), NOPE 2, pre-check fail 0; four assessments each.
    assert len(server.requests) == 4 * (1 + 2 + 3 + 2 + 0)
    assert server.auth == {f"Bearer {SECRET}"}
    seeds = sorted({r["seed"] for r in server.bodies})
    assert seeds == [cfg.judge.seed + i for i in range(4)]     # distinct samples per index
    assert {r["temperature"] for r in server.bodies} == {0.2}
    recs = {r["query_id"]: r for r in store.read_jsonl(out / "judgments" / "G1_instruction.jsonl")}
    assert recs[1]["passed"] and recs[1]["score_mean"] == 1.0 and recs[1]["votes"]["pass"] == 4
    assert not recs[2]["passed"] and recs[2]["score_mean"] == 0.0
    assert recs[3]["score_mean"] == 0.5 and all(a["coin"] for a in recs[3]["assessments"])
    assert [c["function"] for c in recs[3]["assessments"][0]["calls"]] == [
        "check_answer_status", "parse_answer_status", "check_task_solvable"]
    assert recs[4]["passed"] and recs[4]["score_mean"] == 0.0       # Unsolvable task passes ToolEval
    assert recs[5]["precheck"] == "no Finish call" and recs[5]["assessments"][0]["calls"] == []
    assert recs[1]["judge"] == "fake-judge"
    rows = {(r["aggregation"], r["group"]): r for r in read_csv(out / "pass_rate.csv")}
    assert rows["mean", "overall"]["pass_rate"] == "30.0"       # (1 + 0 + .5 + 0 + 0) / 5
    assert rows["majority", "overall"]["judge"] == "fake-judge"
    assert "Prompts: our wording of ToolEval's prompts, lib/toolbench/tooleval_prompts (sha256 " in (out / "pass_rate.md").read_text()
    summary = json.loads((out / "judge_summary.json").read_text())
    assert summary["agreement"]["overall"]["queries_judged"] == 4
    assert summary["agreement"]["overall"]["mean_pairwise_agreement"] == 1.0
    for f in out.rglob("*"):
        if f.is_file():
            assert SECRET not in f.read_text(encoding="utf-8", errors="ignore"), f
    # A rerun - even with the judgments deleted - is answered from the cache: nothing is sent.
    sent = len(server.requests)
    before = (out / "pass_rate.csv").read_text()
    (out / "judgments" / "G1_instruction.jsonl").unlink()
    judge.run(cfg, log=lambda *a: None)
    assert len(server.requests) == sent
    assert (out / "pass_rate.csv").read_text() == before
    assert json.loads((out / "judge_summary.json").read_text())["requests"]["cache_hits"] == sent


def test_a_given_up_answer_is_asked_whether_its_task_was_solvable(tmp_path, server, monkeypatch):
    """ToolEval (rtl.py): an empty or given-up answer is Unsolved without asking, but the judge is
    still asked whether the task was solvable, and an Unsolvable task passes. No Finish: no call."""
    give_up = [GOOD[0], step("Finish", '{"return_type": "give_up_and_restart"}', "")]
    trajs = [traj(1, give_up, "NOPE please", finish_type="give_up_and_restart"),
             traj(2, give_up, "UNSOLVED please", finish_type="give_up_and_restart"),
             traj(3, [GOOD[0], finish("")], "NOPE again", finish_type="max_iterations"),
             traj(4, GOOD, "SOLVED please")]
    cfg = llm_cfg(tmp_path, server, trajs, monkeypatch)
    judge.run(cfg, log=lambda *a: None)
    out = Path(cfg.output_dir)
    recs = {r["query_id"]: r for r in store.read_jsonl(out / "judgments" / "G1_instruction.jsonl")}
    for qid in (1, 2, 3):
        assert [c["function"] for a in recs[qid]["assessments"] for c in a["calls"]] == ["check_task_solvable"] * 4
        assert {a["answer_status"] for a in recs[qid]["assessments"]} == {"Unsolved"}
    assert recs[1]["passed"] and recs[3]["passed"] and not recs[2]["passed"]
    assert "gave up" in recs[1]["precheck"] and recs[3]["precheck"] == "empty final answer"
    assert recs[1]["score_mean"] == 0.0          # StableToolBench's mean scores the answer alone
    rows = {(r["aggregation"], r["group"]): r for r in read_csv(out / "pass_rate.csv")}
    majority = rows["majority", "G1_instruction"]
    assert (majority["pass_rate"], majority["n_solvable"], majority["pass_rate_solvable"]) == ("75.0", "2", "50.0")
    assert "deemed unsolvable: G1_instruction 2 of 4" in (out / "pass_rate.md").read_text()


def test_the_offline_judge_fails_a_given_up_answer_and_says_toolEval_would_ask(tmp_path):
    give_up = [GOOD[0], step("Finish", '{"return_type": "give_up_and_restart"}', "")]
    cfg = make_cfg(tmp_path, {"G1_instruction": [traj(1, give_up, finish_type="give_up_and_restart")]},
                   {"G1_instruction": [query(1)]}, kind="offline")
    judge.run(cfg, log=lambda *a: None)
    rec = store.read_jsonl(Path(cfg.output_dir) / "judgments" / "G1_instruction.jsonl")[0]
    assert not rec["passed"]
    assert "ToolEval would still ask whether the task was solvable" in rec["assessments"][0]["reason"]


def test_stage_04_says_what_it_will_send_and_stops_at_max_calls_then_resumes(tmp_path, server, monkeypatch):
    give_up = [GOOD[0], step("Finish", '{"return_type": "give_up_and_restart"}', "")]
    trajs = [traj(1, GOOD, "SOLVED please"), traj(2, GOOD, "UNSOLVED please"),
             traj(3, give_up, "NOPE please", finish_type="give_up_and_restart"),
             traj(4, GOOD[:1], "never finished", finish_type="max_iterations")]
    cfg = llm_cfg(tmp_path, server, trajs, monkeypatch, max_calls=5)
    said = []
    with pytest.raises(llm_judge.JudgeBudgetExceeded, match="judge.max_calls=5"):
        judge.run(cfg, log=said.append)
    # Three queries ask a first call in each of 4 assessments; the one without Finish asks none.
    assert said[0].startswith("12 judge calls (at most 28 ") and "0 cached" in said[0]
    assert len(server.requests) == 5
    cfg = config.derive(cfg, {"judge.max_calls": None})
    said.clear()
    judge.run(cfg, log=said.append)
    # SOLVED 1 call, UNSOLVED 2, give-up 1 (the task), four assessments each: 16 in all, none twice.
    assert len(server.requests) == 16
    assert "cached" in said[0] and not said[0].startswith("12 ")
    summary = json.loads((Path(cfg.output_dir) / "judge_summary.json").read_text())
    assert set(summary["served_models"]) == {"fake-judge"} and summary["served_model_warning"] is None


# ------------------------------------------------------------------------------------------------
# One query by hand (notebook 04's walk-through): the example, the first request, the record
# ------------------------------------------------------------------------------------------------
def test_the_example_is_the_first_answer_the_judge_looks_at_and_judges_as_the_stage_records(tmp_path):
    unfinished = traj(1, GOOD[:1], finish_type="max_iterations")
    g1 = [unfinished, traj(2, GOOD), traj(3, [GOOD[0], step("get_stock_for_x", "{}"), finish()])]
    cfg = make_cfg(tmp_path, {"G1_instruction": g1}, {"G1_instruction": [query(1), query(2), query(3)]},
                   kind="offline")
    example = judge.example_trajectory(cfg)
    assert (example["group"], example["trajectory"]["query_id"], example["query"]["query_id"]) == (
        "G1_instruction", 2, 2)
    assert judge.first_request(None, unfinished) is None              # no Finish: no judge call
    request = judge.first_request(None, example["trajectory"])
    assert request["function"] == "check_answer_status" and request["params"] is None
    assert request["messages"] == tooleval.prompt_messages("check_answer_status", request["fields"])
    assert "It is 20 C in Paris." in request["messages"][-1]["content"]
    by_hand = {}
    for t in g1:      # as notebook 04 does for its one example, for each kind of outcome
        checks = trajectory_checks.deterministic_checks(t, query(t["query_id"]))
        by_hand[t["query_id"]] = judgments.judge_query(t, checks, None, 4, cfg.judge.seed, "G1_instruction")
    judge.run(cfg, log=lambda *a: None)
    stored = judgments.read_judgments(Path(cfg.output_dir) / "judgments" / "G1_instruction.jsonl",
                                      "offline judge", 4)
    assert {qid: stored[str(qid)] for qid in by_hand} == by_hand
    assert [a["coin"] for a in by_hand[3]["assessments"]] == [True] * 4     # Unsure: coins, seeded


def test_the_example_falls_back_to_the_first_trajectory_when_none_finished(tmp_path):
    g1 = [traj(5, GOOD[:1], finish_type="max_iterations"), traj(6, GOOD[:1], finish_type="max_iterations")]
    cfg = make_cfg(tmp_path, {"G1_instruction": g1}, {"G1_instruction": [query(5), query(6)]}, kind="offline")
    assert judge.example_trajectory(cfg)["trajectory"]["query_id"] == 5


def test_the_first_request_is_what_the_llm_judge_sends(tmp_path, server, monkeypatch):
    trajs = [traj(1, GOOD, "SOLVED please")]
    cfg = llm_cfg(tmp_path, server, trajs, monkeypatch)
    request = judge.first_request(judgments.make_judge(cfg), judge.example_trajectory(cfg)["trajectory"])
    assert not server.requests                                        # built, not sent
    assert request["messages"] == tooleval.prompt_messages("check_answer_status", request["fields"])
    assert request["params"]["seed"] == cfg.judge.seed           # assessment 0
    judge.run(cfg, log=lambda *a: None)
    first = [b for b in server.bodies if b["seed"] == cfg.judge.seed]
    assert [(b["messages"], b["temperature"], b["max_tokens"]) for b in first] == [
        (request["messages"], request["params"]["temperature"], request["params"]["max_tokens"])]


def test_a_test_group_of_another_name_is_judged_too(tmp_path):
    """inference.groups may name a user's own test file: it is judged and pooled, after ToolBench's."""
    cfg = make_cfg(tmp_path, {"my_group": [traj(1, GOOD)], "G1_instruction": [traj(2, GOOD)]},
                   {"my_group": [query(1)], "G1_instruction": [query(2)]}, kind="offline")
    judge.run(cfg, log=lambda *a: None)
    rows = [r for r in read_csv(Path(cfg.output_dir) / "pass_rate.csv") if r["aggregation"] == "majority"]
    assert [r["group"] for r in rows] == ["G1_instruction", "my_group", "overall"]
    assert rows[-1]["covers"] == "G1_instruction+my_group"
