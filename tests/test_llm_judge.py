"""lib/judge/llm_judge.py: the LLM judge's cache, retries (429 / 5xx / time-outs / Retry-After, done by the
openai client), malformed responses and replies, and its key; ToolEval's evaluator folder asked with
its function call; the model id served; the call budget and the estimate before judging. Against
scripted OpenAI-compatible servers on 127.0.0.1 (real HTTP through the openai client)."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from lib.common import store
from lib.toolbench import tooleval, tooleval_evaluator
from lib.judge import judge, llm_judge

from conftest import LoopbackServer
from judge_helpers import GOOD, llm_cfg, make_cfg, traj
from test_tooleval_evaluator import DESCRIPTIONS, write_evaluator


# ------------------------------------------------------------------------------------------------
# The cache
# ------------------------------------------------------------------------------------------------
def test_cache_key_separates_model_messages_params_index_and_attempt():
    msgs, params = [{"role": "user", "content": "q"}], {"temperature": 0.2, "seed": 1}
    key = llm_judge.request_key("m", msgs, params, 0, 0)
    assert key == llm_judge.request_key("m", [dict(m) for m in msgs], dict(params), 0, 0)
    others = [llm_judge.request_key("m2", msgs, params, 0, 0),
              llm_judge.request_key("m", [{"role": "user", "content": "q2"}], params, 0, 0),
              llm_judge.request_key("m", msgs, {"temperature": 0.3, "seed": 1}, 0, 0),
              llm_judge.request_key("m", msgs, params, 1, 0), llm_judge.request_key("m", msgs, params, 0, 1)]
    assert len({key, *others}) == 6


def test_a_torn_cache_line_loses_neither_earlier_nor_later_records(tmp_path):
    """A run killed mid-write leaves a torn last line; the next put must not be glued onto it."""
    path = tmp_path / "judge_cache.jsonl"
    done = [{"key": f"k{i}", "reply": f"r{i}"} for i in range(2)]
    path.write_text("".join(json.dumps(r) + "\n" for r in done) + '{"key": "k2", "rep', encoding="utf-8")
    cache = llm_judge.JudgeCache(path)
    assert (cache.get("k0"), cache.get("k1"), cache.get("k2")) == ("r0", "r1", None)
    cache.put("k3", {"reply": "r3"})
    again = llm_judge.JudgeCache(path)
    assert [again.get(k) for k in ("k0", "k1", "k2", "k3")] == ["r0", "r1", None, "r3"]
    assert [r["key"] for r in store.read_jsonl(path)] == ["k0", "k1", "k3"]
    # A cache an older version damaged (a record glued onto a torn line, mid-file) still loads:
    # that line's requests are simply sent again.
    glued = tmp_path / "glued.jsonl"
    glued.write_text('{"key": "a", "reply": "1"}\n{"key": "b", "re{"key": "c", "reply": "3"}\n'
                     '{"key": "d", "reply": "4"}\n', encoding="utf-8")
    assert [llm_judge.JudgeCache(glued).get(k) for k in "abcd"] == ["1", None, None, "4"]


# ------------------------------------------------------------------------------------------------
# Retries and malformed responses
# ------------------------------------------------------------------------------------------------
def status(code, **headers):
    """A scripted error reply; `retry_after_ms="10"` keeps the client's wait (and the test) short."""
    return ("raw", code, {k.replace("_", "-"): v for k, v in headers.items()},
            {"error": {"message": "scripted", "type": "x"}})


def test_retries_on_timeout_429_and_5xx_then_succeed(tmp_path, server, monkeypatch):
    """The openai client retries them itself, within one call of ours: the time-out first, as its
    own backoff (no Retry-After without a response) is shortest on the first retry (<= 0.5 s)."""
    cfg = llm_cfg(tmp_path, server, [traj(1, GOOD, "SOLVED")], monkeypatch, evaluate_times=1,
                  timeout_s=0.3)
    server.script = [("sleep", 1.0), status(429, retry_after_ms="10"),
                     status(503, retry_after_ms="10")]
    t0 = time.time()
    judge.run(cfg, log=lambda *a: None)
    assert time.time() - t0 < 3
    assert len(server.requests) == 4
    assert [h["x-stainless-retry-count"] for _, h, _ in server.requests] == ["0", "1", "2", "3"]
    summary = json.loads((Path(cfg.output_dir) / "judge_summary.json").read_text())
    assert summary["requests"]["retries"] == 3 and summary["requests"]["requests"] == 4
    rec = store.read_jsonl(Path(cfg.output_dir) / "judgments" / "G1_instruction.jsonl")[0]
    assert rec["passed"] and rec["assessments"][0]["answer_status"] == "Solved"


