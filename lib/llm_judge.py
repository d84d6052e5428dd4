"""The LLM judge: an OpenAI-compatible chat endpoint asked ToolEval's questions (lib/tooleval.py),
with a disk cache and retries.

Any OpenAI-compatible chat endpoint through the `openai` client (`judge.base_url`, `judge.model`,
key read from the environment variable named by `judge.api_key_env`; the key is never printed or
written). Each request (model, messages, sampling parameters incl. a per-assessment seed,
assessment index, attempt) is hashed (`request_key`); request and reply are appended to
`outputs/<profile>/judge_cache.jsonl` (`JudgeCache`) and looked up there first, so a rerun or
resumed run sends nothing twice while the repeated assessments stay distinct samples.
Time-outs (`timeout_s`), connection errors and HTTP 408 / 409 / 429 / 5xx (or as an `x-should-retry`
header says) are retried by the openai client itself (`max_retries`; openai/_base_client.py
`_should_retry`, `_calculate_retry_timeout`): it waits as `retry-after-ms` / `Retry-After` asks
when that is over 0 and at most 120 s, else 0.5 * 2^n s capped at 8 s less up to 25 % jitter; a
Retry-After over 120 s is not retried at all.
What it does not retry, an HTTP 200 that is not a chat completion (a proxy's HTML page, JSON
without choices; `MalformedResponse`), is sent again here `max_retries` times, waiting
`retry_backoff_s` * 2^n. Either way JudgeRequestError then names the endpoint, the model, the last
failure and the number of attempts. A reply that is not a JSON object with a valid label is asked
again (a new attempt, cached apart) up to `malformed_retries` times, then returned unparsed and
flagged `malformed` (lib/tooleval.py counts it Unsure; an index reply, no preference).
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

from lib import keys, store, tooleval


class JudgeRequestError(RuntimeError):
    """The judge endpoint kept failing after every retry."""


class JudgeCache:
    """Append-only JSONL of every request and reply, keyed by a hash of the request. Written through
    lib.store: a torn last line (a run killed mid-write) is skipped on loading - that request is
    simply sent again - and cut before the next record, which therefore is not lost with it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock = threading.Lock()        # queries are judged in threads; one writer at a time
        # A bad line mid-file (an older version glued a record onto a torn line): its requests are
        # simply sent again, so it is skipped with a warning rather than stopping the stage.
        warn = lambda message: print(f"WARNING: {message}: skipped; its requests are sent again")
        self.replies = {rec["key"]: rec["reply"] for rec in store.read_jsonl(self.path, on_bad=warn)}

    def get(self, key: str) -> str | None:
        return self.replies.get(key)

    def put(self, key: str, record: dict) -> None:
        with self.lock:
            self.replies[key] = record["reply"]
            store.append_jsonl(self.path, {"key": key, **record})


