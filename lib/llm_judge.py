"""The LLM judge: an OpenAI-compatible chat endpoint asked ToolEval's questions (lib/tooleval.py),
with a disk cache and retries.

Any OpenAI-compatible chat endpoint through the `openai` client (`judge.base_url`, `judge.model`,
key read from the environment variable named by `judge.api_key_env`; the key is never printed or
written). Each request (model, messages, sampling parameters incl. a per-assessment seed,
assessment index, attempt) is hashed (`request_key`); request and reply are appended to
`outputs/<profile>/judge_cache.jsonl` (`JudgeCache`) and looked up there first, so a rerun or
resumed run sends nothing twice while the repeated assessments stay distinct samples.
429 / 5xx / time-outs / connection errors / malformed responses (an HTTP 200 that is not a chat
completion: a proxy's HTML page, JSON without choices; `MalformedResponse`) are retried
`max_retries` times with exponential backoff starting at `retry_backoff_s`, at least as long as a
`Retry-After` asks (capped at MAX_RETRY_AFTER_S); then JudgeRequestError names the endpoint and the
last failure. A reply that is not a JSON object with a valid label is asked again (a new attempt,
cached apart) up to `malformed_retries` times, then returned unparsed and flagged `malformed`
(lib/tooleval.py counts it Unsure; an index reply, no preference).
"""
from __future__ import annotations

import email.utils
import hashlib
import json
import math
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


def _api_key(jcfg: dict) -> str:
    try:
        return keys.endpoint_key(jcfg["api_key_env"], jcfg["base_url"], "judge.kind is llm")
    except keys.MissingKey as err:
        raise JudgeRequestError(str(err)) from None


MAX_RETRY_AFTER_S = 120.0       # a longer Retry-After is waited this long, then asked again


class MalformedResponse(Exception):
    """An HTTP 200 from the judge endpoint that is not a chat completion (a proxy's HTML page, a
    server's {"error": ...}): a failure of the endpoint, retried like a 5xx - unlike a completion
    whose text is not a valid label, which the model is asked again for (malformed_retries)."""


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


def retry_after(response: Any) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, or `Retry-After` in seconds or as an
    HTTP date); None when it did not say or said something unreadable."""
    headers = getattr(response, "headers", None) or {}
    for name, unit in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if not value:
            continue
        try:
            seconds = float(value) * unit
        except ValueError:
            try:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def _failure(err: Exception) -> str:
    """What went wrong with one request, for the error after the last retry."""
    status = getattr(err, "status_code", None)
    return f"{type(err).__name__}" + (f" (HTTP {status})" if status else "") + (
        f": {err}" if isinstance(err, MalformedResponse) else "")


class LLMJudge:
    """Asks an OpenAI-compatible chat endpoint; every request/reply goes through the cache."""

    def __init__(self, jcfg: dict, cache: JudgeCache, sleep: Callable[[float], None] = time.sleep):
        import openai           # here, not at the top: only judge.kind llm needs the client
        self.openai = openai
        self.cfg = jcfg
        self.name = jcfg["model"]
        self.cache = cache
        self.sleep = sleep
        self.client = openai.OpenAI(base_url=jcfg["base_url"], api_key=_api_key(jcfg),
                                    max_retries=0, timeout=float(jcfg["timeout_s"]))
        self.endpoint = f"{self.client.base_url} (model {self.name})"
        self.counts = {"requests": 0, "cache_hits": 0, "retries": 0, "bad_responses": 0,
                       "malformed": 0}
        self.lock = threading.Lock()

    def _count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def _send(self, messages: list[dict], params: dict) -> str:
        """The reply's text; 429 / 5xx / time-outs / connection errors / malformed 200s are retried
        max_retries times, then JudgeRequestError names the endpoint and the last failure."""
        transient = (self.openai.RateLimitError, self.openai.APITimeoutError,
                     self.openai.APIConnectionError, self.openai.InternalServerError,
                     MalformedResponse)
        retries = int(self.cfg["max_retries"])
        for attempt in range(retries + 1):
            try:
                self._count("requests")
                return reply_content(self._create(messages, params))
            except transient as err:
                if isinstance(err, MalformedResponse):
                    self._count("bad_responses")
                if attempt == retries:
                    raise JudgeRequestError(f"judge endpoint {self.endpoint} failed {retries + 1} "
                                            f"times, last: {_failure(err)}") from None
                self._count("retries")
                self.sleep(self._wait(err, attempt))
        raise AssertionError("unreachable")

    def _create(self, messages: list[dict], params: dict) -> Any:
        """One request. The client decodes a 200 declared JSON itself and lets the decoder's error
        through bare (measured): that is a malformed response too."""
        try:
            return self.client.chat.completions.create(model=self.name, messages=messages, **params)
        except json.JSONDecodeError as err:
            raise MalformedResponse(f"HTTP 200 whose body is not JSON ({err.msg})") from None

    def _wait(self, err: Exception, attempt: int) -> float:
        """Exponential backoff, but at least what the server asked for in Retry-After (a 429's,
        a 503's), capped at MAX_RETRY_AFTER_S."""
        backoff = float(self.cfg["retry_backoff_s"]) * 2 ** attempt
        asked = retry_after(getattr(err, "response", None))
        return backoff if asked is None else max(backoff, min(asked, MAX_RETRY_AFTER_S))

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
