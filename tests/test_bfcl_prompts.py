"""BFCL questions as ToolBench prompts (lib/checks/bfcl_prompts.py): hand-made questions of each
kind, and a round trip on the real files when bfcl-eval is installed: the possible answer written as
ToolBench steps, read back and scored right by BFCL's rules."""
import json

import pytest

from lib.checks import bfcl_prompts, bfcl_questions, bfcl_rules
from lib.checks.bfcl_prompts import StepError, prediction, prediction_for
from lib.checks.bfcl_questions import Question
from lib.toolbench import formats
from test_bfcl_rules import UNANSWERABLE, _fed_back

AREA = {"name": "geometry.area", "description": "Area of a triangle.", "parameters": {
    "type": "dict", "required": ["base", "height"], "properties": {
        "base": {"type": "integer", "description": "The base."},
        "height": {"type": "float", "description": "The height."},
        "unit": {"type": "string", "description": "The unit.", "enum": ["cm", "m"], "default": "cm"},
        "corner": {"type": "tuple", "items": {"type": "integer"}, "description": "A corner."},
        "opts": {"type": "dict", "description": "Options.", "properties": {
            "mode": {"type": "any", "description": "Mode."}}, "required": ["mode"]},
        "points": {"type": "array", "items": {"type": "dict", "properties": {"x": {"type": "float"}}}},
        "exact": {"type": "boolean", "description": ""}}}}
VOLUME = {"name": "volume", "description": "Volume of a cube.", "parameters": {
    "type": "dict", "required": ["side"], "properties": {"side": {"type": "integer", "description": "Side."}}}}
AREA_ANSWER = {"geometry.area": {"base": [10], "height": [5.0], "unit": ["cm", ""]}}


def question(category, functions, truth, turn=None):
    turn = turn or [{"role": "user", "content": "What is the area of a triangle of base 10 and height 5?"}]
    return Question(f"{category}_0", category, [turn], functions, truth)


def step(action, args, thought="I call it."):
    return formats.format_step(thought, action, json.dumps(args))


FINISH = step("Finish", {"return_type": "give_answer", "final_answer": "Done."})


def test_functions_are_toolbench_functions_with_bfcl_types_names_that_map_back_and_finish():
    q = question("multiple", [AREA, VOLUME], [{"volume": {"side": [3]}}])
    area, volume, finish = bfcl_prompts.functions(q)
    assert finish == formats.FINISH and volume["name"] == "volume"
    assert area["name"] == "geometry_area" and area["description"] == "Area of a triangle."
    params = area["parameters"]
    assert params["type"] == "object" and params["required"] == ["base", "height"]
    assert params["optional"] == ["unit", "corner", "opts", "points", "exact"]
    props = params["properties"]
    assert {k: v["type"] for k, v in props.items()} == {
        "base": "integer", "height": "number", "unit": "string", "corner": "array", "opts": "object",
        "points": "array", "exact": "boolean"}
    assert props["unit"] == {"type": "string", "description": "The unit. Default is: cm.", "enum": ["cm", "m"]}
    assert props["corner"]["items"] == {"type": "integer"}
    assert props["opts"]["properties"] == {"mode": {"type": "string", "description": "Mode."}}
    assert props["opts"]["required"] == ["mode"]
    assert props["points"]["items"]["properties"]["x"] == {"type": "number"}
    assert bfcl_prompts.names(q) == {"geometry_area": "geometry.area", "volume": "volume"}
    assert AREA["parameters"]["type"] == "dict"      # the question's own documents are untouched


def test_names_that_would_collide_are_refused():
    clash = dict(VOLUME, name="geometry_area")
    with pytest.raises(ValueError, match="'geometry_area'"):
        bfcl_prompts.functions(question("multiple", [AREA, clash], None))
    with pytest.raises(ValueError, match="'Finish'"):
        bfcl_prompts.names(question("multiple", [dict(VOLUME, name="Finish")], None))


def test_the_prompt_is_toolbench_s_with_the_user_turn_as_the_query():
    q = question("simple_python", [AREA], [AREA_ANSWER])
    chat = bfcl_prompts.messages(q)
    assert [m["role"] for m in chat] == ["system", "user"]
    assert chat[0]["content"] == formats.system_prompt(bfcl_prompts.functions(q), tools=[])
    assert chat[0]["content"].startswith("You are AutoGPT") and "'name': 'geometry_area'" in chat[0]["content"]
    assert chat[1]["content"] == formats.user_message(q.turns[0][0]["content"])


def test_a_question_s_own_system_message_follows_the_prompt_and_history_is_kept():
    turn = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Bonjour"}, {"role": "user", "content": "Area?"}]
    q = question("live_irrelevance", [AREA], None, turn)
    chat = bfcl_prompts.messages(q)
    assert chat[0]["content"].endswith("]\n\nAnswer in French.")
    assert chat[1:] == [{"role": "user", "content": formats.user_message("Hi")},
                        {"role": "assistant", "content": "Bonjour"},
                        {"role": "user", "content": formats.user_message("Area?")}]
    with pytest.raises(ValueError, match="2 turns"):
        bfcl_prompts.messages(Question("x", "simple_python", [turn, turn], [AREA], None))