def test_persistent_server_errors_raise_after_max_retries(tmp_path, server, monkeypatch):
    cfg = llm_cfg(tmp_path, server, [traj(1, GOOD, "SOLVED")], monkeypatch, evaluate_times=1,
                  max_retries=2)
    server.script = [status(500, retry_after_ms="10")] * 3
    with pytest.raises(llm_judge.JudgeRequestError) as err:
        judge.run(cfg, log=lambda *a: None)
    assert all(s in str(err.value) for s in (server.url, "model fake-judge", "InternalServerError",
                                             "HTTP 500", "after 3 attempts")), str(err.value)
    assert len(server.requests) == 3
    assert not (Path(cfg.output_dir) / "judgments" / "G1_instruction.jsonl").read_text()


def direct_judge(tmp_path, server, monkeypatch, **extra):
    """An LLMJudge on the fake server whose sleeps are recorded, not slept."""
    cfg = llm_cfg(tmp_path, server, [traj(1, GOOD, "SOLVED")], monkeypatch, **extra)
    slept = []
    return llm_judge.LLMJudge(cfg.judge, llm_judge.JudgeCache(tmp_path / "cache.jsonl"), sleep=slept.append), slept


def ask_solved(llm):
    return llm.ask("check_answer_status", {"query": "SOLVED", "answer": "done"}, 0)


