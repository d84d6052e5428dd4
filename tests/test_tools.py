"""lib.toolbench's tool environments (tool_env, offline_env, http_client, virtual_env, rapidapi_env,
environments) and their observations: offline recorded responses, the virtual API server over HTTP,
RapidAPI requests."""
import json

import pytest

from conftest import TOOLBENCH_SAMPLE as SAMPLES, LoopbackServer
from lib.toolbench import (apis, environments, http_client, observations, offline_env, rapidapi_env,
                            virtual_env)

needs_samples = pytest.mark.skipif(not SAMPLES.exists(), reason="../shared/toolbench-sample/ not present")


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
    env = offline_env.OfflineToolEnv(toolenv / "responses.jsonl", toolenv / "tools")
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
    env = offline_env.OfflineToolEnv(toolenv / "responses.jsonl")
    assert obs(env.call("Weather", "Weather API!", "Current Weather", {"city": "Oslo", "units": "x"}))["error"]


def test_offline_bad_record_names_line(tmp_path):
    (tmp_path / "r.jsonl").write_text('{"category": "a", "tool_name": "b", "api_name": "c", "arguments": {}, "response": 1}\n'
                                      '{"category": "a", "tool_name": "b", "api_name": "c", "response": 1}\n')
    with pytest.raises(ValueError, match="line 2: missing field 'arguments'"):
        offline_env.OfflineToolEnv(tmp_path / "r.jsonl")


def _virtual(path, headers, body):
    if body["api_name"] == "boom":
        return 500, {"error": "boom"}
    return 200, {"error": "", "response": {"echo": json.loads(body["tool_input"])}}


@pytest.fixture
def server():
    with LoopbackServer(_virtual) as server:
        yield server


def test_virtual_server_over_http(server):
    env = virtual_env.VirtualToolEnv(server.url + "/virtual", toolbench_key="tb-key")
    out = obs(env.call("Weather", "Weather API!", "Current Weather", {"city": "Paris"}))
    assert out == {"error": "", "response": {"echo": {"city": "Paris"}}}
    path, _, body = server.requests[0]
    assert path == "/virtual"
    assert body == {"category": "Weather", "tool_name": "weather_api", "api_name": "current_weather",
                    "tool_input": '{"city": "Paris"}', "strip": "truncate", "toolbench_key": "tb-key"}
    assert obs(env.call("Weather", "Weather API!", "boom", {}))["error"] == "request invalid, data error. status_code=500"
    dead = virtual_env.VirtualToolEnv("http://127.0.0.1:9/virtual", timeout=2)
    assert "unreachable" in obs(dead.call("a", "b", "c", {}))["error"]


def test_rapidapi_request_is_built_from_the_docs(toolenv):
    env = rapidapi_env.RapidApiToolEnv(toolenv / "tools", rapidapi_key="secret-key")
    get = env.build_request("Weather API!", "Current Weather", {"city": "São Paulo", "units": "metric"})
    assert get["method"] == "GET" and get["body"] is None
    assert get["url"] == "https://weather-api.p.rapidapi.com/current/S%C3%A3o%20Paulo?units=metric"
    assert get["headers"] == {"X-RapidAPI-Key": "secret-key", "X-RapidAPI-Host": "weather-api.p.rapidapi.com"}
    post = env.build_request("weather_api", "report", {"text_body": "hi"})
    assert post["method"] == "POST" and json.loads(post["body"]) == {"Text Body": "hi"}
    assert "no documentation" in obs(env.call("Weather", "Weather API!", "Nope", {}))["error"]


