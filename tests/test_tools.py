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
    from lib import keys
    monkeypatch.setenv("MY_TEST_KEY", "k")
    assert keys.secret("MY_TEST_KEY") == "k" and keys.is_set("MY_TEST_KEY")
    assert keys.endpoint_key("MY_TEST_KEY", None, "x") == "k"
    monkeypatch.delenv("MY_TEST_KEY")
    with pytest.raises(keys.MissingKey, match="MY_TEST_KEY"):
        keys.secret("MY_TEST_KEY")
    assert keys.secret("MY_TEST_KEY", required=False) == "" and not keys.is_set("MY_TEST_KEY")
    with pytest.raises(keys.MissingKey, match="needs it but the environment variable 'MY_TEST_KEY'"):
        keys.endpoint_key("MY_TEST_KEY", "https://api.openai.com/v1", "needs it")
    assert keys.endpoint_key("MY_TEST_KEY", "http://127.0.0.1:8000/v1", "x") == "not-needed"


def test_offline_observations_are_what_the_training_conversations_hold(tmp_path):
    """At inference the model must meet the observations it was trained on: for every call in the
    sample's training conversations, the offline environment answers with the very same text."""
    from lib import sample, toolbench
    sample.generate(tmp_path, seed=3, train_queries=12, queries_per_group=1)
    env = tools.OfflineToolEnv(tmp_path / "toolenv" / "responses.jsonl", tmp_path / "toolenv" / "tools")
    records = json.loads((tmp_path / "train" / "toolllama_G123_dfs_train.json").read_text())
    compared = 0
    for record in records:
        turns = record["conversations"]
        for call, result in zip(turns, turns[1:]):
            if call["from"] == "assistant" and result["from"] == "function" and not json.loads(result["value"])["error"]:
                _, action, action_input, error = toolbench.parse_step(call["value"])
                assert error is None
                category, tool, api_name = _api_of(action, tmp_path / "toolenv" / "tools")
                assert env.call(category, tool, api_name, json.loads(action_input)) == result["value"]
                compared += 1
    assert compared > 10


def _api_of(function: str, tools_dir):
    """(category, tool name, api name) of a function name <api>_for_<tool>, from the tool documents."""
    from lib import toolbench
    for doc in tools.load_tool_docs(tools_dir).values():
        for api in doc["api_list"]:
            if toolbench.api_function_name(api["name"], doc["tool_name"]) == function:
                return doc["category"], doc["tool_name"], api["name"]
    raise AssertionError(function)


# ---------------------------------------------------------------------------------------------
# Outcomes (API error vs transport error), Retry-After, the environment check.
# ---------------------------------------------------------------------------------------------

def _stable(path, headers, body):
    """StableToolBench's answers: API errors as HTTP 200 with an error field, its failures as 5xx."""
    if path != "/virtual":
        return 404, {"detail": "Not Found"}
    api = body["api_name"]
    if api == "bad_input":
        return 200, {"error": "Tool input parse error...\n", "response": ""}
    if api == "crash":
        return 500, {"detail": "Internal Server Error"}
    return 200, {"error": "", "response": "ok"}


def test_virtual_outcomes_tell_transport_errors_from_api_errors():
    with LoopbackServer(_stable) as server:
        env = tools.VirtualToolEnv(server.url + "/virtual", retries=0)
        env.call("Data", "t", "fine", {})
        assert env.last_outcome == "ok"
        assert "parse error" in obs(env.call("Data", "t", "bad_input", {}))["error"]
        assert env.last_outcome == "api_error"
        assert "HTTP 500" in obs(env.call("Data", "t", "crash", {}))["error"]
        assert env.last_outcome == "transport_error"
        # any HTTP error from the virtual server is transport: a wrong url path never reaches an API
        wrong = tools.VirtualToolEnv(server.url + "/wrong")
        assert "HTTP 404" in obs(wrong.call("Data", "t", "fine", {}))["error"]
        assert wrong.last_outcome == "transport_error"
    dead = tools.VirtualToolEnv("http://127.0.0.1:9/virtual", timeout=2)
    assert "unreachable (ConnectError" in obs(dead.call("a", "b", "c", {}))["error"]
    assert dead.last_outcome == "transport_error"


