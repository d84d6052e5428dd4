"""Stage 04 (lib/judge.py): ToolEval's rules, the checks, statistics, and the LLM judge end to end
against a scripted OpenAI-compatible server on 127.0.0.1 (real HTTP through the openai client)."""
from __future__ import annotations

import copy
import csv
import json
import math
import time
from pathlib import Path

import pytest

from lib import config, judge, store

from conftest import TOOLBENCH_SAMPLE, LoopbackServer, chat_completion

SAMPLE = TOOLBENCH_SAMPLE / "stabletoolbench"
SECRET = "sk-test-DO-NOT-STORE-4f2a9c"


# ------------------------------------------------------------------------------------------------
# Hand-made queries and trajectories
# ------------------------------------------------------------------------------------------------
def api(tool, name, required=()):
    return {"category_name": "Data", "tool_name": tool, "api_name": name, "api_description": "",
            "required_parameters": [{"name": r, "type": "STRING", "description": "", "default": ""}
                                    for r in required],
            "optional_parameters": [], "method": "GET"}


def query(qid, text="What is the weather in Paris?"):
    return {"query": text, "query_id": qid,
            "api_list": [api("Weather Hub", "Get Weather", ["city"]), api("Weather Hub", "Get Time")],
            "relevant APIs": [["Weather Hub", "Get Weather"], ["Weather Hub", "Get Time"]]}


WEATHER = json.dumps({"error": "", "response": json.dumps({"city": "Paris", "temp_c": 20, "sky": "clear"})})


def step(action, action_input="{}", observation=WEATHER, parse_error=None):
    return {"thought": "t", "action": action, "action_input": action_input,
            "observation": observation, "parse_error": parse_error}


def finish(answer="It is 20 C in Paris."):
    return step("Finish", json.dumps({"return_type": "give_answer", "final_answer": answer}), "")


def traj(qid, steps, text="What is the weather in Paris?", finish_type="give_answer", answer=None,
         parse_errors=0, method="react"):
    steps = copy.deepcopy(steps)
    if answer is None:
        answer = (json.loads(steps[-1]["action_input"]).get("final_answer", "")
                  if steps and steps[-1]["action"] == "Finish" else "")
    return {"query_id": qid, "group": "G1_instruction", "query": text, "method": method,
            "available_tools": [], "finish_type": finish_type, "final_answer": answer,
            "total_steps": len(steps), "parse_errors": parse_errors, "steps": steps,
            "answer": {"method": "CoT@1", "total_steps": len(steps) + 2,
                       "final_answer": steps[-1]["action_input"] if finish_type == "give_answer" else "",
                       "answer_details": []}}


GOOD = [step("get_weather_for_weather_hub", '{"city": "Paris"}'), finish()]