def test_secret_comes_from_env(monkeypatch):
    from lib.common import keys
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
    from lib.toolbench import formats, sample
    sample.generate(tmp_path, seed=3, train_queries=12, queries_per_group=1)
    env = offline_env.OfflineToolEnv(tmp_path / "toolenv" / "responses.jsonl", tmp_path / "toolenv" / "tools")
    records = json.loads((tmp_path / "train" / "toolllama_G123_dfs_train.json").read_text())
    compared = 0
    for record in records:
        turns = record["conversations"]
        for call, result in zip(turns, turns[1:]):
            if call["from"] == "assistant" and result["from"] == "function" and not json.loads(result["value"])["error"]:
                _, action, action_input, error = formats.parse_step(call["value"])
                assert error is None
                category, tool, api_name = _api_of(action, tmp_path / "toolenv" / "tools")
                assert env.call(category, tool, api_name, json.loads(action_input)) == result["value"]
                compared += 1
    assert compared > 10


def _api_of(function: str, tools_dir):
    """(category, tool name, api name) of a function name <api>_for_<tool>, from the tool documents."""
    from lib.toolbench import formats
    for doc in apis.load_tool_docs(tools_dir).values():
        for api in doc["api_list"]:
            if formats.api_function_name(api["name"], doc["tool_name"]) == function:
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
        env = virtual_env.VirtualToolEnv(server.url + "/virtual", retries=0)
        env.call("Data", "t", "fine", {})
        assert env.last_outcome == "ok"
        assert "parse error" in obs(env.call("Data", "t", "bad_input", {}))["error"]
        assert env.last_outcome == "api_error"
        assert env.call("Data", "t", "crash", {}) == \
            '{"error": "request invalid, data error. status_code=500", "response": ""}'
        assert env.last_outcome == "transport_error" and env.last_problem == "virtual API server answered HTTP 500"
        # any HTTP error from the virtual server is transport: a wrong url path never reaches an API
        wrong = virtual_env.VirtualToolEnv(server.url + "/wrong")
        assert obs(wrong.call("Data", "t", "fine", {}))["error"] == "request invalid, data error. status_code=404"
        assert wrong.last_outcome == "transport_error"
        env.call("Data", "t", "fine", {})
        assert env.last_problem is None
    dead = virtual_env.VirtualToolEnv("http://127.0.0.1:9/virtual", timeout=2)
    assert "unreachable (ConnectError" in obs(dead.call("a", "b", "c", {}))["error"]
    assert dead.last_outcome == "transport_error"


def test_virtual_time_out_is_the_setting_and_a_transport_error():
    import time
    with LoopbackServer(lambda *_: (time.sleep(1.0), (200, {"error": "", "response": "late"}))[1]) as server:
        env = virtual_env.VirtualToolEnv(server.url + "/virtual", timeout=0.3)
        # StableToolBench's client on requests' Timeout: {"error": "Timeout error...", "response": ""}
        assert env.call("a", "b", "c", {}) == '{"error": "Timeout error...", "response": ""}'
    assert env.last_outcome == "transport_error"
    assert env.last_problem == "virtual API server gave no answer within 0.3 s"


def test_retry_wait_honours_retry_after_seconds_and_caps_it():
    assert http_client.retry_wait("7", 0) == 7.0
    assert http_client.retry_wait("3600", 0) == http_client.MAX_RETRY_AFTER_S == 60.0
    assert [http_client.retry_wait(None, n) for n in range(3)] == [1.0, 2.0, 4.0]
    assert http_client.retry_wait("Wed, 21 Oct 2015 07:28:00 GMT", 1) == 2.0     # the date form: backoff


