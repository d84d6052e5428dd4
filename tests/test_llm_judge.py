"""lib/llm_judge.py: the LLM judge's cache, retries (429 / 5xx / time-outs / Retry-After, done by the
openai client), malformed responses and replies, and its key, against a scripted OpenAI-compatible server on 127.0.0.1 (real
HTTP through the openai client)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lib import judge, llm_judge, store

from judge_helpers import GOOD, FakeServer, llm_cfg, make_cfg, scripted_judge, traj


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
@pytest.fixture
def server():
    srv = FakeServer(scripted_judge)
    yield srv
    srv.close()


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
    summary = json.loads((Path(cfg["output_dir"]) / "judge_summary.json").read_text())
    assert summary["requests"]["retries"] == 3 and summary["requests"]["requests"] == 4
    rec = store.read_jsonl(Path(cfg["output_dir"]) / "judgments" / "G1_instruction.jsonl")[0]
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
    assert not (Path(cfg["output_dir"]) / "judgments" / "G1_instruction.jsonl").read_text()


def direct_judge(tmp_path, server, monkeypatch, **extra):
    """An LLMJudge on the fake server whose sleeps are recorded, not slept."""
    cfg = llm_cfg(tmp_path, server, [traj(1, GOOD, "SOLVED")], monkeypatch, **extra)
    slept = []
    return llm_judge.LLMJudge(cfg["judge"], llm_judge.JudgeCache(tmp_path / "cache.jsonl"), sleep=slept.append), slept


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
        Path(cfg["output_dir"]) / "judgments" / "G1_instruction.jsonl")}
    first = recs[1]["assessments"][0]
    assert first["answer_status"] == "Solved" and first["calls"][0]["attempts"] == 3
    junk = recs[2]["assessments"][0]
    assert junk["malformed"] and junk["answer_status"] == "Unsure" and junk["task_status"] == "Unsure"
    assert junk["label"] == "Unsure" and junk["coin"]
    # answer check (3 attempts) + whole-run check (3) + task check (3) for JUNK, 3 for SOLVED
    assert len(server.requests) == 12
    summary = json.loads((Path(cfg["output_dir"]) / "judge_summary.json").read_text())
    assert summary["agreement"]["overall"]["malformed_assessments"] == 1


def test_missing_key_for_openai_is_a_clear_error_without_the_value(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = make_cfg(tmp_path, {"G1_instruction": [traj(1, GOOD)]}, kind="llm",
                   base_url="https://api.openai.com/v1")
    with pytest.raises(llm_judge.JudgeRequestError, match="OPENAI_API_KEY"):
        judge.run(cfg, log=lambda *a: None)