def test_virtual_time_out_is_the_setting_and_a_transport_error():
    import time
    with LoopbackServer(lambda *_: (time.sleep(1.0), (200, {"error": "", "response": "late"}))[1]) as server:
        env = tools.VirtualToolEnv(server.url + "/virtual", timeout=0.3)
        assert obs(env.call("a", "b", "c", {}))["error"] == "virtual API server gave no answer within 0.3 s"
    assert env.last_outcome == "transport_error"


def test_retry_wait_honours_retry_after_seconds_and_caps_it():
    assert tools.retry_wait("7", 0) == 7.0
    assert tools.retry_wait("3600", 0) == tools.MAX_RETRY_AFTER_S == 60.0
    assert [tools.retry_wait(None, n) for n in range(3)] == [1.0, 2.0, 4.0]
    assert tools.retry_wait("Wed, 21 Oct 2015 07:28:00 GMT", 1) == 2.0     # the date form: backoff


def test_http_429_is_retried_as_retry_after_asks():
    replies = iter([(429, {"error": "slow down"}, {"Retry-After": "7"}),
                    (503, {"error": "busy"}, {"Retry-After": "3600"}),
                    (200, {"error": "", "response": "at last"})])
    waits = []
    with LoopbackServer(lambda *_: next(replies)) as server:
        env = tools.VirtualToolEnv(server.url + "/virtual", sleep=waits.append)
        assert obs(env.call("a", "b", "c", {}))["response"] == "at last"
        assert waits == [7.0, 60.0] and env.last_outcome == "ok" and len(server.requests) == 3
    waits.clear()
    with LoopbackServer(lambda *_: (429, {"error": "quota"})) as server:
        env = tools.VirtualToolEnv(server.url + "/virtual", sleep=waits.append)
        assert obs(env.call("a", "b", "c", {}))["error"] == "virtual API server answered HTTP 429"
        # no Retry-After: 1, 2, 4 s, then the call counts as failed in transport
        assert waits == [1.0, 2.0, 4.0] and len(server.requests) == 1 + tools.RETRIES
    assert env.last_outcome == "transport_error"


def _local_rapidapi(tmp_path, url):
    (tmp_path / "tools" / "Weather").mkdir(parents=True)
    (tmp_path / "tools" / "Weather" / "w.json").write_text(json.dumps({"tool_name": "W", "api_list": [
        {"name": "Now", "url": url + "/now", "method": "GET", "required_parameters": [], "optional_parameters": []}]}))
    return tmp_path / "tools"


def test_rapidapi_4xx_is_an_api_error_5xx_and_429_transport(tmp_path):
    status = {"code": 404}
    waits = []
    with LoopbackServer(lambda *_: (status["code"], {"message": "x"})) as server:
        env = tools.RapidApiToolEnv(_local_rapidapi(tmp_path, server.url), "k", sleep=waits.append)
        for code, outcome in ((404, "api_error"), (403, "api_error"), (500, "transport_error"),
                              (429, "transport_error")):
            status["code"] = code
            assert f"HTTP {code}" in obs(env.call("Weather", "W", "Now", {}))["error"]
            assert env.last_outcome == outcome, code
        status["code"] = 200
        env.call("Weather", "W", "Now", {})
        assert env.last_outcome == "ok" and len(waits) == tools.RETRIES      # only the 429 waited
        env.call("Weather", "W", "Nope", {})
        assert env.last_outcome == "api_error"                              # not documented