def test_http_429_is_retried_as_retry_after_asks():
    replies = iter([(429, {"error": "slow down"}, {"Retry-After": "7"}),
                    (503, {"error": "busy"}, {"Retry-After": "3600"}),
                    (200, {"error": "", "response": "at last"})])
    waits = []
    with LoopbackServer(lambda *_: next(replies)) as server:
        env = virtual_env.VirtualToolEnv(server.url + "/virtual", sleep=waits.append)
        assert obs(env.call("a", "b", "c", {}))["response"] == "at last"
        assert waits == [7.0, 60.0] and env.last_outcome == "ok" and len(server.requests) == 3
    waits.clear()
    with LoopbackServer(lambda *_: (429, {"error": "quota"})) as server:
        env = virtual_env.VirtualToolEnv(server.url + "/virtual", sleep=waits.append)
        assert obs(env.call("a", "b", "c", {}))["error"] == "request invalid, data error. status_code=429"
        assert env.last_problem == "virtual API server answered HTTP 429"
        # no Retry-After: 1, 2, 4 s, then the call counts as failed in transport
        assert waits == [1.0, 2.0, 4.0] and len(server.requests) == 1 + http_client.RETRIES
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
        env = rapidapi_env.RapidApiToolEnv(_local_rapidapi(tmp_path, server.url), "k", sleep=waits.append)
        for code, outcome in ((404, "api_error"), (403, "api_error"), (500, "transport_error"),
                              (429, "transport_error")):
            status["code"] = code
            # ToolBench's api.py keeps the body whatever the status: it is the observation
            assert env.call("Weather", "W", "Now", {}) == '{"error": "", "response": "{\'message\': \'x\'}"}'
            assert env.last_outcome == outcome, code
            assert (env.last_problem == f"RapidAPI answered HTTP {code}") == (outcome == "transport_error")
        status["code"] = 200
        env.call("Weather", "W", "Now", {})
        assert env.last_outcome == "ok" and len(waits) == http_client.RETRIES      # only the 429 waited
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
        env = rapidapi_env.RapidApiToolEnv(tmp_path / "tools", "secret-key")
        out = obs(env.call("W", "W", "Now", {"city": "São Paulo", "max_days": "2 or 3"}))
        assert out["response"] == str({"path": "/now/S%C3%A3o%20Paulo?Max+Days=2+or+3", "body": None})
        assert env.last_outcome == "ok"
        _, headers, _ = server.requests[0]
        assert headers["X-RapidAPI-Key"] == "secret-key" and headers["X-RapidAPI-Host"] == server.url[7:]
        assert headers.get("Content-Type") is None
        out = obs(env.call("W", "W", "Post", {"text_body": "hi"}))
        assert out["response"] == str({"path": "/post", "body": {"Text Body": "hi"}})
        assert server.requests[1][1]["Content-Type"] == "application/json"
        env.close()


def test_check_env_probes_each_kind(tmp_path, toolenv):
    with LoopbackServer(_stable) as server:
        ok = virtual_env.VirtualToolEnv(server.url + "/virtual")
        assert "answered a call of Weather API!/Current Weather" in \
            environments.check_env(ok, ("Weather", "Weather API!", "Current Weather"))
        assert server.requests[-1][2]["api_name"] == "current_weather"
        # the server is up but this call failed: a warning, not a stop
        status, detail = ok.probe("Data", "t", "crash")
        assert status == "warn" and "HTTP 500" in detail
        with pytest.raises(environments.EnvUnavailable, match="HTTP 404.*inference.virtual_server_url"):
            environments.check_env(virtual_env.VirtualToolEnv(server.url + "/not-virtual"))
    with pytest.raises(environments.EnvUnavailable) as err:
        environments.check_env(virtual_env.VirtualToolEnv("http://127.0.0.1:9/virtual", timeout=2))
    assert "http://127.0.0.1:9/virtual" in str(err.value) and "inference.virtual_server_url" in str(err.value)
    assert "start StableToolBench's server" in str(err.value)
    assert "3 recorded responses of 1 APIs" in environments.check_env(
        offline_env.OfflineToolEnv(toolenv / "responses.jsonl", toolenv / "tools"))
    with LoopbackServer(_stable) as server:
        docs = _local_rapidapi(tmp_path / "r", server.url)
        assert "accepts connections" in environments.check_env(rapidapi_env.RapidApiToolEnv(docs, "k"), ("Weather", "W", "Now"))
        assert server.requests == []          # a TCP connect only: no call spends quota
        with pytest.raises(environments.EnvUnavailable, match="rapidapi_key_env"):
            environments.check_env(rapidapi_env.RapidApiToolEnv(docs, ""))
    with pytest.raises(environments.EnvUnavailable, match="127.0.0.1:9 unreachable"):
        environments.check_env(rapidapi_env.RapidApiToolEnv(_local_rapidapi(tmp_path / "d", "http://127.0.0.1:9"), "k"))