def request_key(model: str, messages: list[dict], params: dict, index: int, attempt: int) -> str:
    blob = json.dumps({"model": model, "messages": messages, "params": params, "index": index,
                       "attempt": attempt}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _api_key(judge_cfg: dict) -> str:
    try:
        return keys.endpoint_key(judge_cfg["api_key_env"], judge_cfg["base_url"], "judge.kind is llm")
    except keys.MissingKey as err:
        raise JudgeRequestError(str(err)) from None


class MalformedResponse(Exception):
    """An HTTP 200 from the judge endpoint that is not a chat completion (a proxy's HTML page, a
    server's {"error": ...}): a failure of the endpoint, which the openai client does not retry, so
    LLMJudge sends it again (max_retries) - unlike a completion whose text is not a valid label,
    which the model is asked again for (malformed_retries)."""


def reply_content(resp: Any) -> str:
    """The text of a chat completion as the openai client returned it. The client does not check a
    200's body (measured with openai 3.57 against a local server): a non-JSON body sent as text/html
    comes back as a str, a bare JSON list or string as that value, a JSON object without choices as
    a ChatCompletion whose choices are None (empty: []; a choice without message: message None).
    Each raises MalformedResponse saying what was wrong. A message whose content is None is the
    model's own empty reply: "" (parse_reply counts it malformed and the model is asked again)."""
    if not hasattr(resp, "choices"):
        raise MalformedResponse(f"HTTP 200 whose body is not a chat completion but a "
                                f"{type(resp).__name__}: {str(resp)[:120]!r}")
    if not resp.choices:
        error = (getattr(resp, "model_extra", None) or {}).get("error")
        raise MalformedResponse(f"HTTP 200 with {'empty' if resp.choices == [] else 'no'} choices"
                                + (f", error: {str(error)[:200]}" if error else ""))
    message = getattr(resp.choices[0], "message", None)
    if message is None:
        raise MalformedResponse("HTTP 200 whose choices[0] has no message")
    content = getattr(message, "content", None)
    if content is not None and not isinstance(content, str):
        raise MalformedResponse(f"HTTP 200 whose message content is a "
                                f"{type(content).__name__}, not text")
    return content or ""


def _failure(err: Exception, secret: str) -> str:
    """What went wrong with one request, for the error after the last attempt (the key, should a
    server echo it, blanked)."""
    status = getattr(err, "status_code", None)
    detail = str(err) if isinstance(err, MalformedResponse) else getattr(err, "message", "")
    detail = ((detail or "").replace(secret, "***") if secret else (detail or ""))[:300]
    return f"{type(err).__name__}" + (f" (HTTP {status})" if status else "") + (
        f": {detail}" if detail else "")


def _plural(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _attempts(err: Exception) -> int:
    """How many times the openai client sent the request that finally failed: it stamps each send
    with x-stainless-retry-count (0 on the first), which the error keeps on its request."""
    request = getattr(err, "request", None)
    try:
        return int(request.headers.get("x-stainless-retry-count", 0)) + 1
    except (AttributeError, TypeError, ValueError):
        return 1


def _parse(raw: Any) -> Any:
    """The client's reply from its raw response. It decodes a 200 declared JSON itself and lets the
    decoder's error through bare (measured): that is a malformed response too."""
    try:
        return raw.parse()
    except json.JSONDecodeError as err:
        raise MalformedResponse(f"HTTP 200 whose body is not JSON ({err.msg})") from None


class LLMJudge:
    """Asks an OpenAI-compatible chat endpoint; every request/reply goes through the cache."""

    def __init__(self, judge_cfg: dict, cache: JudgeCache, sleep: Callable[[float], None] = time.sleep):
        import openai           # here, not at the top: only judge.kind llm needs the client
        self.openai = openai
        self.cfg = judge_cfg
        self.name = judge_cfg["model"]
        self.cache = cache
        self.sleep = sleep
        self.api_key = _api_key(judge_cfg)
        self.client = openai.OpenAI(base_url=judge_cfg["base_url"], api_key=self.api_key,
                                    max_retries=int(judge_cfg["max_retries"]),
                                    timeout=float(judge_cfg["timeout_s"]))
        self.endpoint = f"{self.client.base_url} (model {self.name})"
        # requests: HTTP requests sent, the client's retries included; retries: of those, the ones
        # sent again (by the client, or here after a malformed 200); bad_responses: malformed 200s.
        self.counts = {"requests": 0, "cache_hits": 0, "retries": 0, "bad_responses": 0,
                       "malformed": 0}
        self.lock = threading.Lock()

    def _count(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.counts[what] += n

    def _send(self, messages: list[dict], params: dict) -> str:
        """The reply's text. The client has retried time-outs / connection errors / 408 / 409 /
        429 / 5xx itself; a malformed 200 is sent again here max_retries times (backoff
        retry_backoff_s * 2^n); then JudgeRequestError names the endpoint and the last failure."""
        retries, sent = int(self.cfg["max_retries"]), 0
        for attempt in range(retries + 1):
            try:
                raw = self.client.chat.completions.with_raw_response.create(
                    model=self.name, messages=messages, **params)
            except self.openai.APIError as err:      # the client's retries are spent (or none apply)
                n = _attempts(err)
                sent += n
                self._count("requests", n)
                self._count("retries", n - 1)
                raise JudgeRequestError(
                    f"judge endpoint {self.endpoint} failed after {_plural(sent, 'attempt')} (the "
                    f"openai client's max_retries={retries}), last: {_failure(err, self.api_key)}"
                ) from None
            sent += raw.retries_taken + 1
            self._count("requests", raw.retries_taken + 1)
            self._count("retries", raw.retries_taken)
            try:
                return reply_content(_parse(raw))
            except MalformedResponse as err:
                self._count("bad_responses")
                if attempt == retries:
                    raise JudgeRequestError(
                        f"judge endpoint {self.endpoint} failed after {_plural(sent, 'attempt')}, "
                        f"last: {_failure(err, self.api_key)}") from None
                self._count("retries")
                self.sleep(float(self.cfg["retry_backoff_s"]) * 2 ** attempt)
        raise AssertionError("unreachable")

    def ask(self, function: str, fields: dict, index: int) -> dict:
        """One judge call (cached); returns {function, reply, parsed, cached, attempts}."""
        messages = [{"role": "system", "content": tooleval.SYSTEM_PROMPT},
                    {"role": "user", "content": tooleval.PROMPTS[function].format(**fields)}]
        params = {"temperature": float(self.cfg["temperature"]),
                  "max_tokens": int(self.cfg["max_tokens"]),
                  "seed": int(self.cfg["seed"]) + index}
        reply, cached = None, True
        for attempt in range(int(self.cfg["malformed_retries"]) + 1):
            key = request_key(self.name, messages, params, index, attempt)
            reply = self.cache.get(key)
            if reply is None:
                cached = False
                reply = self._send(messages, params)
                self.cache.put(key, {"model": self.name, "function": function, "index": index,
                                     "attempt": attempt, "params": params, "messages": messages,
                                     "reply": reply, "time": time.time()})
            else:
                self._count("cache_hits")
            parsed = tooleval.parse_reply(function, reply)
            if parsed is not None:
                return {"function": function, "reply": reply, "parsed": parsed, "cached": cached,
                        "attempts": attempt + 1}
            self._count("malformed")
        return {"function": function, "reply": reply, "parsed": None, "cached": cached,
                "attempts": int(self.cfg["malformed_retries"]) + 1, "malformed": True}
