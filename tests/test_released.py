"""Released answers (lib/toolbench/released.py) judged like ours (stage 04, `python -m lib.judge.judge --answers`),
and the calibration table of stage 05 (lib/report/calibration.py): on the real files of
../shared/toolbench-sample when present, and on files written here."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lib.common import config, store
from lib.toolbench import released
from lib.infer import untrained
from lib.judge import judge, released_runs
from lib.report import calibration, report
from judge_helpers import GOOD, make_cfg, query, read_csv, traj

SAMPLE = config.ROOT.parent / "shared" / "toolbench-sample"
CONVERTED = SAMPLE / "toolbench/tooleval/results/default_evalset/gpt-3.5-turbo_CoT"
STB = SAMPLE / "stabletoolbench/data_example"
needs_sample = pytest.mark.skipif(not SAMPLE.exists(), reason="../shared/toolbench-sample is absent")


def tool(name, arguments, response):
    return {"name": name, "arguments": arguments, "response": response}


def converted(final, *calls, cut=False):
    """A converted answer (ToolEval's format) of calls [(name, arguments, response)]."""
    nodes = [{"role": "system", "message": ""}, {"role": "user", "message": "q"}]
    nodes += [{"role": "tool", "message": str(tool(*c))[:100] if cut else tool(*c)} for c in calls]
    details = []
    for node in reversed(nodes):
        details = [{**node, "next": details}]
    return {"query": "What is the weather in Paris?",
            "available_tools": [{"name": "get_weather_for_weather_hub", "parameters": {"required": ["city"]}}],
            "answer": {"method": "CoT@1", "total_steps": len(nodes), "final_answer": final,
                       "answer_details": details}}


FINAL = json.dumps({"return_type": "give_answer", "final_answer": "It is 20 C and clear in Paris."})
WEATHER = json.dumps({"error": "", "response": {"city": "Paris", "temp_c": 20, "sky": "clear"}})


def write_converted(path: Path, records: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------
@needs_sample
def test_toolbench_converted_files_read_with_cut_messages_marked_not_available():
    trajs = released.load(CONVERTED / "G1_instruction.json", "G1_instruction", "ChatGPT-CoT")
    assert len(trajs) == 100 and len({t["query_id"] for t in trajs}) == 100
    assert all(t["not_available"] == list(released.NEEDS_FULL_MESSAGES) for t in trajs)
    first = trajs[0]
    assert [s["action"] for s in first["steps"]][-1] == "Finish"
    assert first["final_answer"].startswith("The decoded information for the VINs")
    # 400 released ChatGPT-CoT answers in four groups hold 58 give-ups or empty answers (issue 11);
    # these two groups hold their share of them, which ToolEval still asks the task check about.
    kinds = [t["finish_type"] for g in ("G1_instruction", "G2_instruction")
             for t in released.load(CONVERTED / f"{g}.json", g, "x")]
    assert kinds.count("give_answer") + kinds.count("give_up_and_restart") + kinds.count("") == 200
    assert kinds.count("give_up_and_restart") > 0


@needs_sample
@pytest.mark.parametrize("system", ["virtual_chatgpt_cot", "virtual_chatgpt_dfs"])
def test_raw_answer_folders_convert_exactly_as_toolevals_converter_did(system):
    raw = {t["query_id"]: t for t in released.load(STB / "answer" / system, "G1_instruction", system)}
    ref = {t["query_id"]: t for t in released.load(STB / "model_predictions_converted" / system,
                                                   "G1_instruction", system)}
    assert sorted(raw) == sorted(ref) == ["1073", "588", "608"]
    for qid in raw:       # 588's CoT answer is unfinished: converted from its one try
        assert raw[qid]["answer"] == ref[qid]["answer"]
        assert raw[qid]["available_tools"] == ref[qid]["available_tools"]
        assert raw[qid]["not_available"] == []


def test_a_bad_converted_record_names_file_query_and_field(tmp_path):
    path = write_converted(tmp_path / "G1_instruction.json", {"7": {"query": "q", "available_tools": [],
                                                                  "answer": {"method": "x"}}})
    with pytest.raises(released.ReleasedFormatError, match=r"G1_instruction.json, query_id '7': field 'answer.final_answer' is missing"):
        released.load(path, "G1_instruction", "x")


def test_a_raw_folder_with_two_methods_per_query_needs_a_method(tmp_path):
    folder = tmp_path / "answers" / "G1_instruction"
    folder.mkdir(parents=True)
    generation = {"valid_data": True, "query": "q", "function": [], "final_answer": FINAL,
                  "train_messages": [[{"role": "system", "content": ""}, {"role": "user", "content": "q"},
                                      {"role": "assistant", "content": "",
                                       "function_call": {"name": "Finish", "arguments": FINAL}}]]}
    for method in ("CoT@1", "DFS_woFilter_w2"):
        (folder / f"5_{method}.json").write_text(json.dumps({"answer_generation": generation}))
    with pytest.raises(released.ReleasedFormatError, match="5_CoT@1.json and 5_DFS_woFilter_w2.json"):
        released.load(tmp_path / "answers", "G1_instruction", "x")
    (trajectory,) = released.load(tmp_path / "answers", "G1_instruction", "x", methods=["DFS_woFilter_w2"])
    assert trajectory["answer"]["method"] == "DFS_woFilter_w2" and trajectory["finish_type"] == "give_answer"


def test_an_unfinished_dfs_answer_walks_its_tree_the_same_way_every_time(tmp_path):
    def node(kind, description, children=(), observation=None):
        return {"node_type": kind, "description": description, "children": list(children),
                **({"observation": observation} if observation is not None else {})}
    branches = [node("Action", f"api_{i}", [node("Action Input", "{}", [], f"result {i}")]) for i in range(5)]
    data = {"answer_generation": {"valid_data": False, "query": "q", "function": [], "final_answer": ""},
            "tree": {"tree": {"node_type": "root", "children": branches}}}
    folder = tmp_path / "G1_instruction"
    folder.mkdir()
    (folder / "9_DFS_woFilter_w2.json").write_text(json.dumps(data))
    runs = [released.load(tmp_path, "G1_instruction", "x")[0] for _ in range(3)]
    assert runs[0]["steps"] == runs[1]["steps"] == runs[2]["steps"]
    (s,) = runs[0]["steps"]
    assert s["observation"] == f"result {s['action'][-1]}" and runs[0]["finish_type"] == ""


# ------------------------------------------------------------------------------------------------
# Judging them like ours
# ------------------------------------------------------------------------------------------------
def test_cut_messages_are_not_available_never_failed(tmp_path):
    path = write_converted(tmp_path / "G1_instruction.json", {
        "1": converted(FINAL, ("get_weather_for_weather_hub", '{"city": "Paris"}', WEATHER),
                       ("Finish", FINAL, ""), cut=True),
        "2": converted(FINAL, ("get_weather_for_weather_hub", '{"city": "Paris"}', WEATHER),
                       ("Finish", FINAL, ""))})
    cfg = make_cfg(tmp_path, {}, kind="offline")
    result = released_runs.rejudge(cfg, {"name": "Someone (released)", "path": str(path), "groups": ["G1_instruction"]},
                                   log=lambda *a: None)
    recs = {r["query_id"]: r for r in result["judged"]["G1_instruction"]}
    cut, whole = recs["1"]["checks"], recs["2"]["checks"]
    assert cut["valid_inputs"] is None and cut["answer_grounded"] is None and cut["valid_names"] is True
    assert whole["valid_inputs"] is True and whole["answer_grounded"] is True
    assert {a["answer_status"] for a in recs["1"]["assessments"]} == {"Unsure"}    # undecidable: coins
    assert recs["2"]["passed"] and recs["2"]["score_mean"] == 1.0
    checks = {r["group"]: r for r in read_csv(result["folder"] / "checks.csv")}
    assert checks["G1_instruction"]["valid_inputs"] == "100.0"     # of the one answer that can say
    assert result["info"]["not_available"] == {"G1_instruction": 1}


def test_stage_04_judges_released_runs_with_the_same_judge_on_our_queries(tmp_path):
    ours = [traj(1, GOOD), traj(2, GOOD)]
    cfg = make_cfg(tmp_path, {"G1_instruction": ours}, {"G1_instruction": [query(1), query(2)]}, kind="offline")
    path = write_converted(tmp_path / "baseline" / "G1_instruction.json", {
        "1": converted(FINAL, ("get_weather_for_weather_hub", '{"city": "Paris"}', WEATHER), ("Finish", FINAL, "")),
        "2": converted("", ("get_weather_for_weather_hub", '{"city": "Paris"}', WEATHER)),
        "99": converted(FINAL, ("Finish", FINAL, ""))})           # not a query of our run: left out
    cfg = config.derive(cfg, {"judge.released": [{"name": "Baseline (released answers)", "path": str(path.parent)}]})
    judge.run(cfg, log=lambda *a: None)
    out = Path(cfg.output_dir)
    rows = {(r["aggregation"], r["group"]): r
            for r in read_csv(out / "released" / "Baseline_released_answers" / "pass_rate.csv")}
    row = rows["majority", "G1_instruction"]
    assert (row["method"], row["n"], row["passed"], row["judge"]) == ("Baseline (released answers)", "2", "1",
                                                                      "offline judge")
    summary = json.loads((out / "judge_summary.json").read_text())
    assert {r["method"] for r in summary["released"]} == {"Baseline (released answers)"}
    # Our own run's files are untouched by it.
    assert {r["method"] for r in read_csv(out / "pass_rate.csv")} == {"react"}


def test_a_bad_released_entry_fails_before_anything_is_judged(tmp_path):
    cfg = make_cfg(tmp_path, {"G1_instruction": [traj(1, GOOD)]}, {"G1_instruction": [query(1)]}, kind="offline")
    cfg = config.derive(cfg, {"judge.released": [{"name": "x", "path": str(tmp_path / "nowhere")}]})
    with pytest.raises(config.ConfigError, match=r"judge.released\[0\]: path .*nowhere does not exist"):
        judge.run(cfg, log=lambda *a: None)
    assert not (Path(cfg.output_dir) / "judgments").exists()


def test_the_command_line_rejudges_a_file_a_group_at_a_time(tmp_path, capsys):
    for group in ("G1_instruction", "G2_instruction"):
        write_converted(tmp_path / "answers" / f"{group}.json", {
            "1": converted(FINAL, ("get_weather_for_weather_hub", '{"city": "Paris"}', WEATHER), ("Finish", FINAL, ""))})
    out = tmp_path / "out"
    args = ["--profile", "smoke", "--name", "ChatGPT-CoT (released)", "--set", f"output_dir={out}"]
    for group in ("G1_instruction", "G2_instruction"):
        assert judge.main(args + ["--answers", str(tmp_path / "answers" / f"{group}.json"), "--group", group]) == 0
    printed = capsys.readouterr().out
    assert "majority: pass rate 100.0% of n=1 (Wilson 95% 20.6-100.0)" in printed
    folder = out / "released" / "ChatGPT-CoT_released"
    assert {r["group"] for r in read_csv(folder / "pass_rate.csv")} == {"G1_instruction", "G2_instruction", "overall"}
    assert len(store.read_jsonl(folder / "judgments" / "G1_instruction" / "G1_instruction.jsonl")) == 1
    # A file it cannot read: one line naming the file, the query id and the field.
    bad = write_converted(tmp_path / "bad.json", {"3": {"query": "q", "available_tools": [], "answer": []}})
    assert judge.main(args + ["--answers", str(bad), "--group", "G1_instruction"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"error: {bad}, query_id '3': field 'answer' has type list"
    assert judge.main(args + ["--answers", str(tmp_path / "nowhere.json"), "--group", "G1_instruction"]) == 2
    assert capsys.readouterr().err.strip() == f"error: --answers {tmp_path / 'nowhere.json'}: no such file or folder"


# ------------------------------------------------------------------------------------------------
# Stage 05's calibration table
# ------------------------------------------------------------------------------------------------
def test_calibration_sets_rejudged_beside_published_with_the_gap(tmp_path):
    write_converted(tmp_path / "answers" / "G1_instruction.json", {
        str(i): converted(FINAL, ("get_weather_for_weather_hub", '{"city": "Paris"}', WEATHER), ("Finish", FINAL, ""))
        for i in range(4)})
    cfg = make_cfg(tmp_path, {}, kind="offline")
    released_runs.rejudge(cfg, {"name": "ChatGPT-CoT (released answers)", "groups": ["G1_instruction"],
                                "path": str(tmp_path / "answers" / "G1_instruction.json")}, log=lambda *a: None)
    paper = report.reference_series(config.path(cfg, cfg.report.paper_results), "paper")
    readme = report.reference_series(config.path(cfg, cfg.report.toolbench_results), "readme")
    rows = calibration.calibration_rows(calibration.released_runs(cfg), paper, readme)
    row = next(r for r in rows if r["group"] == "G1_instruction")
    assert (row["compare_to"], row["rejudged"], row["paper"], row["readme"]) == ("ChatGPT-CoT", 100.0, 33.0, 41.5)
    assert (row["gap_to_paper"], row["gap_to_readme"]) == (67.0, 58.5)
    text = calibration.calibration_markdown(rows, calibration.released_runs(cfg), [], None)
    assert "offline judge, not ToolEval" in text
    paths = report.run(cfg)
    assert paths["calibration_png"].exists()
    audit = (paths["audit_md"]).read_text()
    assert "ChatGPT-CoT (released answers) re-judged 100.00" in audit


def test_released_baselines_are_judged_once_not_again_for_the_untrained_model(tmp_path):
    cfg = make_cfg(tmp_path, {}, kind="offline")
    cfg = config.derive(cfg, {"judge.released": [{"name": "x", "path": "somewhere"}]})
    assert untrained.settings(cfg).judge.released == [] and cfg.judge.released