def test_make_env_takes_the_tool_timeout_from_the_config(monkeypatch):
    from lib.common import config
    cfg = config.load("smoke", {"inference.tool_env": "virtual", "inference.tool_timeout_s": 7})
    assert environments.make_env(cfg).timeout == 7
    monkeypatch.setenv("RAPIDAPI_KEY", "k")
    cfg = config.load("smoke", {"inference.tool_env": "rapidapi", "inference.tool_timeout_s": 12.5})
    assert environments.make_env(cfg).timeout == 12.5
    with pytest.raises(config.ConfigError, match="tool_timeout_s"):
        config.load("smoke", {"inference.tool_timeout_s": 0})


# ---------------------------------------------------------------------------------------------
# Observations byte for byte as ToolBench's client writes them (rapidapi.py, rapidapi_wrapper._step:
# json.dumps(<the server's JSON reply>)), and as ToolBench's RapidAPI route (server.py) makes them.
# ---------------------------------------------------------------------------------------------

# A reply as a server may send it: compact separators, raw UTF-8, "response" before "error", keys
# that sorting would reorder, nested objects and lists, a character outside the BMP.
RAW_REPLY = ('{"response":{"zeta":"Zürich – 18 °C 🙂","alpha":{"y":[1,2.5,null,true],'
             '"b":"é \\"q\\"\\n"}},"error":""}').encode("utf-8")
RAW_REPLY_OBSERVATION = ('{"response": {"zeta": "Z\\u00fcrich \\u2013 18 \\u00b0C \\ud83d\\ude42", '
                         '"alpha": {"y": [1, 2.5, null, true], "b": "\\u00e9 \\"q\\"\\n"}}, "error": ""}')


def test_virtual_observation_is_the_clients_json_dumps_byte_for_byte():
    replies = {"weather": (200, RAW_REPLY),
               "bad_input": (200, '{"error": "Tool input parse error...\\n", "response": ""}'.encode()),
               "html": (200, b"<html>proxy page</html>"),
               "no_error_field": (200, b'{"response": "x"}'),
               "a_list": (200, b'[1, 2]')}
    with LoopbackServer(lambda path, headers, body: replies[body["api_name"]]) as server:
        env = virtual_env.VirtualToolEnv(server.url + "/virtual", toolbench_key="tb", retries=0)
        text = env.call("Weather", "Weather", "weather", {"city": "Zürich"})
        assert text == RAW_REPLY_OBSERVATION and env.last_outcome == "ok"
        assert text.isascii() and text == json.dumps(json.loads(RAW_REPLY))
        assert server.requests[0][1]["toolbench_key"] == "tb"         # the header upstream sends too
        assert env.call("Data", "t", "bad_input", {}) == '{"error": "Tool input parse error...\\n", "response": ""}'
        assert env.last_outcome == "api_error" and env.last_problem is None
        # a body the client cannot use: rapidapi.py's "request invalid, data error" (code 12)
        for api in ("html", "no_error_field", "a_list"):
            assert env.call("Data", "t", api, {}) == '{"error": "request invalid, data error", "response": ""}', api
            assert env.last_outcome == "transport_error" and "virtual API server answered" in env.last_problem