def write_jsonl(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_cfg(tmp_path, trajs_by_group, queries_by_group=None, **judge_overrides):
    out = tmp_path / "out"
    for group, rows in trajs_by_group.items():
        write_jsonl(out / "trajectories" / f"{group}.jsonl", rows)
    test_dir = tmp_path / "test"
    test_dir.mkdir(exist_ok=True)
    for group, rows in (queries_by_group or {}).items():
        (test_dir / f"{group}.json").write_text(json.dumps(rows), encoding="utf-8")
    overrides = {"output_dir": str(out), "data": {"test_dir": str(test_dir)},
                 "inference": {"groups": list(trajs_by_group)},
                 "judge": {"retry_backoff_s": 0.001, "timeout_s": 2, "max_workers": 1,
                           **judge_overrides}}
    return config.load("smoke", overrides)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------------------
# ToolEval's rules on fixed inputs
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("answer,task,label", [
    ("Solved", "Solvable", "Passed"), ("Solved", "Unsure", "Passed"), ("Solved", "Unsolvable", "Passed"),
    ("Unsolved", "Solvable", "Failed"), ("Unsolved", "Unsure", "Unsure"),
    ("Unsolved", "Unsolvable", "Passed"), ("Unsure", "Solvable", "Unsure"),
    ("Unsure", "Unsure", "Unsure"), ("Unsure", "Unsolvable", "Passed")])
def test_assessment_label_is_toolevals_is_passed(answer, task, label):
    assert judge.assessment_label(answer, task) == label


def test_majority_vote_tie_passes_and_unsure_is_a_seeded_coin():
    assert judge.majority(["pass", "fail"]) is True
    assert judge.majority(["pass", "pass", "fail", "fail"]) is True
    assert judge.majority(["pass", "fail", "fail"]) is False
    assert judge.majority(["fail"] * 4) is False
    assert judge.vote("Passed", judge.seeded_rng(1)) == ("pass", False)
    assert judge.vote("Failed", judge.seeded_rng(1)) == ("fail", False)
    coins = [judge.vote("Unsure", judge.seeded_rng(7, "G1", q, 0)) for q in range(400)]
    assert all(flag for _, flag in coins)
    assert 150 < sum(v == "pass" for v, _ in coins) < 250            # a fair coin
    again = [judge.vote("Unsure", judge.seeded_rng(7, "G1", q, 0)) for q in range(400)]
    assert coins == again                                             # and a reproducible one


def test_mean_score_runs_is_stabletoolbenchs_per_run_mean():
    runs = judge.mean_score_runs([[1, 0.5, 0, 1], [0, 0, 0, 0], [1, 1, 0.5]], 4)
    assert runs == pytest.approx([2 / 3, 0.5, 0.5 / 3, 1 / 3])       # a missing run scores 0


def _wilson_by_quadratic(k, n, z=1.959963984540054):
    # The interval's ends are the p with |k/n - p| = z sqrt(p(1-p)/n): solve a p^2 + b p + c = 0.
    phat = k / n
    a, b, c = 1 + z * z / n, -(2 * phat + z * z / n), phat * phat
    disc = math.sqrt(b * b - 4 * a * c)
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


def test_wilson_interval_known_values():
    low, high = judge.wilson(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    for k, n in [(0, 10), (10, 10), (77, 100), (155, 200), (1, 3)]:
        assert judge.wilson(k, n) == pytest.approx(_wilson_by_quadratic(k, n), abs=1e-12)
    assert judge.wilson(0, 10)[0] == 0.0 and round(judge.wilson(0, 10)[1], 4) == 0.2775


def test_fleiss_kappa_matches_the_textbook_example_and_agreement():
    # Fleiss (1971) as tabulated on Wikipedia: 10 subjects, 14 raters, 5 categories -> 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    labels = [[c for c, count in enumerate(row) for _ in range(count)] for row in table]
    assert judge.fleiss_kappa(labels, categories=range(5)) == pytest.approx(0.2099, abs=1e-4)
    assert judge.pairwise_agreement([["Solved"] * 4]) == 1.0
    assert judge.pairwise_agreement([["Solved", "Solved", "Unsure", "Unsure"]]) == pytest.approx(2 / 6)
    assert math.isnan(judge.fleiss_kappa([["Solved"] * 4, ["Solved"] * 4]))    # no variation


def test_cache_key_separates_model_messages_params_index_and_attempt():
    msgs, params = [{"role": "user", "content": "q"}], {"temperature": 0.2, "seed": 1}
    key = judge.request_key("m", msgs, params, 0, 0)
    assert key == judge.request_key("m", [dict(m) for m in msgs], dict(params), 0, 0)
    others = [judge.request_key("m2", msgs, params, 0, 0),
              judge.request_key("m", [{"role": "user", "content": "q2"}], params, 0, 0),
              judge.request_key("m", msgs, {"temperature": 0.3, "seed": 1}, 0, 0),
              judge.request_key("m", msgs, params, 1, 0), judge.request_key("m", msgs, params, 0, 1)]
    assert len({key, *others}) == 6


def test_parse_reply_accepts_fenced_or_wrapped_json_and_rejects_bad_labels():
    assert judge.parse_reply("check_answer_status", '```json\n{"answer_status": "solved"}\n```')[
        "answer_status"] == "Solved"
    assert judge.parse_reply("check_task_solvable", 'Sure! {"task_status": "Unsolvable"} done')[
        "task_status"] == "Unsolvable"
    assert judge.parse_reply("select_better_answer", '{"index": "1"}')["index"] == 1
    for fn, text in [("check_answer_status", '{"answer_status": "Maybe"}'),
                     ("check_answer_status", "Solved"), ("check_answer_status", ""),
                     ("select_better_answer", '{"index": 2}'), ("check_task_solvable", "[1, 2]")]:
        assert judge.parse_reply(fn, text) is None, text


# ------------------------------------------------------------------------------------------------
# Deterministic checks and pre-checks
# ------------------------------------------------------------------------------------------------
def test_checks_on_a_clean_trajectory():
    c = judge.deterministic_checks(traj(1, GOOD), query(1))
    assert c["finished"] and c["valid_names"] and c["valid_inputs"]
    assert c["hallucinated"] == [] and c["hallucination_rate"] == 0
    assert c["successful_calls"] == 1
    assert c["relevant_hits"] == ["get_weather_for_weather_hub"] and c["relevant_recall"] == 0.5
    assert c["parse_error_rate"] == 0


def test_checks_flag_hallucinations_bad_inputs_missing_params_and_parse_errors():
    steps = [step("get_weather_for_weather_hub", "{}"),                  # missing required 'city'
             step("get_time_for_weather_hub", "not json"),               # invalid JSON
             step("get_stock_for_wall_street", '{"s": "X"}'),            # not in the api_list
             step("", "", "", parse_error="no Action"), finish()]
    c = judge.deterministic_checks(traj(2, steps, parse_errors=1), query(2))
    assert c["hallucinated"] == ["get_stock_for_wall_street"] and not c["valid_names"]
    assert c["hallucination_rate"] == pytest.approx(1 / 4)
    assert c["invalid_inputs"] == 2 and c["missing_required"] == ["get_weather_for_weather_hub.city"]
    assert c["relevant_recall"] == 1.0
    assert c["parse_errors"] == 1 and c["parse_error_rate"] == pytest.approx(1 / 5)
    assert c["finished"]


def test_checks_without_the_query_fall_back_to_available_tools():
    t = traj(3, [step("f_for_t", '{"a": 1}'), finish()])
    t["available_tools"] = [{"name": "f_for_t", "parameters": {"required": ["a", "b"]}}]
    c = judge.deterministic_checks(t, None)
    assert c["valid_names"] and c["missing_required"] == ["f_for_t.b"]
    assert c["relevant_recall"] is None


def test_prechecks_fail_without_the_judge():
    assert judge.precheck(traj(1, GOOD)) is None
    assert judge.precheck(traj(1, GOOD[:1], finish_type="max_iterations")) == "no Finish call"
    give_up = [step("Finish", '{"return_type": "give_up_and_restart"}', "")]
    assert "gave up" in judge.precheck(traj(1, give_up, finish_type="give_up"))
    assert judge.precheck(traj(1, [GOOD[0], finish("  ")])) == "empty final answer"


def test_a_bad_trajectory_line_names_file_line_query_and_field(tmp_path):
    path = tmp_path / "G1_instruction.jsonl"
    bad = traj(42, GOOD)
    del bad["finish_type"]
    write_jsonl(path, [traj(1, GOOD), bad])
    with pytest.raises(judge.JudgeInputError) as err:
        judge.read_trajectories(path)
    assert all(s in str(err.value) for s in (str(path), "line 2", "42", "finish_type"))
    bad = traj(7, GOOD)
    bad["steps"][0]["action_input"] = {"city": "Paris"}
    write_jsonl(path, [bad])
    with pytest.raises(judge.JudgeInputError, match=r"line 1, query_id 7: field 'steps\[0\].action_input'"):
        judge.read_trajectories(path)
    path.write_text('{"query_id": 1,\n', encoding="utf-8")
    with pytest.raises(judge.JudgeInputError, match="line 1.*not valid JSON"):
        judge.read_trajectories(path)


def test_a_query_id_twice_in_a_trajectory_file_is_refused_naming_both_lines(tmp_path):
    path = tmp_path / "G1_instruction.jsonl"
    write_jsonl(path, [traj(5, GOOD), traj(6, GOOD), traj("5", GOOD)])     # "5" is query 5 too
    with pytest.raises(judge.JudgeInputError) as err:
        judge.read_trajectories(path)
    assert all(s in str(err.value) for s in (str(path), "'5'", "lines 1 and 3"))


def test_a_torn_last_trajectory_line_says_stage_03_was_interrupted(tmp_path):
    path = tmp_path / "G1_instruction.jsonl"
    path.write_text(json.dumps(traj(1, GOOD)) + "\n" + json.dumps(traj(2, GOOD))[:50], encoding="utf-8")
    with pytest.raises(judge.JudgeInputError, match="line 2.*stage 03 was stopped mid-write"):
        judge.read_trajectories(path)


@pytest.mark.skipif(not SAMPLE.exists(), reason="real ToolBench sample not present")
def test_checks_and_prechecks_on_real_stabletoolbench_files():
    queries = {str(q["query_id"]): q for q in json.loads(
        (SAMPLE / "solvable_queries_example/test_instruction/G1_instruction.json").read_text())}
    prechecked = []
    converted = json.loads((SAMPLE / "data_example/model_predictions_converted/virtual_chatgpt_cot/"
                            "G1_instruction.json").read_text())
    judged = json.loads((SAMPLE / "data_example/pass_rate_results/virtual_chatgpt_cot/"
                         "G1_instruction_virtual_chatgpt_cot.json").read_text())
    for qid, example in converted.items():
        steps, node = [], example["answer"]["answer_details"][0]
        while node:
            if node["role"] == "tool":
                steps.append(step(node["message"]["name"], node["message"]["arguments"],
                                  node["message"]["response"]))
            node = node["next"][0] if node["next"] else None
        finished = bool(steps) and steps[-1]["action"] == "Finish"
        t = traj(qid, steps, example["query"], "give_answer" if finished else "max_iterations",
                 answer=json.loads(steps[-1]["action_input"])["final_answer"] if finished else "")
        t["answer"] = example["answer"]
        c = judge.deterministic_checks(t, queries[qid])
        assert c["valid_names"], (qid, c["hallucinated"])      # our names == ToolBench's names
        assert c["valid_inputs"] and c["relevant_recall"] is not None and c["relevant_hits"]
        # StableToolBench marked the run without a final Finish Unsolved in every round.
        if judge.precheck(t):
            assert set(judged[qid]["is_solved"].values()) == {"AnswerStatus.Unsolved"}
            prechecked.append(qid)
    assert prechecked == ["588"]


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
    out = Path(cfg["output_dir"])
    rows = read_csv(out / "pass_rate.csv")
    assert list(rows[0]) == judge.CSV_COLUMNS
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
    assert recs[3]["passed"] == judge.majority([a["vote"] for a in recs[3]["assessments"]])
    passed = sum(r["passed"] for r in recs.values()) + 1                # + q10
    overall = by["majority", "overall"]
    assert int(overall["n"]) == 5 and int(overall["passed"]) == passed
    assert float(overall["pass_rate"]) == round(100 * passed / 5, 2)
    assert float(overall["ci_low"]) == round(100 * judge.wilson(passed, 5)[0], 2)
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
    out = Path(cfg["output_dir"])
    with store.exclusive(out / "judgments", "stage 04 judge"):     # another run holds it
        with pytest.raises(store.FolderBusy, match=r"judgments is being written by another run \(pid \d+, stage 04"):
            judge.run(cfg, log=lambda *a: None)
    assert not (out / "judgments" / "G1_instruction.jsonl").exists()
    judge.run(cfg, log=lambda *a: None)
    assert len(store.read_jsonl(out / "judgments" / "G1_instruction.jsonl")) == 1


def test_stage_04_judges_the_queries_stage_03_selects_and_leaves_the_rest(tmp_path):
    """inference.max_queries_per_group=1 after a run of 3: stage 03 reports 1 query, so does 04."""
    trajs = [traj(1, GOOD), traj(2, GOOD), traj(3, GOOD[:1], finish_type="max_iterations")]
    cfg = make_cfg(tmp_path, {"G1_instruction": trajs}, {"G1_instruction": [query(i) for i in (1, 2, 3)]},
                   kind="offline")
    cfg["inference"]["max_queries_per_group"] = 1
    out = Path(cfg["output_dir"])
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
    cfg["inference"]["max_queries_per_group"] = 2
    logged.clear()
    judge.run(cfg, log=logged.append)
    assert ("WARNING: G1_instruction: 1 of the 2 selected queries have no trajectory "
            "(stage 03 did not finish them: 1)") in logged


def test_a_group_without_queries_is_named_not_a_silent_nan(tmp_path):
    qs = {"G1_instruction": [query(1)], "G2_instruction": [query(2)]}
    cfg = make_cfg(tmp_path, {"G1_instruction": [traj(1, GOOD)], "G2_instruction": []}, qs, kind="offline")
    logged = []
    judge.run(cfg, log=logged.append)
    out = Path(cfg["output_dir"])
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
    with pytest.raises(judge.JudgeInputError, match="no trajectories to judge"):
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
    checks = {r["group"]: r for r in read_csv(Path(cfg["output_dir"]) / "checks.csv")}
    none = checks["G1_instruction"]
    assert none["valid_names"] == none["valid_inputs"] == none["hallucination_rate"] == ""    # not 100
    assert (none["n_calls"], none["with_calls"]) == ("0", "0")
    some = checks["G2_instruction"]
    assert (some["n_calls"], some["with_calls"]) == ("2", "1")
    assert some["valid_names"] == some["valid_inputs"] == "0.0"      # over the run that called
    assert "n/a" in judge.markdown_table(judge.checks_rows({"G1": [{"checks": judge.deterministic_checks(
        g1[0], query(1))}]}), judge.CHECK_COLUMNS)


def test_overall_over_some_groups_names_them(tmp_path):
    """StableToolBench's samples hold 3 of the 6 groups: their overall is not the paper's overall."""
    three = ["G1_instruction", "G2_instruction", "G3_instruction"]
    cfg = make_cfg(tmp_path, {g: [traj(i, GOOD)] for i, g in enumerate(three)},
                   {g: [query(i)] for i, g in enumerate(three)}, kind="offline")
    judge.run(cfg, log=lambda *a: None)
    out = Path(cfg["output_dir"])
    rows = {(r["aggregation"], r["group"]): r for r in read_csv(out / "pass_rate.csv")}
    assert rows["majority", "overall"]["covers"] == "G1_instruction+G2_instruction+G3_instruction"
    assert rows["majority", "G2_instruction"]["covers"] == "G2_instruction"
    note = ("overall over 3 of 6 groups: G1_instruction, G2_instruction, G3_instruction; "
            "the paper's overall covers all six")
    assert note in (out / "pass_rate.md").read_text()
    assert judge.overall_note(list(config.GROUPS)) == ""


def test_offline_win_rate_pass_beats_fail_and_ties_apart(tmp_path):
    ours = [traj(1, GOOD), traj(2, GOOD), traj(3, GOOD[:1], finish_type="max_iterations")]
    ref = [traj(1, GOOD[:1], finish_type="max_iterations"), traj(2, GOOD),
           traj(3, [step("get_weather_for_weather_hub", '{"city": "P"}'), finish()])]
    write_jsonl(tmp_path / "ref" / "trajectories" / "G1_instruction.jsonl", ref)
    cfg = make_cfg(tmp_path, {"G1_instruction": ours}, {"G1_instruction": [query(i) for i in (1, 2, 3)]},
                   kind="offline", win_rate_reference=str(tmp_path / "ref"))
    judge.run(cfg, log=lambda *a: None)
    out = Path(cfg["output_dir"])
    prefs = {r["query_id"]: r for r in store.read_jsonl(out / "preferences" / "G1_instruction.jsonl")}
    assert prefs[1]["outcome"] == "win" and prefs[1]["rounds"][0]["why"] == "pass beats fail"
    assert prefs[2]["outcome"] == "tie"                       # identical runs
    assert prefs[3]["outcome"] == "loss"
    rows = {r["group"]: r for r in read_csv(out / "win_rate.csv")}
    assert (rows["overall"]["wins"], rows["overall"]["ties"], rows["overall"]["losses"]) == ("1", "1", "1")
    assert rows["overall"]["judge"] == "offline judge"
    assert (out / "reference_judgments" / "G1_instruction.jsonl").exists()


# ------------------------------------------------------------------------------------------------
# The LLM judge against a scripted OpenAI-compatible server
# ------------------------------------------------------------------------------------------------
class FakeServer(LoopbackServer):
    """POST /v1/chat/completions; `script` (a list, consumed first) then `respond(body)`.
    Script items: ("status", code) | ("sleep", seconds) | ("content", text) |
    ("raw", code, headers, payload): the reply as given (bytes sent as is), e.g. a proxy's page."""

    def __init__(self, respond):
        self.judge_respond, self.script, self.auth = respond, [], set()
        super().__init__(self._reply)
        self.url += "/v1"

    @property
    def bodies(self):
        return [body for _, _, body in self.requests]

    def _reply(self, path, headers, body):
        self.auth.add(headers.get("Authorization"))
        action = self.script.pop(0) if self.script else ("content", self.judge_respond(body))
        if action[0] == "sleep":
            time.sleep(action[1])
            action = ("content", self.judge_respond(body))
        if action[0] == "status":
            return action[1], {"error": {"message": "scripted", "type": "x"}}
        if action[0] == "raw":
            return action[1], action[3], action[2]
        return 200, chat_completion(body["model"], action[1])


def function_of(body) -> str:
    text = body["messages"][-1]["content"]
    for marker, name in (("Answer_0:", "select_better_answer"), ("Run:\n", "parse_answer_status"),
                         ("task_status", "check_task_solvable"), ("Final answer:", "check_answer_status")):
        if marker in text:
            return name
    raise AssertionError(text[:200])


def scripted_judge(body) -> str:
    """Replies by the marker in the query: SOLVED, UNSOLVED (solvable), UNSURE (all unsure),
    NOPE (unsolved, task unsolvable -> pass), JUNK (never valid JSON)."""
    text, fn = body["messages"][-1]["content"], function_of(body)
    if "JUNK" in text:
        return "I think it is solved, probably."
    if fn == "select_better_answer":
        a0 = text.split("Answer_0:")[1].split("Answer_1:")[0]
        return json.dumps({"reason": "r", "index": 0 if "BETTER" in a0 else 1})
    if fn == "check_task_solvable":
        status = "Unsure" if "UNSURE" in text else "Unsolvable" if "NOPE" in text else "Solvable"
        return f'```json\n{{"reason": "r", "task_status": "{status}"}}\n```'
    for marker, status in (("UNSOLVED", "Unsolved"), ("SOLVED", "Solved"), ("UNSURE", "Unsure"),
                           ("NOPE", "Unsolved")):
        if marker in text:
            return json.dumps({"reason": "because", "answer_status": status.lower()})
    raise AssertionError(text[:200])


@pytest.fixture
def server():
    srv = FakeServer(scripted_judge)
    yield srv
    srv.close()


def llm_cfg(tmp_path, server, trajs, monkeypatch, **extra):
    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET)
    return make_cfg(tmp_path, {"G1_instruction": trajs}, {"G1_instruction": [query(t["query_id"]) for t in trajs]},
                    kind="llm", base_url=server.url, model="fake-judge", api_key_env="JUDGE_TEST_KEY",
                    **extra)


def test_llm_judge_end_to_end_votes_cache_and_no_key_on_disk(tmp_path, server, monkeypatch):
    trajs = [traj(1, GOOD, "SOLVED please"), traj(2, GOOD, "UNSOLVED please"),
             traj(3, GOOD, "UNSURE please"), traj(4, GOOD, "NOPE please"),
             traj(5, GOOD[:1], "SOLVED but never finished", finish_type="max_iterations")]
    cfg = llm_cfg(tmp_path, server, trajs, monkeypatch, max_workers=3)
    judge.run(cfg, log=lambda *a: None)
    out = Path(cfg["output_dir"])
    # Requests per assessment: SOLVED 1, UNSOLVED 2 (answer, task), UNSURE 3 (answer, whole run,
    # task), NOPE 2, pre-check fail 0; four assessments each.
    assert len(server.requests) == 4 * (1 + 2 + 3 + 2 + 0)
    assert server.auth == {f"Bearer {SECRET}"}
    seeds = sorted({r["seed"] for r in server.bodies})
    assert seeds == [cfg["judge"]["seed"] + i for i in range(4)]     # distinct samples per index
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


def test_llm_judge_resumes_an_interrupted_run(tmp_path, server, monkeypatch):
    trajs = [traj(i, GOOD, f"SOLVED number {i}") for i in range(1, 4)]
    cfg = llm_cfg(tmp_path, server, trajs, monkeypatch, evaluate_times=2)
    calls = {"n": 0}
    original = judge.judge_query

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(judge, "judge_query", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        judge.run(cfg, log=lambda *a: None)
    out = Path(cfg["output_dir"])
    assert len((out / "judgments" / "G1_instruction.jsonl").read_text().splitlines()) == 2
    monkeypatch.setattr(judge, "judge_query", original)
    sent = len(server.requests)
    judge.run(cfg, log=lambda *a: None)
    assert len(server.requests) == sent + 2                          # only query 3, two assessments
    assert len((out / "judgments" / "G1_instruction.jsonl").read_text().splitlines()) == 3


def test_retries_on_429_5xx_and_timeout_then_succeed(tmp_path, server, monkeypatch):
    cfg = llm_cfg(tmp_path, server, [traj(1, GOOD, "SOLVED")], monkeypatch, evaluate_times=1,
                  timeout_s=0.3)
    server.script = [("status", 429), ("status", 503), ("sleep", 1.0)]
    t0 = time.time()
    judge.run(cfg, log=lambda *a: None)
    assert time.time() - t0 < 5
    assert len(server.requests) == 4
    summary = json.loads((Path(cfg["output_dir"]) / "judge_summary.json").read_text())
    assert summary["requests"]["retries"] == 3
    rec = store.read_jsonl(Path(cfg["output_dir"]) / "judgments" / "G1_instruction.jsonl")[0]
    assert rec["passed"] and rec["assessments"][0]["answer_status"] == "Solved"


def test_persistent_server_errors_raise_after_max_retries(tmp_path, server, monkeypatch):
    cfg = llm_cfg(tmp_path, server, [traj(1, GOOD, "SOLVED")], monkeypatch, evaluate_times=1,
                  max_retries=2)
    server.script = [("status", 500)] * 3
    with pytest.raises(judge.JudgeRequestError, match="3 times"):
        judge.run(cfg, log=lambda *a: None)
    assert len(server.requests) == 3
    assert not (Path(cfg["output_dir"]) / "judgments" / "G1_instruction.jsonl").read_text()


def test_a_torn_cache_line_loses_neither_earlier_nor_later_records(tmp_path):
    """A run killed mid-write leaves a torn last line; the next put must not be glued onto it."""
    path = tmp_path / "judge_cache.jsonl"
    done = [{"key": f"k{i}", "reply": f"r{i}"} for i in range(2)]
    path.write_text("".join(json.dumps(r) + "\n" for r in done) + '{"key": "k2", "rep', encoding="utf-8")
    cache = judge.JudgeCache(path)
    assert (cache.get("k0"), cache.get("k1"), cache.get("k2")) == ("r0", "r1", None)
    cache.put("k3", {"reply": "r3"})
    again = judge.JudgeCache(path)
    assert [again.get(k) for k in ("k0", "k1", "k2", "k3")] == ["r0", "r1", None, "r3"]
    assert [r["key"] for r in store.read_jsonl(path)] == ["k0", "k1", "k3"]
    # A cache an older version damaged (a record glued onto a torn line, mid-file) still loads:
    # that line's requests are simply sent again.
    glued = tmp_path / "glued.jsonl"
    glued.write_text('{"key": "a", "reply": "1"}\n{"key": "b", "re{"key": "c", "reply": "3"}\n'
                     '{"key": "d", "reply": "4"}\n', encoding="utf-8")
    assert [judge.JudgeCache(glued).get(k) for k in "abcd"] == ["1", None, None, "4"]


def direct_judge(tmp_path, server, monkeypatch, **extra):
    """An LLMJudge on the fake server whose sleeps are recorded, not slept."""
    cfg = llm_cfg(tmp_path, server, [traj(1, GOOD, "SOLVED")], monkeypatch, **extra)
    slept = []
    return judge.LLMJudge(cfg["judge"], judge.JudgeCache(tmp_path / "cache.jsonl"), sleep=slept.append), slept


def ask_solved(llm):
    return llm.ask("check_answer_status", {"query": "SOLVED", "answer": "done"}, 0)


MALFORMED = {   # what endpoints and proxies have been seen to answer with HTTP 200
    "html page": ("raw", 200, {"Content-Type": "text/html"}, b"<html>502 Bad Gateway</html>"),
    "not json": ("raw", 200, {}, b"<html>oops"),
    "empty body": ("raw", 200, {}, b""),
    "no choices": ("raw", 200, {}, {"error": {"message": "model is loading"}}),
    "empty choices": ("raw", 200, {}, {"id": "c", "object": "chat.completion", "choices": []}),
    "message null": ("raw", 200, {}, {"id": "c", "choices": [{"index": 0, "message": None}]}),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_a_malformed_response_is_retried_like_a_5xx(tmp_path, server, monkeypatch, kind):
    llm, slept = direct_judge(tmp_path, server, monkeypatch, max_retries=2, retry_backoff_s=0.5)
    server.script = [MALFORMED[kind]]
    call = ask_solved(llm)
    assert call["parsed"]["answer_status"] == "Solved" and len(server.requests) == 2
    assert slept == [0.5] and llm.counts["retries"] == llm.counts["bad_responses"] == 1


@pytest.mark.parametrize("kind, says", [("html page", "not a chat completion but a str: '<html>502"),
                                        ("not json", "body is not JSON"),
                                        ("no choices", "no choices, error: {'message': 'model is loading'}"),
                                        ("empty choices", "empty choices"),
                                        ("message null", "choices[0] has no message")])
def test_a_persistently_malformed_endpoint_is_named_after_the_last_retry(tmp_path, server, monkeypatch,
                                                                          kind, says):
    llm, slept = direct_judge(tmp_path, server, monkeypatch, max_retries=2)
    server.script = [MALFORMED[kind]] * 3
    with pytest.raises(judge.JudgeRequestError) as err:
        ask_solved(llm)
    assert all(s in str(err.value) for s in (server.url, "model fake-judge", "3 times",
                                             "MalformedResponse", says)), str(err.value)
    assert len(server.requests) == 3 and len(slept) == 2
    assert not (tmp_path / "cache.jsonl").exists()                   # nothing cached for it


@pytest.mark.parametrize("headers, backoff, waited", [
    ({"Retry-After": "7"}, 0.001, 7.0),                # the server's wait, not the tiny backoff
    ({"retry-after-ms": "2500"}, 0.001, 2.5),
    ({"Retry-After": "1"}, 4.0, 4.0),                  # never shorter than the backoff
    ({"Retry-After": "86400"}, 0.001, judge.MAX_RETRY_AFTER_S),
    ({"Retry-After": "soon"}, 0.25, 0.25),              # unreadable: the backoff
    ({}, 0.25, 0.25)])
def test_a_429_waits_as_long_as_retry_after_asks(tmp_path, server, monkeypatch, headers, backoff, waited):
    llm, slept = direct_judge(tmp_path, server, monkeypatch, retry_backoff_s=backoff)
    server.script = [("raw", 429, headers, {"error": {"message": "slow down", "type": "rate"}})]
    assert ask_solved(llm)["parsed"]["answer_status"] == "Solved"
    assert slept == [pytest.approx(waited)] and len(server.requests) == 2


def test_retry_after_as_an_http_date():
    import email.utils
    from types import SimpleNamespace
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < judge.retry_after(SimpleNamespace(headers={"retry-after": later})) <= 30
    assert judge.retry_after(None) is None


def test_malformed_replies_are_asked_again_then_counted_unsure(tmp_path, server, monkeypatch):
    cfg = llm_cfg(tmp_path, server, [traj(1, GOOD, "SOLVED"), traj(2, GOOD, "JUNK")], monkeypatch,
                  evaluate_times=1, malformed_retries=2)
    server.script = [("content", "{not json"), ("content", '{"answer_status": "Maybe"}')]
    judge.run(cfg, log=lambda *a: None)
    recs = {r["query_id"]: r for r in store.read_jsonl(
        Path(cfg["output_dir"]) / "judgments" / "G1_instruction.jsonl")}
    first = recs[1]["assessments"][0]
    assert first["answer_status"] == "Solved" and first["calls"][0]["attempts"] == 3
    junk = recs[2]["assessments"][0]
    assert junk["malformed"] and junk["answer_status"] == "Unsure" and junk["task_status"] == "Unsure"
    assert junk["label"] == "Unsure" and junk["coin"]
    # answer check (3 attempts) + whole-run check (3) + task check (3) for JUNK, 3 for SOLVED
    assert len(server.requests) == 12
    summary = json.loads((Path(cfg["output_dir"]) / "judge_summary.json").read_text())
    assert summary["agreement"]["overall"]["malformed_assessments"] == 1


def test_missing_key_for_openai_is_a_clear_error_without_the_value(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = make_cfg(tmp_path, {"G1_instruction": [traj(1, GOOD)]}, kind="llm",
                   base_url="https://api.openai.com/v1")
    with pytest.raises(judge.JudgeRequestError, match="OPENAI_API_KEY"):
        judge.run(cfg, log=lambda *a: None)


def test_llm_win_rate_randomises_order_and_skips_the_judge_for_pass_vs_fail(tmp_path, server, monkeypatch):
    better = [step("get_weather_for_weather_hub", '{"city": "Paris"}'), finish("BETTER: 20 C")]
    ours = [traj(1, better, "SOLVED a"), traj(2, GOOD, "SOLVED b"), traj(3, GOOD, "SOLVED c")]
    ref = [traj(1, GOOD, "SOLVED a"), traj(2, better, "SOLVED b"),
           traj(3, GOOD[:1], "SOLVED c", finish_type="max_iterations")]
    write_jsonl(tmp_path / "ref" / "trajectories" / "G1_instruction.jsonl", ref)
    cfg = llm_cfg(tmp_path, server, ours, monkeypatch, win_rate_reference=str(tmp_path / "ref"))
    judge.run(cfg, log=lambda *a: None)
    out = Path(cfg["output_dir"])
    prefs = {r["query_id"]: r for r in store.read_jsonl(out / "preferences" / "G1_instruction.jsonl")}
    assert prefs[1]["outcome"] == "win" and prefs[2]["outcome"] == "loss"
    assert prefs[3]["outcome"] == "win" and all(r["call"] is None for r in prefs[3]["rounds"])
    orders = {r["why"] for q in (1, 2) for r in prefs[q]["rounds"]}
    assert orders == {"judge, shown order output first", "judge, shown order reference first"}
    selects = [r for r in server.bodies if function_of(r) == "select_better_answer"]
    assert len(selects) == 8                                          # 2 queries x 4 rounds
    rows = {r["group"]: r for r in read_csv(out / "win_rate.csv")}
    assert rows["overall"]["win_rate"] == "66.67" and rows["overall"]["losses"] == "1"
    sent = len(server.requests)
    judge.run(cfg, log=lambda *a: None)
    assert len(server.requests) == sent


# ------------------------------------------------------------------------------------------------
# The offline judge's grounding rule: Solved needs the answer to state what the calls returned
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("answer, label", [
    ("It is 20 C and clear in Paris.", "Solved"),                     # right: the call's values
    ("It is 20C in Paris.", "Solved"),                                # number found beside its unit
    ("Paris: 25 C, raining.", "Unsolved"),                            # wrong values
    ("The weather in Paris is pleasant today.", "Unsolved"),          # right format, no value
    ("I found the weather: city, temp_c and sky.", "Unsolved"),       # field names are not values
])
def test_offline_judge_needs_an_answer_grounded_in_the_calls(answer, label):
    t = traj("g1", [step("get_weather_for_weather_hub", '{"city": "Paris"}'), finish(answer)])
    checks = judge.deterministic_checks(t, query("g1"))
    assert judge.offline_answer_status(checks, judge.precheck(t))[0] == label
    assert checks["answer_grounded"] == (label == "Solved")


def test_grounding_counts_only_relevant_successful_calls():
    weather = step("get_weather_for_weather_hub", '{"city": "Paris"}')
    failed = step("get_weather_for_weather_hub", '{"city": "Paris"}',
                  observation=json.dumps({"error": "timeout", "response": json.dumps({"temp_c": 20})}))
    other = step("get_news_for_daily", "{}", observation=json.dumps({"error": "", "response": "headline 20"}))
    for steps, grounded in (([weather, finish("20 C")], True), ([failed, finish("20 C")], False),
                            ([other, finish("20 C")], False)):
        checks = judge.deterministic_checks(traj("g", steps + []), query("g"))
        assert checks["answer_grounded"] is grounded, steps


def test_grounding_normalises_numbers_case_and_space():
    from lib import grounding
    obs = [json.dumps({"error": "", "response": {"population": 2102650, "name": "Île  de   France",
                                                 "price": "1,234.50", "ok": True, "n": 5}})]
    assert grounding.matched_values("about 2,102,650 people", obs) == ["2102650"]
    assert grounding.matched_values("in île de france", obs) == ["île de france"]
    assert grounding.matched_values("it costs 1234.5", obs) == ["1234.5"]
    assert grounding.matched_values("5 of them, true", obs) == []          # too short to be evidence
    # A value the query already gave (echoed by the API) is no evidence of a result.
    assert grounding.matched_values("Île de France", obs, given="Tell me about Ile? Île de France") == []


def test_a_call_about_something_the_user_never_asked_is_no_evidence():
    """The model asks about Rome when the user asked about Paris, then reports Rome's weather: a
    right-format answer grounded in a real result, but not the user's. Unsolved, and counted."""
    rome = json.dumps({"error": "", "response": json.dumps({"city": "Rome", "temp_c": 31, "sky": "hazy"})})
    wrong = [step("get_weather_for_weather_hub", '{"city": "Rome"}', observation=rome),
             finish("It is 31 C and hazy in Rome.")]
    checks = judge.deterministic_checks(traj("g", wrong), query("g"))
    assert checks["off_query_calls"] == 1 and not checks["answer_grounded"]
    assert judge.offline_answer_status(checks, judge.precheck(traj("g", wrong)))[0] == "Unsolved"
    # A retry with the query's city after the wrong call is about the query again: Solved.
    retried = wrong[:1] + [step("get_weather_for_weather_hub", '{"city": "paris "}'), finish()]
    checks = judge.deterministic_checks(traj("g", retried), query("g"))
    assert checks["off_query_calls"] == 1 and checks["answer_grounded"]
    assert judge.offline_answer_status(checks, judge.precheck(traj("g", retried)))[0] == "Solved"


def test_an_argument_taken_from_an_earlier_result_keeps_the_call_about_the_query():
    found = json.dumps({"error": "", "response": json.dumps({"city_id": "FR-75056"})})
    lookup = step("get_time_for_weather_hub", "{}", observation=found)
    by_id = step("get_weather_for_weather_hub", '{"city": "FR-75056"}')
    checks = judge.deterministic_checks(traj("g", [lookup, by_id, finish()]), query("g"))
    assert checks["off_query_calls"] == 0 and checks["answer_grounded"]
    # The same id out of nowhere (no earlier result gave it) is not about the query.
    checks = judge.deterministic_checks(traj("g", [by_id, finish()]), query("g"))
    assert checks["off_query_calls"] == 1 and not checks["answer_grounded"]
