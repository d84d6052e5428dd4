"""lib.toolbench.formats: ToolBench's name rules, prompt, functions, step parser and test-query reader."""
import ast
import glob
import json
from pathlib import Path

import pytest

from conftest import TOOLBENCH_SAMPLE as SAMPLE
from lib.toolbench import formats

needs_sample = pytest.mark.skipif(not SAMPLE.exists(), reason="toolbench-sample not present")

QUERY = {
    "query": "What is the weather in Paris?",
    "query_id": 7,
    "api_list": [
        {"category_name": "Weather", "tool_name": "Weather API!", "api_name": "Current Weather",
         "api_description": "Current Weather for a city", "method": "GET",
         "required_parameters": [{"name": "city", "type": "STRING", "description": "City", "default": "London"}],
         "optional_parameters": [{"name": "id", "type": "NUMBER", "description": "", "default": ""}]},
        {"category_name": "Weather", "tool_name": "Weather API!", "api_name": "Forecast",
         "api_description": "", "method": "GET", "required_parameters": [],
         "optional_parameters": [{"name": "days", "type": "NUMBER", "description": "d", "default": 3}]},
    ],
    "relevant APIs": [["Weather API!", "Current Weather"]],
}


def test_standardize_name_follows_toolbench():
    assert formats.standardize_name("Weather API!") == "weather_api"
    assert formats.standardize_name("  __Foo--Bar__ ") == "foo_bar"
    assert formats.standardize_name("123 Go") == "get_123_go"
    assert formats.standardize_name("a^b") == "a^b"          # the original regex keeps '^'
    assert formats.change_name("from") == "is_from" and formats.change_name("city") == "city"


def test_function_names_keep_the_last_64_characters():
    name = formats.api_function_name("x" * 50, "Some Very Long Tool Name Here")
    assert len(name) == 64 and name.endswith("_for_some_very_long_tool_name_here")


def test_functions_for_query_builds_toolbench_dicts():
    fns = formats.functions_for_query(QUERY)
    assert [f["name"] for f in fns] == ["current_weather_for_weather_api", "forecast_for_weather_api", "Finish"]
    cw = fns[0]
    assert cw["description"] == ('This is the subfunction for tool "weather_api", you can use this tool.'
                                 'The description of this function is: "current_weather_for_weather_api for a city"')
    assert cw["parameters"]["required"] == ["city"] and cw["parameters"]["optional"] == ["is_id"]
    assert cw["parameters"]["properties"]["city"] == {"type": "string", "description": "City", "example_value": "London"}
    assert cw["parameters"]["properties"]["is_id"] == {"type": "integer", "description": ""}
    # ToolBench lists optional parameters only when there are required ones.
    assert fns[1]["parameters"]["properties"] == {} and fns[1]["description"].endswith("use this tool.")


def test_bad_query_names_index_id_and_field():
    bad = dict(QUERY, api_list=[{"category_name": "c", "tool_name": "t"}])
    with pytest.raises(formats.QueryError, match=r"G1_tool.json: record 3 \(query_id 7\).*api_list\[0\].api_name"):
        formats.check_query(bad, "G1_tool.json", 3)
    with pytest.raises(formats.QueryError, match="missing field 'query'"):
        formats.check_query({"query_id": 1, "api_list": []}, "f", 0)


def test_system_prompt_shape():
    fns = formats.functions_for_query(QUERY)
    text = formats.system_prompt(fns, [("weather_api", "Weather\nfor all")])
    assert text.startswith("You are AutoGPT")
    assert "You have access of the following tools:\n1.weather_api: Weatherfor all\n\nSpecifically" in text
    assert text.endswith("Specifically, you have access to the following APIs: " + str(fns))
    assert "1.weather_api: None\n" in formats.system_prompt(fns)


@needs_sample
def test_system_prompt_matches_real_training_records():
    records = json.loads((SAMPLE / "derived/toolllama_format_from_data_example.json").read_text())
    assert records
    for record in records:
        text = record["conversations"][0]["value"]
        fns = ast.literal_eval(text.split("Specifically, you have access to the following APIs: ", 1)[1])
        lines = text.split("You have access of the following tools:\n", 1)[1].split("\nSpecifically")[0]
        tools = [tuple(line.split(".", 1)[1].split(": ", 1)) for line in lines.strip("\n").split("\n")]
        assert fns[-1] in (formats.FINISH, formats.FINISH_V1)
        assert formats.system_prompt(fns, tools) == text


@needs_sample
def test_functions_for_query_match_real_answer_files():
    queries = json.loads((SAMPLE / "stabletoolbench/solvable_queries/test_instruction/G1_instruction.json").read_text())
    by_id = {str(q["query_id"]): q for q in queries}
    files = glob.glob(str(SAMPLE / "stabletoolbench/data_example/answer/*/G1_instruction/*.json"))
    assert files
    for f in files:
        answer = json.loads(Path(f).read_text())["answer_generation"]
        assert formats.functions_for_query(by_id[Path(f).name.split("_")[0]]) == answer["function"]


@pytest.mark.parametrize("text,expected", [
    ("\nThought: look\nAction: forecast_for_weather_api\nAction Input: {\"days\": 2}",
     ("look", "forecast_for_weather_api", "{\"days\": 2}", None)),
    ("Thought: \nAction: Finish\nAction Input: {\n  \"return_type\": \"give_answer\"\n}",
     ("", "Finish", "{\n  \"return_type\": \"give_answer\"\n}", None)),
    ("Thought: hmm, nothing to do", ("hmm, nothing to do", "", "", "missing 'Action:'")),
    ("Thought: a\nAction: Finish", ("a", "Finish", "", "missing 'Action Input:'")),
])
def test_parse_step(text, expected):
    assert formats.parse_step(text) == expected


def test_parse_step_errors():
    names = {"forecast_for_weather_api", "Finish"}
    assert formats.parse_step("Thought: x\nAction: nope\nAction Input: {}", names)[3] == "unknown function 'nope'"
    assert "not valid JSON" in formats.parse_step("Thought: x\nAction: Finish\nAction Input: {oops", names)[3]
    assert formats.parse_step("Thought: x\nAction: Finish\nAction Input: [1]", names)[3] == "Action Input must be a JSON object"
    step = formats.format_step("t", "Finish", '{"return_type": "give_up_and_restart"}')
    assert formats.parse_step(step, names) == ("t", "Finish", '{"return_type": "give_up_and_restart"}', None)


def test_load_queries_names_file_and_record(tmp_path):
    path = tmp_path / "G1_tool.json"
    path.write_text(json.dumps([QUERY, dict(QUERY, query_id=9, api_list="x")]))
    with pytest.raises(formats.QueryError, match=r"G1_tool.json: record 1 \(query_id 9\): field 'api_list'"):
        formats.load_queries(path)
    # A repeated id (1 and "1" are one id) would be run twice and judged with the wrong query's APIs.
    path.write_text(json.dumps([dict(QUERY, query_id=1), dict(QUERY, query_id=2), dict(QUERY, query_id="1")]))
    with pytest.raises(formats.QueryError, match=r"G1_tool.json: records 0 and 2 share query_id '1'"):
        formats.load_queries(path)