def test_rapidapi_observation_is_toolbench_servers_byte_for_byte(tmp_path):
    replies = {"/now": (200, '{"zeta":"São","alpha":{"b":[1,2.5,null,true]}}'.encode("utf-8"))}
    with LoopbackServer(lambda path, headers, body: replies[path.partition("?")[0]]) as server:
        env = rapidapi_env.RapidApiToolEnv(_local_rapidapi(tmp_path, server.url), "k", retries=0)
        # api.py keeps response.json(); server.py writes str() of it; the client json.dumps the dict
        assert env.call("Weather", "W", "Now", {}) == \
            '{"error": "", "response": "{\'zeta\': \'S\\u00e3o\', \'alpha\': {\'b\': [1, 2.5, None, True]}}"}'
        assert env.last_outcome == "ok"
        replies["/now"] = (403, b'{"message": "You are not subscribed to this API."}')
        assert env.call("Weather", "W", "Now", {}) == \
            '{"error": "Unsubscribed error...", "response": "{\'message\': \'You are not subscribed to this API.\'}"}'
        assert env.last_outcome == "api_error"
        replies["/now"] = (200, b"plain text, an error somewhere")               # not JSON: response.text
        assert env.call("Weather", "W", "Now", {}) == \
            '{"error": "Message error...", "response": "plain text, an error somewhere"}'
        assert env.last_outcome == "api_error"
        replies["/now"] = (200, json.dumps({"items": ["x" * 10] * 400}).encode())
        out = json.loads(env.call("Weather", "W", "Now", {}))
        assert len(out["response"]) == 2048 and out["response"] == str({"items": ["x" * 10] * 400})[:2048]
    dead = rapidapi_env.RapidApiToolEnv(_local_rapidapi(tmp_path / "d", "http://127.0.0.1:9"), "k", timeout=2)
    error = obs(dead.call("Weather Data, Inc", "W", "Now", {}))["error"]
    assert error.startswith("Function executing from data.toolenv.tools.Weather_Data_Inc.w.api import now error...\n"
                            "RapidAPI unreachable (ConnectError")
    assert dead.last_outcome == "transport_error"


def test_rapidapi_error_labels_follow_toolbench_process_error():
    label = observations.rapidapi_error_label
    assert label({"message": "Your Client (working) ---> Gateway (working) ---> API (not working)"}) == \
        "API not working error..."
    assert label("401 Unauthorized") == label("unauthorized") == "Unauthorized error..."
    assert label("Too many requests") == "Too many requests error..."
    assert label("You have exceeded the MONTHLY quota") == "Rate limit error..."
    assert label("Blocked User. Please contact your API provider.") == "Blocked error..."
    # the time-out test in process_error never decides (an `if`, then an if/elif/else chain)
    assert label("The request to the API has timed out. Please try again later, or if the issue persists") == ""
    assert label({"errors": []}) == "Message error..." and label({"temp": 3}) == ""


@needs_samples
def test_released_answers_hold_observations_in_the_clients_form():
    """Every whole function message of ToolBench's and StableToolBench's answer files is what
    client_observation writes for the JSON it holds (ASCII escapes, separators, key order); the cut
    ones are 1024 characters and "..." (rapidapi_wrapper.step, max_observation_length 1024)."""
    import glob
    seen = {"whole": 0, "cut": 0, "object_response": 0, "escapes": 0}
    for path in glob.glob(str(SAMPLES / "data_example" / "answer" / "*" / "*.json")) + \
            glob.glob(str(SAMPLES / "stabletoolbench" / "data_example" / "answer" / "*" / "*" / "*.json")):
        generation = json.loads(open(path, encoding="utf-8").read())["answer_generation"]
        for message in (m for chain in generation.get("train_messages", []) for m in chain):
            if message["role"] != "function":
                continue
            text = message["content"]
            try:
                reply = json.loads(text)
            except json.JSONDecodeError:
                assert len(text) == 1027 and text.endswith("..."), path
                seen["cut"] += 1
                continue
            assert observations.client_observation(reply) == text, path
            seen["whole"] += 1
            seen["object_response"] += isinstance(reply.get("response"), (dict, list))
            seen["escapes"] += "\\u" in text
    assert seen["whole"] > 50 and seen["cut"] > 10 and seen["object_response"] > 5 and seen["escapes"] >= 3, seen


def test_one_rule_says_whether_an_observation_reports_an_error():
    failed = observations.reports_error
    assert failed('{"error": "Unauthorized error...", "response": ""}') and failed('{"error": 1}')
    for fine in ('{"error": "", "response": "ok"}', '{"error": "  ", "response": ""}', '{"error": null}',
                 '{"response": "x"}', '["error"]', "not json", "", None):
        assert not failed(fine), fine