def test_rapidapi_call_sends_what_build_request_built(tmp_path):
    (tmp_path / "tools" / "W").mkdir(parents=True)
    with LoopbackServer(lambda path, headers, body: (200, {"path": path, "body": body})) as server:
        (tmp_path / "tools" / "W" / "w.json").write_text(json.dumps({"tool_name": "W", "api_list": [
            {"name": "Now", "url": server.url + "/now/{city}", "method": "GET",
             "required_parameters": [{"name": "city"}], "optional_parameters": [{"name": "Max Days"}]},
            {"name": "Post", "url": server.url + "/post", "method": "POST", "required_parameters": [],
             "optional_parameters": [{"name": "Text Body"}]}]}))
        env = tools.RapidApiToolEnv(tmp_path / "tools", "secret-key")
        out = obs(env.call("W", "W", "Now", {"city": "São Paulo", "max_days": "2 or 3"}))
        assert out["response"] == {"path": "/now/S%C3%A3o%20Paulo?Max+Days=2+or+3", "body": None}
        assert env.last_outcome == "ok"
        _, headers, _ = server.requests[0]
        assert headers["X-RapidAPI-Key"] == "secret-key" and headers["X-RapidAPI-Host"] == server.url[7:]
        assert headers.get("Content-Type") is None
        out = obs(env.call("W", "W", "Post", {"text_body": "hi"}))
        assert out["response"] == {"path": "/post", "body": {"Text Body": "hi"}}
        assert server.requests[1][1]["Content-Type"] == "application/json"
        env.close()


def test_check_env_probes_each_kind(tmp_path, toolenv):
    with LoopbackServer(_stable) as server:
        ok = tools.VirtualToolEnv(server.url + "/virtual")
        assert "answered a call of Weather API!/Current Weather" in \
            tools.check_env(ok, ("Weather", "Weather API!", "Current Weather"))
        assert server.requests[-1][2]["api_name"] == "current_weather"
        # the server is up but this call failed: a warning, not a stop
        status, detail = ok.probe("Data", "t", "crash")
        assert status == "warn" and "HTTP 500" in detail
        with pytest.raises(tools.EnvUnavailable, match="HTTP 404.*inference.virtual_server_url"):
            tools.check_env(tools.VirtualToolEnv(server.url + "/not-virtual"))
    with pytest.raises(tools.EnvUnavailable) as err:
        tools.check_env(tools.VirtualToolEnv("http://127.0.0.1:9/virtual", timeout=2))
    assert "http://127.0.0.1:9/virtual" in str(err.value) and "inference.virtual_server_url" in str(err.value)
    assert "start StableToolBench's server" in str(err.value)
    assert "3 recorded responses of 1 APIs" in tools.check_env(
        tools.OfflineToolEnv(toolenv / "responses.jsonl", toolenv / "tools"))
    with LoopbackServer(_stable) as server:
        docs = _local_rapidapi(tmp_path / "r", server.url)
        assert "accepts connections" in tools.check_env(tools.RapidApiToolEnv(docs, "k"), ("Weather", "W", "Now"))
        assert server.requests == []          # a TCP connect only: no call spends quota
        with pytest.raises(tools.EnvUnavailable, match="rapidapi_key_env"):
            tools.check_env(tools.RapidApiToolEnv(docs, ""))
    with pytest.raises(tools.EnvUnavailable, match="127.0.0.1:9 unreachable"):
        tools.check_env(tools.RapidApiToolEnv(_local_rapidapi(tmp_path / "d", "http://127.0.0.1:9"), "k"))


def test_make_env_takes_the_tool_timeout_from_the_config(monkeypatch):
    from lib import config
    cfg = config.load("smoke", {"inference.tool_env": "virtual", "inference.tool_timeout_s": 7})
    assert tools.make_env(cfg).timeout == 7
    monkeypatch.setenv("RAPIDAPI_KEY", "k")
    cfg = config.load("smoke", {"inference.tool_env": "rapidapi", "inference.tool_timeout_s": 12.5})
    assert tools.make_env(cfg).timeout == 12.5
    with pytest.raises(config.ConfigError, match="tool_timeout_s"):
        config.load("smoke", {"inference.tool_timeout_s": 0})
