"""lib/checks/offline_judge.py: the offline judge's grounding rule - Solved needs the answer to state what
the calls about the query returned (lib/checks/trajectory_checks.py, lib/checks/grounding.py)."""
from __future__ import annotations

import json

import pytest

from lib.toolbench import tooleval
from lib.checks import offline_judge, trajectory_checks

from judge_helpers import finish, query, step, traj


@pytest.mark.parametrize("answer, label", [
    ("It is 20 C and clear in Paris.", "Solved"),                     # right: the call's values
    ("It is 20C in Paris.", "Solved"),                                # number found beside its unit
    ("Paris: 25 C, raining.", "Unsolved"),                            # wrong values
    ("The weather in Paris is pleasant today.", "Unsolved"),          # right format, no value
    ("I found the weather: city, temp_c and sky.", "Unsolved"),       # field names are not values
])
def test_offline_judge_needs_an_answer_grounded_in_the_calls(answer, label):
    t = traj("g1", [step("get_weather_for_weather_hub", '{"city": "Paris"}'), finish(answer)])
    checks = trajectory_checks.deterministic_checks(t, query("g1"))
    assert offline_judge.offline_answer_status(checks, tooleval.precheck(t))[0] == label
    assert checks["answer_grounded"] == (label == "Solved")


def test_grounding_counts_only_relevant_successful_calls():
    weather = step("get_weather_for_weather_hub", '{"city": "Paris"}')
    failed = step("get_weather_for_weather_hub", '{"city": "Paris"}',
                  observation=json.dumps({"error": "timeout", "response": json.dumps({"temp_c": 20})}))
    other = step("get_news_for_daily", "{}", observation=json.dumps({"error": "", "response": "headline 20"}))
    for steps, grounded in (([weather, finish("20 C")], True), ([failed, finish("20 C")], False),
                            ([other, finish("20 C")], False)):
        checks = trajectory_checks.deterministic_checks(traj("g", steps + []), query("g"))
        assert checks["answer_grounded"] is grounded, steps


def test_grounding_normalises_numbers_case_and_space():
    from lib.checks import grounding
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
    checks = trajectory_checks.deterministic_checks(traj("g", wrong), query("g"))
    assert checks["off_query_calls"] == 1 and not checks["answer_grounded"]
    assert offline_judge.offline_answer_status(checks, tooleval.precheck(traj("g", wrong)))[0] == "Unsolved"
    # A retry with the query's city after the wrong call is about the query again: Solved.
    retried = wrong[:1] + [step("get_weather_for_weather_hub", '{"city": "paris "}'), finish()]
    checks = trajectory_checks.deterministic_checks(traj("g", retried), query("g"))
    assert checks["off_query_calls"] == 1 and checks["answer_grounded"]
    assert offline_judge.offline_answer_status(checks, tooleval.precheck(traj("g", retried)))[0] == "Solved"


def test_an_argument_taken_from_an_earlier_result_keeps_the_call_about_the_query():
    found = json.dumps({"error": "", "response": json.dumps({"city_id": "FR-75056"})})
    lookup = step("get_time_for_weather_hub", "{}", observation=found)
    by_id = step("get_weather_for_weather_hub", '{"city": "FR-75056"}')
    checks = trajectory_checks.deterministic_checks(traj("g", [lookup, by_id, finish()]), query("g"))
    assert checks["off_query_calls"] == 0 and checks["answer_grounded"]
    # The same id out of nowhere (no earlier result gave it) is not about the query.
    checks = trajectory_checks.deterministic_checks(traj("g", [by_id, finish()]), query("g"))
    assert checks["off_query_calls"] == 1 and not checks["answer_grounded"]