def test_simple_the_first_step_is_the_prediction_mapped_back_to_bfcl_names():
    q = question("simple_python", [AREA], [AREA_ANSWER])
    steps = [step("geometry_area", {"base": 10, "height": 5}), FINISH]
    assert prediction_for(q, steps) == [{"geometry.area": {"base": 10, "height": 5}}]
    assert bfcl_rules.check(q.category, q.functions, q.ground_truth, prediction_for(q, steps))
    # Later steps do not count outside the parallel categories.
    twice = [steps[0], step("geometry_area", {"base": 1, "height": 1})]
    assert prediction_for(q, twice) == prediction_for(q, steps)
    assert prediction_for(q, [FINISH]) == [] and prediction_for(q, []) == []
    assert bfcl_rules.check(q.category, q.functions, q.ground_truth, []).reason == "wrong number of calls: 0, expected 1"


def test_multiple_an_unknown_name_is_a_call_the_rules_name_wrong():
    q = question("multiple", [AREA, VOLUME], [{"volume": {"side": [3]}}])
    assert bfcl_rules.check(q.category, q.functions, q.ground_truth, prediction_for(q, [step("volume", {"side": 3})]))
    made_up = prediction_for(q, [step("cube_volume", {"side": 3})])
    assert made_up == [{"cube_volume": {"side": 3}}]
    verdict = bfcl_rules.check(q.category, q.functions, q.ground_truth, made_up)
    assert not verdict and verdict.reason == "wrong function name: 'cube_volume', expected 'volume'"


def test_parallel_the_calls_before_finish_are_the_prediction():
    truth = [{"volume": {"side": [3]}}, {"volume": {"side": [4]}}]
    q = question("parallel", [VOLUME], truth)
    steps = [step("volume", {"side": 4}), step("volume", {"side": 3}), FINISH, step("volume", {"side": 5})]
    assert prediction_for(q, steps) == [{"volume": {"side": 4}}, {"volume": {"side": 3}}]
    assert bfcl_rules.check(q.category, q.functions, q.ground_truth, prediction_for(q, steps))
    assert prediction_for(q, steps[:2]) == prediction_for(q, steps)        # no Finish: the calls made
    assert prediction(steps, {"volume": "volume"}) == [{"volume": {"side": 4}}]   # not parallel


def test_irrelevance_finish_first_is_right_and_a_call_wrong():
    q = question("irrelevance", [AREA], None)
    assert bfcl_rules.check(q.category, q.functions, None, prediction_for(q, [FINISH]))
    call = prediction_for(q, [step("geometry_area", {"base": 1, "height": 2})])
    verdict = bfcl_rules.check(q.category, q.functions, None, call)
    assert not verdict and verdict.reason == "made 1 call(s) where no function fits: geometry.area"


@pytest.mark.parametrize("text, reason", [
    ("The area is 25.", "step 1: missing 'Action:'"),
    ("Thought: x\nAction: volume", "step 1: missing 'Action Input:'"),
    ("Thought: x\nAction: volume\nAction Input: {side: 3}", "step 1: Action Input is not valid JSON"),
    ("Thought: x\nAction: volume\nAction Input: [3]", "step 1: Action Input must be a JSON object"),
    ("Thought: x\nAction: \nAction Input: {}", "step 1: empty Action"),
])
def test_a_step_that_does_not_parse_is_wrong_with_its_reason_never_an_error(text, reason):
    q = question("simple_python", [VOLUME], [{"volume": {"side": [3]}}])
    got = prediction_for(q, [text])
    assert isinstance(got, StepError) and str(got).startswith(reason), got
    verdict = bfcl_rules.check(q.category, q.functions, q.ground_truth, got)
    assert not verdict and verdict.reason.startswith(f"does not parse: {reason}")


def test_in_parallel_the_first_step_that_does_not_parse_ends_the_prediction():
    q = question("parallel", [VOLUME], [{"volume": {"side": [3]}}, {"volume": {"side": [4]}}])
    got = prediction_for(q, [step("volume", {"side": 3}), "garbage", FINISH])
    assert isinstance(got, StepError) and str(got) == "step 2: missing 'Action:'"


# --- the real files ----------------------------------------------------------------------------

PER_CATEGORY = 20


@pytest.fixture(scope="module")
def real():
    pytest.importorskip("bfcl_eval")
    bfcl_questions.check_installed()
    return {c: bfcl_questions.read(c)[:PER_CATEGORY] for c in bfcl_questions.CATEGORIES}


def test_every_real_question_has_a_prompt(real):
    for questions in real.values():
        for q in questions:
            chat = bfcl_prompts.messages(q)
            assert chat[0]["role"] == "system" and chat[-1]["role"] == "user", q.id
            assert set(bfcl_prompts.names(q).values()) == {f["name"] for f in q.functions}


@pytest.mark.parametrize("category", [c for c in bfcl_questions.CATEGORIES if bfcl_questions.has_answers(c)])
def test_the_possible_answer_written_as_toolbench_steps_reads_back_right(real, category):
    for q in real[category]:
        steps = [step(bfcl_prompts.presented_name(name), args) for c in _fed_back(q) for name, args in c.items()]
        verdict = bfcl_rules.check(category, q.functions, q.ground_truth, prediction_for(q, steps + [FINISH]))
        assert bool(verdict) is (q.id not in UNANSWERABLE), (q.id, verdict.reason)
        garbage = bfcl_rules.check(category, q.functions, q.ground_truth, prediction_for(q, ["I think so."]))
        assert not garbage and garbage.reason == "does not parse: step 1: missing 'Action:'"


@pytest.mark.parametrize("category", ["irrelevance", "live_irrelevance"])
def test_real_irrelevance_finish_alone_is_right(real, category):
    for q in real[category]:
        assert bfcl_rules.check(category, q.functions, None, prediction_for(q, [FINISH])), q.id
        name = bfcl_prompts.functions(q)[0]["name"]
        assert not bfcl_rules.check(category, q.functions, None, prediction_for(q, [step(name, {})])), q.id
