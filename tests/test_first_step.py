"""lib/checks/first_step.py: the four criteria of a sensible first tool call, on hand-made turns."""
import json

import pytest

from lib.checks import first_step

QUERY = {"query": "What is the weather in Paris on 2024-05-01? I need it for 3 people.", "query_id": 7,
         "api_list": [{"category_name": "Data", "tool_name": "Weather Hub", "api_name": "Get Weather",
                       "api_description": "", "method": "GET", "optional_parameters": [],
                       "required_parameters": [{"name": "city", "type": "STRING", "description": "", "default": ""},
                                               {"name": "date", "type": "STRING", "description": "", "default": ""}]},
                      {"category_name": "Data", "tool_name": "Weather Hub", "api_name": "Get Time",
                       "api_description": "", "method": "GET", "optional_parameters": [],
                       "required_parameters": []}],
         "relevant APIs": [["Weather Hub", "Get Weather"]]}


def turn(action, args):
    return f"\nThought: look it up\nAction: {action}\nAction Input: {json.dumps(args) if isinstance(args, dict) else args}"


@pytest.mark.parametrize("text, expected", [
    (turn("get_weather_for_weather_hub", {"city": "paris", "date": "2024-05-01"}),
     dict(parses=True, names_function=True, has_required=True, values_from_query=True, correct=True)),
    (turn("get_weather_for_weather_hub", {"city": "Rome", "date": "2024-05-01"}),      # value not in the query
     dict(parses=True, names_function=True, has_required=True, values_from_query=False, correct=False)),
    (turn("get_weather_for_weather_hub", {"city": "Paris"}),                           # a required key missing
     dict(parses=True, names_function=True, has_required=False, values_from_query=False, correct=False)),
    (turn("get_wether_for_weather_hub", {"city": "Paris", "date": "2024-05-01"}),      # a stuttered name
     dict(parses=True, names_function=False, has_required=False, values_from_query=False, correct=False)),
    (turn("Finish", {"return_type": "give_answer", "final_answer": "x"}),              # not an API call
     dict(parses=True, names_function=False, has_required=False, values_from_query=False, correct=False)),
    (turn("get_weather_for_weather_hub", '{"city": "Paris", "date"'),                   # broken JSON
     dict(parses=False, names_function=False, has_required=False, values_from_query=False, correct=False)),
    ("\nThought: I will call the weather API", dict(parses=False, correct=False)),
    (turn("get_time_for_weather_hub", {}),                                            # no required parameter
     dict(parses=True, names_function=True, has_required=True, values_from_query=True, correct=True)),
])
def test_first_step_criteria(text, expected):
    result = first_step.check(text, QUERY)
    assert {k: result[k] for k in expected} == expected


def test_numbers_from_the_query_match_as_numbers():
    from lib.checks import grounding
    assert grounding.stated_in(3, QUERY["query"]) and grounding.stated_in("3.0", QUERY["query"])
    assert not grounding.stated_in(4, QUERY["query"]) and not grounding.stated_in("", QUERY["query"])


def test_rates_and_first_turn_rebuilt_from_a_trajectory_line():
    line = {"steps": [{"thought": "t", "action": "get_weather_for_weather_hub",
                       "action_input": '{"city": "Paris", "date": "2024-05-01"}', "parse_error": None}]}
    assert first_step.check(first_step.first_turn(line), QUERY)["correct"]
    unparsed = {"steps": [{"thought": "rambling", "action": "", "action_input": "", "parse_error": "missing 'Action:'"}]}
    assert not first_step.check(first_step.first_turn(unparsed), QUERY)["parses"]
    assert first_step.rates([{c: True for c in (*first_step.CRITERIA, "correct")},
                             {c: False for c in (*first_step.CRITERIA, "correct")}])["correct"] == 0.5