MALFORMED = {   # what endpoints and proxies have been seen to answer with HTTP 200
    "html page": ("raw", 200, {"Content-Type": "text/html"}, b"<html>502 Bad Gateway</html>"),
    "not json": ("raw", 200, {}, b"<html>oops"),
    "empty body": ("raw", 200, {}, b""),
    "no choices": ("raw", 200, {}, {"error": {"message": "model is loading"}}),
    "empty choices": ("raw", 200, {}, {"id": "c", "object": "chat.completion", "choices": []}),
    "message null": ("raw", 200, {}, {"id": "c", "choices": [{"index": 0, "message": None}]}),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_a_malformed_response_is_retried_like_a_5xx(tmp_path, server, monkeypatch, kind):
    llm, slept = direct_judge(tmp_path, server, monkeypatch, max_retries=2, retry_backoff_s=0.5)
    server.script = [MALFORMED[kind]]
    call = ask_solved(llm)
    assert call["parsed"]["answer_status"] == "Solved" and len(server.requests) == 2
    assert slept == [0.5] and llm.counts["retries"] == llm.counts["bad_responses"] == 1


@pytest.mark.parametrize("kind, says", [("html page", "not a chat completion but a str: '<html>502"),
                                        ("not json", "body is not JSON"),
                                        ("no choices", "no choices, error: {'message': 'model is loading'}"),
                                        ("empty choices", "empty choices"),
                                        ("message null", "choices[0] has no message")])
def test_a_persistently_malformed_endpoint_is_named_after_the_last_retry(tmp_path, server, monkeypatch,
                                                                          kind, says):
    llm, slept = direct_judge(tmp_path, server, monkeypatch, max_retries=2)
    server.script = [MALFORMED[kind]] * 3
    with pytest.raises(llm_judge.JudgeRequestError) as err:
        ask_solved(llm)
    assert all(s in str(err.value) for s in (server.url, "model fake-judge", "after 3 attempts",
                                             "MalformedResponse", says)), str(err.value)
    assert len(server.requests) == 3 and len(slept) == 2
    assert not (tmp_path / "cache.jsonl").exists()                   # nothing cached for it


def test_a_429_is_retried_by_the_client_as_retry_after_asks(tmp_path, server, monkeypatch):
    llm, slept = direct_judge(tmp_path, server, monkeypatch, retry_backoff_s=30.0)
    server.script = [status(429, retry_after_ms="10")]
    t0 = time.time()
    assert ask_solved(llm)["parsed"]["answer_status"] == "Solved"
    assert time.time() - t0 < 1 and len(server.requests) == 2
    assert slept == []                                  # the client waited, not our backoff
    assert llm.counts["requests"] == 2 and llm.counts["retries"] == 1


def test_a_429_asking_for_more_than_the_client_waits_is_not_retried(tmp_path, server, monkeypatch):
    """The client retries only when Retry-After is at most 120 s; a longer one fails at once."""
    llm, slept = direct_judge(tmp_path, server, monkeypatch, max_retries=3)
    server.script = [status(429, Retry_After="86400")]
    with pytest.raises(llm_judge.JudgeRequestError) as err:
        ask_solved(llm)
    assert all(s in str(err.value) for s in (server.url, "RateLimitError", "HTTP 429",
                                             "after 1 attempt ")), str(err.value)
    assert len(server.requests) == 1 and slept == []


def test_a_client_error_is_not_retried_and_never_shows_the_key(tmp_path, server, monkeypatch):
    from judge_helpers import SECRET
    llm, slept = direct_judge(tmp_path, server, monkeypatch, max_retries=3)
    server.script = [("raw", 401, {}, {"error": {"message": f"Incorrect API key provided: {SECRET}"}})]
    with pytest.raises(llm_judge.JudgeRequestError) as err:
        ask_solved(llm)
    assert all(s in str(err.value) for s in (server.url, "model fake-judge", "AuthenticationError",
                                             "HTTP 401", "after 1 attempt ")), str(err.value)
    assert SECRET not in str(err.value) and len(server.requests) == 1 and slept == []


def test_malformed_replies_are_asked_again_then_counted_unsure(tmp_path, server, monkeypatch):
    cfg = llm_cfg(tmp_path, server, [traj(1, GOOD, "SOLVED"), traj(2, GOOD, "JUNK")], monkeypatch,
                  evaluate_times=1, malformed_retries=2)
    server.script = [("content", "{not json"), ("content", '{"answer_status": "Maybe"}')]
    judge.run(cfg, log=lambda *a: None)
    recs = {r["query_id"]: r for r in store.read_jsonl(
        Path(cfg.output_dir) / "judgments" / "G1_instruction.jsonl")}
    first = recs[1]["assessments"][0]
    assert first["answer_status"] == "Solved" and first["calls"][0]["attempts"] == 3
    junk = recs[2]["assessments"][0]
    assert junk["malformed"] and junk["answer_status"] == "Unsure" and junk["task_status"] == "Unsure"
    assert junk["label"] == "Unsure" and junk["coin"]
    # answer check (3 attempts) + whole-run check (3) + task check (3) for JUNK, 3 for SOLVED
    assert len(server.requests) == 12
    summary = json.loads((Path(cfg.output_dir) / "judge_summary.json").read_text())
    assert summary["agreement"]["overall"]["malformed_assessments"] == 1


def test_missing_key_for_openai_is_a_clear_error_without_the_value(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = make_cfg(tmp_path, {"G1_instruction": [traj(1, GOOD)]}, kind="llm",
                   base_url="https://api.openai.com/v1")
    with pytest.raises(llm_judge.JudgeRequestError, match="OPENAI_API_KEY"):
        judge.run(cfg, log=lambda *a: None)


# ------------------------------------------------------------------------------------------------
# ToolEval's own evaluator folder (judge.evaluator_dir): the function-call request and its reply
# ------------------------------------------------------------------------------------------------
def function_call_reply(model, name, arguments, as_tool_call=False):
    """A chat completion whose message calls `name` (legacy function_call, or tool_calls)."""
    call = {"name": name, "arguments": json.dumps(arguments)}
    message = {"role": "assistant", "content": None}
    if as_tool_call:
        message["tool_calls"] = [{"id": "call_1", "type": "function", "function": call}]
    else:
        message["function_call"] = call
    return {"id": "c", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": message}]}


class FunctionServer(LoopbackServer):
    """An OpenAI-compatible endpoint that accepts only ToolEval's request: the one user message,
    the function's schema with `reason`, the forced call, the evaluator's sampling settings and the
    model judge.model names; it answers with a function call, its label from `labels` by marker.
    Another request is answered HTTP 400 (not retried) with what was wrong, which the judge's
    error then shows."""

    def __init__(self, labels, served="fake-judge", as_tool_call=False):
        self.labels, self.served, self.as_tool_call = labels, served, as_tool_call
        super().__init__(self._checked)
        self.url += "/v1"

    def _checked(self, path, headers, body):
        try:
            return self._reply(path, headers, body)
        except AssertionError as err:
            return 400, {"error": {"message": f"not ToolEval's request: {err!r}"[:280]}}

    def _reply(self, path, headers, body):
        assert path == "/v1/chat/completions" and body["model"] == "fake-judge"
        name = body["function_call"]["name"]
        assert body["function_call"] == {"name": name} and "tools" not in body
        [schema] = body["functions"]
        assert schema["name"] == name and schema["parameters"]["required"][-1] == "reason"
        assert schema["parameters"]["properties"]["reason"]["type"] == "string"
        assert (body["temperature"], body["max_tokens"]) == (0.7, 321)
        assert "seed" not in body and "timeout" not in body, "seed or timeout sent"
        [message] = body["messages"]
        assert message["role"] == "user"
        head = DESCRIPTIONS[name].split("{")[0]
        assert message["content"].startswith(head), (name, message["content"][:80])
        field = tooleval.REPLY_FIELDS[name][0]
        label = next(v for k, v in self.labels.items() if k in message["content"])
        return 200, function_call_reply(self.served, name, {field: label, "reason": "r"},
                                        self.as_tool_call)


def evaluator_judge(tmp_path, server, monkeypatch, cache="judge_cache.jsonl", **extra):
    folder = write_evaluator(tmp_path / "evaluator")
    cfg = llm_cfg(tmp_path, server, [traj(1, GOOD, "SOLVED")], monkeypatch,
                  evaluator_dir=str(folder), **extra)
    return llm_judge.LLMJudge(cfg.judge, llm_judge.JudgeCache(tmp_path / cache), sleep=lambda s: None)


@pytest.mark.parametrize("as_tool_call", [False, True])
def test_an_evaluator_folder_is_asked_with_its_function_call_and_read_from_it(tmp_path, monkeypatch,
                                                                              as_tool_call):
    with FunctionServer({"SOLVED": "Solved"}, as_tool_call=as_tool_call) as server:
        llm = evaluator_judge(tmp_path, server, monkeypatch)
        call = llm.ask("check_answer_status", {"query": "SOLVED?", "answer": "done"}, 0)
        assert call["parsed"] == {"answer_status": "Solved", "reason": "r"} and not call["cached"]
        assert json.loads(call["reply"]) == {"answer_status": "Solved", "reason": "r"}
        assert len(server.requests) == 1
        assert server.requests[0][2]["messages"][0]["content"] == \
            "\nIs the request settled by this answer?\nRequest: SOLVED?\nAnswer: done\n"
        again = llm.ask("check_answer_status", {"query": "SOLVED?", "answer": "done"}, 0)
        assert again["cached"] and again["parsed"] == call["parsed"] and len(server.requests) == 1


def test_one_assessment_runs_through_the_evaluators_four_functions(tmp_path, monkeypatch):
    """ToolEval's answer check, Unsure -> the whole-run check, then the task check (and the
    preference): each function's fields fill its description."""
    labels = {"Is the request": "Unsure", "Read the whole run": "Unsolved",
              "Could the tools": "Unsolvable", "Pick the better": 1}
    with FunctionServer(labels) as server:
        llm = evaluator_judge(tmp_path, server, monkeypatch)
        a = tooleval.llm_assessment(llm, traj(1, GOOD, "UNSURE"), 0)
        assert [c["function"] for c in a["calls"]] == ["check_answer_status", "parse_answer_status",
                                                       "check_task_solvable"]
        assert (a["answer_status"], a["task_status"]) == ("Unsolved", "Unsolvable")
        pick = llm.ask("select_better_answer", {"query": "q", "answer_0": "{}", "answer_1": "[]"}, 0)
        assert pick["parsed"]["index"] == 1 and len(server.requests) == 4


def test_each_judge_says_which_prompts_it_uses_and_they_never_share_a_cache_key(tmp_path, server,
                                                                                monkeypatch):
    ours, _ = direct_judge(tmp_path, server, monkeypatch)
    listing = "".join(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}\n"
                      for f in sorted(tooleval.PROMPT_DIR.glob("*.txt")))
    assert ours.evaluator is None and ours.prompts == (
        "our wording of ToolEval's prompts, lib/toolbench/tooleval_prompts (sha256 "
        f"{hashlib.sha256(listing.encode()).hexdigest()})")
    theirs = evaluator_judge(tmp_path, server, monkeypatch)
    template = tmp_path / "evaluator" / "template.txt"
    assert theirs.prompts.startswith(
        f"ToolEval evaluator {(tmp_path / 'evaluator').resolve()} (template.txt sha256 "
        f"{hashlib.sha256(template.read_bytes()).hexdigest()}, config.yaml sha256 ")
    assert theirs.prompts.endswith("; asks judge.model fake-judge, not config.yaml's config-model")
    fields = {"query": "q", "answer": "a"}
    keys = {llm_judge.request_key(j.name, *j.request("check_answer_status", fields, 0), 0, 0)
            for j in (ours, theirs)}
    assert len(keys) == 2


def test_a_relative_evaluator_dir_is_read_from_the_repository_root(tmp_path, server, monkeypatch):
    from lib.common import config
    assert llm_judge.repo_path("x/y") == config.ROOT / "x" / "y"
    assert llm_judge.repo_path(tmp_path) == tmp_path
    with pytest.raises(tooleval_evaluator.EvaluatorError, match="not a folder"):
        cfg = llm_cfg(tmp_path, server, [traj(1, GOOD)], monkeypatch)
        llm_judge.LLMJudge(config.derive(cfg, {"judge.evaluator_dir": "no/such/evaluator"}).judge,
                           llm_judge.JudgeCache(tmp_path / "c"))


# ------------------------------------------------------------------------------------------------
# The model id the endpoint answered with
# ------------------------------------------------------------------------------------------------
def test_the_served_model_id_is_recorded_counted_and_warned_about(tmp_path, monkeypatch):
    with FunctionServer({"SOLVED": "Solved"}, served="fake-judge") as same:
        llm = evaluator_judge(tmp_path, same, monkeypatch)
        call = llm.ask("check_answer_status", {"query": "SOLVED", "answer": "a"}, 0)
        assert call["served_model"] == "fake-judge" and llm.served_models == {"fake-judge": 1}
        assert llm.served_model_warning() is None
    with FunctionServer({"SOLVED": "Solved"}, served="fake-judge-0613") as dated:
        llm = evaluator_judge(tmp_path, dated, monkeypatch)
        llm.ask("check_answer_status", {"query": "SOLVED", "answer": "a"}, 0)      # cached
        for index in (1, 2):
            assert llm.ask("check_answer_status", {"query": "SOLVED", "answer": "a"},
                           index)["served_model"] == "fake-judge-0613"
        assert llm.served_models == {"fake-judge": 1, "fake-judge-0613": 2}
        assert llm.served_model_warning() == (
            "judge.model is fake-judge but 2 calls answered by fake-judge-0613, the dated snapshot "
            "the endpoint served for the alias fake-judge: that snapshot is the judge (name it to "
            "compare runs)")
    records = store.read_jsonl(tmp_path / "judge_cache.jsonl")
    assert [r["served_model"] for r in records] == ["fake-judge", "fake-judge-0613", "fake-judge-0613"]
    assert all(r["model"] == "fake-judge" for r in records)
    # a reloaded cache keeps the id; a record from before it was kept says so
    with FunctionServer({"SOLVED": "Solved"}, served="other-model") as other:
        llm = evaluator_judge(tmp_path, other, monkeypatch)
        for index in (0, 1, 3):
            llm.ask("check_answer_status", {"query": "SOLVED", "answer": "a"}, index)
        assert llm.served_models == {"fake-judge": 1, "fake-judge-0613": 1, "other-model": 1}
        assert "1 call answered by other-model, not the fake-judge asked" in llm.served_model_warning()
    old = tmp_path / "old_cache.jsonl"
    store.append_jsonl(old, {k: v for k, v in records[0].items() if k != "served_model"})
    with FunctionServer({"SOLVED": "Solved"}) as server:
        llm = evaluator_judge(tmp_path, server, monkeypatch, cache="old_cache.jsonl")
        assert llm.ask("check_answer_status", {"query": "SOLVED", "answer": "a"}, 0)["cached"]
        assert llm.served_models == {llm_judge.NOT_RECORDED: 1} and not server.requests
        assert "1 call replayed from cache records written before" in llm.served_model_warning()


def test_our_prompts_record_the_served_model_too(tmp_path, server, monkeypatch):
    llm, _ = direct_judge(tmp_path, server, monkeypatch)
    assert ask_solved(llm)["served_model"] == "fake-judge"       # the fake server echoes the model
    assert llm.served_models == {"fake-judge": 1} and llm.served_model_warning() is None


# ------------------------------------------------------------------------------------------------
# The call budget and the estimate before judging
# ------------------------------------------------------------------------------------------------
def ask_index(llm, index, function="check_answer_status"):
    return llm.ask(function, {"query": "SOLVED", "answer": "done"}, index)


def test_max_calls_refuses_the_call_past_it_and_a_rerun_resumes_from_the_cache(tmp_path, server,
                                                                               monkeypatch):
    llm, _ = direct_judge(tmp_path, server, monkeypatch, max_calls=2)
    ask_index(llm, 0), ask_index(llm, 1), ask_index(llm, 0)          # the repeat is cached: free
    with pytest.raises(llm_judge.JudgeBudgetExceeded) as err:
        ask_index(llm, 2)
    assert isinstance(err.value, llm_judge.JudgeRequestError)
    says = str(err.value)
    assert all(s in says for s in ("judge.max_calls=2", "2 judge calls were sent", "limit 2",
                                   str(tmp_path / "cache.jsonl"), "a rerun resumes from it")), says
    assert len(server.requests) == 2 and llm.counts["calls"] == 2 and llm.counts["cache_hits"] == 1
    # a rerun with a higher limit sends only the rest
    again, _ = direct_judge(tmp_path, server, monkeypatch, max_calls=3)
    assert [ask_index(again, i)["cached"] for i in (0, 1, 2)] == [True, True, False]
    assert len(server.requests) == 3 and again.counts["calls"] == 1


def test_max_calls_counts_the_re_asks_of_a_malformed_reply(tmp_path, server, monkeypatch):
    llm, _ = direct_judge(tmp_path, server, monkeypatch, max_calls=1, malformed_retries=2)
    server.script = [("content", "{not json")]
    with pytest.raises(llm_judge.JudgeBudgetExceeded):
        ask_index(llm, 0)
    assert len(server.requests) == 1
    # the malformed reply is cached: a rerun asks only again
    again, _ = direct_judge(tmp_path, server, monkeypatch, max_calls=1, malformed_retries=2)
    call = ask_index(again, 0)
    assert call["attempts"] == 2 and call["parsed"]["answer_status"] == "Solved"
    assert len(server.requests) == 2 and again.counts["calls"] == 1


def test_the_estimate_counts_first_calls_cached_ones_apart_and_sends_nothing(tmp_path, server,
                                                                            monkeypatch):
    llm, _ = direct_judge(tmp_path, server, monkeypatch, max_calls=50)
    ask_index(llm, 0)
    sent = len(server.requests)
    first = [("check_answer_status", {"query": "SOLVED", "answer": "done"}, i) for i in range(3)]
    first += [("check_task_solvable", {"task": "{}"}, 0),
              ("select_better_answer", {"query": "q", "answer_0": "{}", "answer_1": "[]"}, 0)]
    plan = llm.estimate(first)
    assert len(server.requests) == sent
    chars = sum(len(m["content"]) for f, fields, i in first[1:] for m in llm.request(f, fields, i)[0])
    assert plan == llm_judge.CallPlan(first_calls=5, cached=1, to_send=4, at_most=2 + 3 + 3 + 1 + 1,
                                      prompt_tokens=-(-chars // 4), max_calls=50)
    assert plan.line().startswith(f"4 judge calls (at most 10 with the follow-up checks, re-asks of "
                                  f"malformed replies not counted), ~{plan.prompt_tokens:,} prompt "
                                  f"tokens (an estimate: characters / 4, first calls only), 1 cached; "
                                  f"judge.max_calls=50 stops the run before call 51")


def test_the_estimate_of_an_evaluators_calls_counts_the_function_schema(tmp_path, monkeypatch):
    with FunctionServer({}) as server:
        llm = evaluator_judge(tmp_path, server, monkeypatch)
        first = [("check_task_solvable", {"task": "{}"}, 0)]
        messages, params = llm.request(*first[0])
        chars = len(messages[0]["content"]) + len(json.dumps(params["functions"]))
        plan = llm.estimate(first)
        assert (plan.to_send, plan.at_most, plan.prompt_tokens) == (1, 1, -(-chars // 4))
        assert "judge.max_calls" not in plan.line() and not server.requests
