"""lib.tools: offline recorded responses, the virtual API server over HTTP, RapidAPI requests."""
import json

import pytest

from conftest import LoopbackServer
from lib import tools


@pytest.fixture
def toolenv(tmp_path):
    (tmp_path / "tools" / "Weather").mkdir(parents=True)
    (tmp_path / "tools" / "Weather" / "weather_api.json").write_text(json.dumps({
        "tool_name": "Weather API!", "standardized_name": "weather_api", "tool_description": "Weather",
        "title": "Weather", "api_list": [
            {"name": "Current Weather", "url": "https://weather-api.p.rapidapi.com/current/{city}",
             "description": "now", "method": "GET",
             "required_parameters": [{"name": "city", "type": "STRING", "description": "", "default": ""}],
             "optional_parameters": [{"name": "units", "type": "STRING", "description": "", "default": "metric"}]},
            {"name": "Report", "url": "https://weather-api.p.rapidapi.com/report", "description": "",
             "method": "POST", "required_parameters": [],
             "optional_parameters": [{"name": "Text Body", "type": "STRING", "description": "", "default": ""}]},
        ]}))
    rows = [
        {"category": "Weather", "tool_name": "Weather API!", "api_name": "Current Weather",
         "arguments": {"city": "Paris", "units": "metric"}, "response": {"temp": 21}},
        {"category": "Weather", "tool_name": "Weather API!", "api_name": "Current Weather",
         "arguments": {"city": "Oslo"}, "response": {"temp": 3}},
        {"category": "Weather", "tool_name": "Weather API!", "api_name": "Current Weather",
         "arguments": {"city": "paris"}, "response": {"temp": 99}},
    ]
    (tmp_path / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def obs(text):
    data = json.loads(text)
    assert set(data) == {"error", "response"}
    return data


def test_offline_matching_levels(toolenv):
    env = tools.OfflineToolEnv(toolenv / "responses.jsonl", toolenv / "tools")
    # 1. exact canonical JSON, names given the way the query writes them
    assert obs(env.call("Weather", "Weather API!", "Current Weather", {"units": "metric", "city": "Paris"}))["response"] == "{'temp': 21}"
    # exact beats loose: {"city": "paris"} has its own recording
    assert obs(env.call("weather", "weather_api", "current_weather", {"city": "paris"}))["response"] == "{'temp': 99}"
    # 2. loose: case and whitespace in values, empty values dropped
    assert obs(env.call("Weather", "Weather API!", "Current Weather", {"city": " OSLO", "units": ""}))["response"] == "{'temp': 3}"
    # 3. required parameters only (units differs)
    assert obs(env.call("Weather", "Weather API!", "Current Weather", {"city": "Oslo", "units": "imperial"}))["response"] == "{'temp': 3}"
    miss = obs(env.call("Weather", "Weather API!", "Current Weather", {"city": "Rome"}))
    assert miss["response"] == "" and "No recorded response" in miss["error"] and "Rome" in miss["error"]
    assert "No recorded response" in obs(env.call("Weather", "Weather API!", "Report", {}))["error"]


def test_offline_without_docs_has_no_required_level(toolenv):
    env = tools.OfflineToolEnv(toolenv / "responses.jsonl")
    assert obs(env.call("Weather", "Weather API!", "Current Weather", {"city": "Oslo", "units": "x"}))["error"]


def test_offline_bad_record_names_line(tmp_path):
    (tmp_path / "r.jsonl").write_text('{"category": "a", "tool_name": "b", "api_name": "c", "arguments": {}, "response": 1}\n'
                                      '{"category": "a", "tool_name": "b", "api_name": "c", "response": 1}\n')
    with pytest.raises(ValueError, match="line 2: missing field 'arguments'"):
        tools.OfflineToolEnv(tmp_path / "r.jsonl")


def _virtual(path, headers, body):
    if body["api_name"] == "boom":
        return 500, {"error": "boom"}
    return 200, {"error": "", "response": {"echo": json.loads(body["tool_input"])}}


@pytest.fixture
def server():
    with LoopbackServer(_virtual) as server:
        yield server


def test_virtual_server_over_http(server):
    env = tools.VirtualToolEnv(server.url + "/virtual", toolbench_key="tb-key")
    out = obs(env.call("Weather", "Weather API!", "Current Weather", {"city": "Paris"}))
    assert out == {"error": "", "response": {"echo": {"city": "Paris"}}}
    path, _, body = server.requests[0]
    assert path == "/virtual"
    assert body == {"category": "Weather", "tool_name": "weather_api", "api_name": "current_weather",
                    "tool_input": '{"city": "Paris"}', "strip": "truncate", "toolbench_key": "tb-key"}
    assert "HTTP 500" in obs(env.call("Weather", "Weather API!", "boom", {}))["error"]
    dead = tools.VirtualToolEnv("http://127.0.0.1:9/virtual", timeout=2)
    assert "unreachable" in obs(dead.call("a", "b", "c", {}))["error"]


def test_rapidapi_request_is_built_from_the_docs(toolenv):
    env = tools.RapidApiToolEnv(toolenv / "tools", rapidapi_key="secret-key")
    get = env.build_request("Weather API!", "Current Weather", {"city": "São Paulo", "units": "metric"})
    assert get["method"] == "GET" and get["body"] is None
    assert get["url"] == "https://weather-api.p.rapidapi.com/current/S%C3%A3o%20Paulo?units=metric"
    assert get["headers"] == {"X-RapidAPI-Key": "secret-key", "X-RapidAPI-Host": "weather-api.p.rapidapi.com"}
    post = env.build_request("weather_api", "report", {"text_body": "hi"})
    assert post["method"] == "POST" and json.loads(post["body"]) == {"Text Body": "hi"}
    assert "no documentation" in obs(env.call("Weather", "Weather API!", "Nope", {}))["error"]


def test_secret_comes_from_env(monkeypatch):
    monkeypatch.setenv("MY_TEST_KEY", "k")
    assert tools.secret("MY_TEST_KEY") == "k"
    monkeypatch.delenv("MY_TEST_KEY")
    with pytest.raises(RuntimeError, match="MY_TEST_KEY"):
        tools.secret("MY_TEST_KEY")
    assert tools.secret("MY_TEST_KEY", required=False) == ""


def test_offline_observations_are_what_the_training_conversations_hold(tmp_path):
    """At inference the model must meet the observations it was trained on: for every call in the
    sample's training conversations, the offline environment answers with the very same text."""
    from lib import agent, sample
    sample.generate(tmp_path, seed=3, train_queries=12, queries_per_group=1)
    env = tools.OfflineToolEnv(tmp_path / "toolenv" / "responses.jsonl", tmp_path / "toolenv" / "tools")
    records = json.loads((tmp_path / "train" / "toolllama_G123_dfs_train.json").read_text())
    compared = 0
    for record in records:
        turns = record["conversations"]
        for call, result in zip(turns, turns[1:]):
            if call["from"] == "assistant" and result["from"] == "function" and not json.loads(result["value"])["error"]:
                _, action, action_input, error = agent.parse_step(call["value"])
                assert error is None
                category, tool, api_name = _api_of(action, tmp_path / "toolenv" / "tools")
                assert env.call(category, tool, api_name, json.loads(action_input)) == result["value"]
                compared += 1
    assert compared > 10


def _api_of(function: str, tools_dir):
    """(category, tool name, api name) of a function name <api>_for_<tool>, from the tool documents."""
    from lib import agent
    for doc in tools.load_tool_docs(tools_dir).values():
        for api in doc["api_list"]:
            if agent.api_function_name(api["name"], doc["tool_name"]) == function:
                return doc["category"], doc["tool_name"], api["name"]
    raise AssertionError(function)
