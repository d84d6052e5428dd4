"""lib/toolbench/tooleval.py: ToolEval's rules on fixed inputs - labels, votes, replies, pre-checks - and its
prompts, kept word for word in lib/toolbench/tooleval_prompts/."""
from __future__ import annotations

import hashlib

import pytest

from lib.toolbench import tooleval

from judge_helpers import GOOD, finish, step, traj


@pytest.mark.parametrize("answer,task,label", [
    ("Solved", "Solvable", "Passed"), ("Solved", "Unsure", "Passed"), ("Solved", "Unsolvable", "Passed"),
    ("Unsolved", "Solvable", "Failed"), ("Unsolved", "Unsure", "Unsure"),
    ("Unsolved", "Unsolvable", "Passed"), ("Unsure", "Solvable", "Unsure"),
    ("Unsure", "Unsure", "Unsure"), ("Unsure", "Unsolvable", "Passed")])
def test_assessment_label_is_toolevals_is_passed(answer, task, label):
    assert tooleval.assessment_label(answer, task) == label


def test_majority_vote_tie_passes_and_unsure_is_a_seeded_coin():
    assert tooleval.majority(["pass", "fail"]) is True
    assert tooleval.majority(["pass", "pass", "fail", "fail"]) is True
    assert tooleval.majority(["pass", "fail", "fail"]) is False
    assert tooleval.majority(["fail"] * 4) is False
    assert tooleval.vote("Passed", tooleval.seeded_rng(1)) == ("pass", False)
    assert tooleval.vote("Failed", tooleval.seeded_rng(1)) == ("fail", False)
    coins = [tooleval.vote("Unsure", tooleval.seeded_rng(7, "G1", q, 0)) for q in range(400)]
    assert all(flag for _, flag in coins)
    assert 150 < sum(v == "pass" for v, _ in coins) < 250            # a fair coin
    again = [tooleval.vote("Unsure", tooleval.seeded_rng(7, "G1", q, 0)) for q in range(400)]
    assert coins == again                                             # and a reproducible one


def test_parse_reply_accepts_fenced_or_wrapped_json_and_rejects_bad_labels():
    assert tooleval.parse_reply("check_answer_status", '```json\n{"answer_status": "solved"}\n```')[
        "answer_status"] == "Solved"
    assert tooleval.parse_reply("check_task_solvable", 'Sure! {"task_status": "Unsolvable"} done')[
        "task_status"] == "Unsolvable"
    assert tooleval.parse_reply("select_better_answer", '{"index": "1"}')["index"] == 1
    for fn, text in [("check_answer_status", '{"answer_status": "Maybe"}'),
                     ("check_answer_status", "Solved"), ("check_answer_status", ""),
                     ("select_better_answer", '{"index": 2}'), ("check_task_solvable", "[1, 2]")]:
        assert tooleval.parse_reply(fn, text) is None, text


def test_prechecks_fail_without_the_judge():
    assert tooleval.precheck(traj(1, GOOD)) is None
    assert tooleval.precheck(traj(1, GOOD[:1], finish_type="max_iterations")) == "no Finish call"
    give_up = [step("Finish", '{"return_type": "give_up_and_restart"}', "")]
    assert "gave up" in tooleval.precheck(traj(1, give_up, finish_type="give_up"))
    # ToolEval (rtl.py check_is_solved) tests the converted answer's final_answer, Finish's raw
    # arguments, as is: a blank answer inside the JSON is the judge's to read; "" is not.
    assert tooleval.precheck(traj(1, [GOOD[0], finish("  ")])) is None
    assert tooleval.precheck(traj(1, [GOOD[0], finish("")], finish_type="max_iterations")) == "empty final answer"


# The prompts' texts as they were in lib/judge/judge.py before they moved to lib/toolbench/tooleval_prompts/ (sha256 of
# the UTF-8 text): a changed word changes every cache key and every judgment, so it must be deliberate.
PROMPT_SHA256 = {
    "system": "58de7eaffa40b7a1f5c58afa196e8cb31aa51dd81020dee73b4c9af8b0efa535",
    "check_answer_status": "fe7a06dc7418d02d15c298a4b6c32d860c8589c4d1b283d9a34d73dcb1d0baee",
    "parse_answer_status": "33c060421cdc99cfd27c933d68f56848cff77073e4b9647a62bd262b1e5b685f",
    "check_task_solvable": "9ef23a685678a555d0eb7fa66d64fdca281706572f46a09d3cc7cda90334565f",
    "select_better_answer": "f4d31e1e46dd8488543eec5727d72477c5a9a7001c94e46c3cca3cd4d66a8840",
}


def test_the_prompt_templates_hold_the_prompts_word_for_word():
    texts = {"system": tooleval.SYSTEM_PROMPT, **tooleval.PROMPTS}
    assert {name: hashlib.sha256(text.encode("utf-8")).hexdigest()
            for name, text in texts.items()} == PROMPT_SHA256
    assert set(tooleval.PROMPTS) == set(tooleval.REPLY_FIELDS)
    assert tooleval.PROMPTS["check_answer_status"].startswith(
        "Below are a user's request and the final answer an assistant gave.\nDecide `answer_status`:")


@pytest.mark.parametrize("function, fields", [
    ("check_answer_status", {"query": "Q?", "answer": "A."}),
    ("parse_answer_status", {"query": "Q?", "answer": "{}"}),
    ("check_task_solvable", {"task": "{}"}),
    ("select_better_answer", {"query": "Q?", "answer_0": "{}", "answer_1": "{}"})])
def test_each_prompt_fills_with_its_fields_and_asks_for_its_reply_field(function, fields):
    text = tooleval.PROMPTS[function].format(**fields)
    field, _ = tooleval.REPLY_FIELDS[function]
    assert '{"reason": "<one or two sentences>", "' + field + '": ' in text
    assert all(value in text for value in fields.values()) and "{{" not in text


def test_prompt_messages_are_the_system_message_then_the_filled_template():
    fields = {"query": "Q?", "answer": "A."}
    assert tooleval.prompt_messages("check_answer_status", fields) == [
        {"role": "system", "content": tooleval.SYSTEM_PROMPT},
        {"role": "user", "content": tooleval.PROMPTS["check_answer_status"].format(**fields)}]


def test_the_whole_run_is_shown_as_toolbench_shows_it():
    """ToolBench's eval_pass_rate.py runs its hallucination check first, which turns each tool
    message into its str() in place and stops at the first unknown function: the judge's
    parse_answer_status prompt shows that, not the dicts."""
    def tool(name):
        return {"role": "tool", "message": {"name": name, "arguments": "{}", "response": "r"}, "next": []}
    nodes = [tool("a_for_x"), tool("ghost_for_x"), tool("b_for_x")]
    for node, nxt in zip(nodes, nodes[1:]):
        node["next"] = [nxt]
    t = {"query": "q", "final_answer": "", "steps": [], "available_tools": [{"name": "a_for_x"}, {"name": "b_for_x"}],
         "answer": {"final_answer": "x", "answer_details": [{"role": "system", "message": "", "next": [nodes[0]]}]}}
    shown = tooleval.answer_as_toolbench_shows_it(t)
    first = shown["answer_details"][0]["next"][0]
    assert first["message"] == str({"name": "a_for_x", "arguments": "{}", "response": "r"})
    assert isinstance(first["next"][0]["message"], str)            # the unknown one is turned, then it stops
    assert isinstance(first["next"][0]["next"][0]["message"], dict)
    assert isinstance(t["answer"]["answer_details"][0]["next"][0]["message"], dict)   # the trajectory is untouched
