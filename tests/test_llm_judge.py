"""lib/llm_judge.py: the LLM judge's cache, retries (429 / 5xx / time-outs / Retry-After), malformed
responses and replies, and its key, against a scripted OpenAI-compatible server on 127.0.0.1 (real
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


def test_retries_on_429_5xx_and_timeout_then_succeed(tmp_path, server, monkeypatch):
    cfg = llm_cfg(tmp_path, server, [traj(1, GOOD, "SOLVED")], monkeypatch, evaluate_times=1,
                  timeout_s=0.3)
    server.script = [("status", 429), ("status", 503), ("sleep", 1.0)]
    t0 = time.time()
    judge.run(cfg, log=lambda *a: None)
    assert time.time() - t0 < 5
    assert len(server.requests) == 4
    summary = json.loads((Path(cfg["output_dir"]) / "judge_summary.json").read_text())
    assert summary["requests"]["retries"] == 3
    rec = store.read_jsonl(Path(cfg["output_dir"]) / "judgments" / "G1_instruction.jsonl")[0]
    assert rec["passed"] and rec["assessments"][0]["answer_status"] == "Solved"


def test_persistent_server_errors_raise_after_max_retries(tmp_path, server, monkeypatch):
    cfg = llm_cfg(tmp_path, server, [traj(1, GOOD, "SOLVED")], monkeypatch, evaluate_times=1,
                  max_retries=2)
    server.script = [("status", 500)] * 3
    with pytest.raises(llm_judge.JudgeRequestError, match="3 times"):
        judge.run(cfg, log=lambda *a: None)
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
    assert all(s in str(err.value) for s in (server.url, "model fake-judge", "3 times",
                                             "MalformedResponse", says)), str(err.value)
    assert len(server.requests) == 3 and len(slept) == 2
    assert not (tmp_path / "cache.jsonl").exists()                   # nothing cached for it


@pytest.mark.parametrize("headers, backoff, waited", [
    ({"Retry-After": "7"}, 0.001, 7.0),                # the server's wait, not the tiny backoff
    ({"retry-after-ms": "2500"}, 0.001, 2.5),
    ({"Retry-After": "1"}, 4.0, 4.0),                  # never shorter than the backoff
    ({"Retry-After": "86400"}, 0.001, llm_judge.MAX_RETRY_AFTER_S),
    ({"Retry-After": "soon"}, 0.25, 0.25),              # unreadable: the backoff
    ({}, 0.25, 0.25)])
def test_a_429_waits_as_long_as_retry_after_asks(tmp_path, server, monkeypatch, headers, backoff, waited):
    llm, slept = direct_judge(tmp_path, server, monkeypatch, retry_backoff_s=backoff)
    server.script = [("raw", 429, headers, {"error": {"message": "slow down", "type": "rate"}})]
    assert ask_solved(llm)["parsed"]["answer_status"] == "Solved"
    assert slept == [pytest.approx(waited)] and len(server.requests) == 2


def test_retry_after_as_an_http_date():
    import email.utils
    from types import SimpleNamespace
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < llm_judge.retry_after(SimpleNamespace(headers={"retry-after": later})) <= 30
    assert llm_judge.retry_after(None) is None


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
