"""lib/checks/trajectory_checks.py: the deterministic checks of a trajectory, on hand-made and real
StableToolBench trajectories."""
from __future__ import annotations

import json

import pytest

from lib.toolbench import tooleval
from lib.checks import trajectory_checks

from conftest import TOOLBENCH_SAMPLE
from judge_helpers import GOOD, finish, query, step, traj

SAMPLE = TOOLBENCH_SAMPLE / "stabletoolbench"


def test_checks_on_a_clean_trajectory():
    c = trajectory_checks.deterministic_checks(traj(1, GOOD), query(1))
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
    c = trajectory_checks.deterministic_checks(traj(2, steps, parse_errors=1), query(2))
    assert c["hallucinated"] == ["get_stock_for_wall_street"] and not c["valid_names"]
    assert c["hallucination_rate"] == pytest.approx(1 / 4)
    assert c["invalid_inputs"] == 2 and c["missing_required"] == ["get_weather_for_weather_hub.city"]
    assert c["relevant_recall"] == 1.0
    assert c["parse_errors"] == 1 and c["parse_error_rate"] == pytest.approx(1 / 5)
    assert c["finished"]


def test_checks_without_the_query_fall_back_to_available_tools():
    t = traj(3, [step("f_for_t", '{"a": 1}'), finish()])
    t["available_tools"] = [{"name": "f_for_t", "parameters": {"required": ["a", "b"]}}]
    c = trajectory_checks.deterministic_checks(t, None)
    assert c["valid_names"] and c["missing_required"] == ["f_for_t.b"]
    assert c["relevant_recall"] is None


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
        c = trajectory_checks.deterministic_checks(t, queries[qid])
        assert c["valid_names"], (qid, c["hallucinated"])      # our names == ToolBench's names
        assert c["valid_inputs"] and c["relevant_recall"] is not None and c["relevant_hits"]
        # StableToolBench marked the run without a final Finish Unsolved in every round.
        if tooleval.precheck(t):
            assert set(judged[qid]["is_solved"].values()) == {"AnswerStatus.Unsolved"}
            prechecked.append(qid)
    assert prechecked == ["588"]
