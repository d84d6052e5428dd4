"""The LLM judge: an OpenAI-compatible chat endpoint asked ToolEval's questions (lib/toolbench/tooleval.py),
with a disk cache and retries.

Requests go through the `openai` client (`judge.base_url`, `judge.model`, the key from the variable
`judge.api_key_env` names, never printed or written), are cached in `judge_cache.jsonl` by a hash of
everything sent (`request_key`), and stop at `judge.max_calls`. Transport failures are left to the
client's own retries (`max_retries`); a 200 that is not a chat completion is sent again here.
With `judge.serve` the endpoint is a model server the judge starts itself (lib/models/served.py) on
`judge.serve_model`, at its first call not in the cache. docs/judging.md, "The LLM judge", has the details.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from lib.common import config, keys, store
from lib.common.settings import Judge
from lib.toolbench import tooleval, tooleval_evaluator
from lib.models import backends, served


class JudgeRequestError(RuntimeError):
    """The judge endpoint kept failing after every retry."""


class JudgeBudgetExceeded(JudgeRequestError):
    """judge.max_calls calls were sent; the next one was not (a rerun resumes from the cache)."""


# served_model of a cache record written before the served model id was kept, and of a reply
# whose `model` field is missing (not model ids: the parentheses keep them apart from any).
NOT_RECORDED = "(not recorded)"
NOT_GIVEN = "(not given)"


class JudgeCache:
    """Append-only JSONL of every request and reply, keyed by a hash of the request. Written through
    lib.common.store: a torn last line (a run killed mid-write) is skipped on loading - that request is
    simply sent again - and cut before the next record, which therefore is not lost with it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock = threading.Lock()        # queries are judged in threads; one writer at a time
        # A bad line mid-file (an older version glued a record onto a torn line): its requests are
        # simply sent again, so it is skipped with a warning rather than stopping the stage.
        warn = lambda message: print(f"WARNING: {message}: skipped; its requests are sent again")
        self.replies, self.served = {}, {}
        for rec in store.read_jsonl(self.path, on_bad=warn):
            self.replies[rec["key"]] = rec["reply"]
            self.served[rec["key"]] = rec.get("served_model", NOT_RECORDED)

    def get(self, key: str) -> str | None:
        return self.replies.get(key)

    def served_model(self, key: str) -> str:
        """The model id that answered a cached request (NOT_RECORDED for an older record)."""
        return self.served.get(key, NOT_RECORDED)

    def put(self, key: str, record: dict) -> None:
        with self.lock:
            self.replies[key] = record["reply"]
            self.served[key] = record.get("served_model", NOT_RECORDED)
            store.append_jsonl(self.path, {"key": key, **record})


def request_key(model: str, messages: list[dict], params: dict, index: int, attempt: int) -> str:
    blob = json.dumps({"model": model, "messages": messages, "params": params, "index": index,
                       "attempt": attempt}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _api_key(judge_cfg: Judge) -> str:
    try:
        return keys.endpoint_key(judge_cfg.api_key_env, judge_cfg.base_url, "judge.kind is llm")
    except keys.MissingKey as err:
        raise JudgeRequestError(str(err)) from None


class MalformedResponse(Exception):
    """An HTTP 200 from the judge endpoint that is not a chat completion (a proxy's HTML page, a
    server's {"error": ...}): a failure of the endpoint, which the openai client does not retry, so
    LLMJudge sends it again (max_retries) - unlike a completion whose text is not a valid label,
    which the model is asked again for (malformed_retries)."""


def _message(resp: Any) -> Any:
    """choices[0].message of a chat completion as the openai client returned it. The client does
    not check a 200's body (measured with openai 3.57 against a local server): a non-JSON body sent
    as text/html comes back as a str, a bare JSON list or string as that value, a JSON object
    without choices as a ChatCompletion whose choices are None (empty: []; a choice without
    message: message None). Each raises MalformedResponse saying what was wrong."""
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
    return message


def reply_content(resp: Any) -> str:
    """The text of a chat completion (a malformed one raises MalformedResponse, `_message`). A
    message whose content is None is the model's own empty reply: "" (parse_reply counts it
    malformed and the model is asked again)."""
    content = getattr(_message(resp), "content", None)
    if content is not None and not isinstance(content, str):
        raise MalformedResponse(f"HTTP 200 whose message content is a "
                                f"{type(content).__name__}, not text")
    return content or ""


def call_arguments(resp: Any) -> str:
    """The arguments of the function the model was made to call, as ToolEval reads them: the legacy
    `message.function_call.arguments`, else `message.tool_calls[0].function.arguments` (a server
    that answers the legacy request in the newer form), else the message's text. An arguments
    object a server sent parsed is written back as JSON. parse_reply reads the label from it."""
    message = _message(resp)
    call = getattr(message, "function_call", None)
    if call is None and getattr(message, "tool_calls", None):
        call = getattr(message.tool_calls[0], "function", None)
    if call is None:
        content = getattr(message, "content", None)
        return content if isinstance(content, str) else ""
    arguments = getattr(call, "arguments", None)
    if arguments is None:
        return ""
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def served_model(resp: Any) -> str:
    """The completion's `model` field: the model id the endpoint says answered."""
    model = getattr(resp, "model", None)
    return model if isinstance(model, str) and model else NOT_GIVEN


def prompts_sha256(folder: Path = tooleval.PROMPT_DIR) -> str:
    """sha256 of our prompt files, as `cd lib/toolbench/tooleval_prompts && sha256sum *.txt | sha256sum`."""
    listing = "".join(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}\n"
                      for f in sorted(Path(folder).glob("*.txt"), key=lambda f: f.name))
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


# A re-ask of a malformed reply changes the seed by this much per attempt: a server that honours the
# seed (transformers serve does, OpenAI tries to) would otherwise send the same malformed reply again.
RESEED = 1000


def reasked(params: dict, attempt: int) -> dict:
    """The parameters of re-ask number `attempt` (0: the first ask, unchanged): another seed."""
    if not attempt or params.get("seed") is None:
        return params
    return {**params, "seed": params["seed"] + RESEED * attempt}


# The most judge calls an assessment makes from the call it starts with (lib/toolbench/tooleval.py's
# llm_assessment: the answer, whole-run and task checks; lib/judge/win_rate.py: one preference), re-asks
# of a malformed reply not counted.
CALLS_AT_MOST = {"check_answer_status": 3, "parse_answer_status": 2, "check_task_solvable": 1,
                 "select_better_answer": 1}


@dataclass(frozen=True)
class CallPlan:
    """What a list of first calls will cost, counted before anything is sent (LLMJudge.estimate).
    `to_send`: first calls not in the cache; `cached`: first calls in it; `at_most`: the most calls
    sent, follow-up checks included (those after a cached first call too), malformed replies'
    re-asks not; `prompt_tokens`: an estimate (characters / 4, function schemas included) of the
    first calls to send, the follow-ups' not (their prompts depend on the replies)."""
    first_calls: int
    cached: int
    to_send: int
    at_most: int
    prompt_tokens: int
    max_calls: int | None

    def line(self) -> str:
        text = (f"{self.to_send} judge calls (at most {self.at_most} with the follow-up checks, "
                f"re-asks of malformed replies not counted), ~{self.prompt_tokens:,} prompt tokens "
                f"(an estimate: characters / 4, first calls only), {self.cached} cached")
        if self.max_calls is not None:
            text += (f"; judge.max_calls={self.max_calls} stops the run before call "
                     f"{self.max_calls + 1} (a rerun resumes from the cache)")
        return text


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


def repo_path(folder: str | os.PathLike) -> Path:
    """judge.evaluator_dir or judge.serve_model as a path: absolute as written, else from the
    repository root (as config.path resolves the profile's paths)."""
    path = Path(os.path.expanduser(str(folder)))
    return path if path.is_absolute() else config.ROOT / path


def _dated_snapshot(served: str, asked: str) -> bool:
    """Whether `served` is `asked` with a snapshot date appended (gpt-3.5-turbo-16k-0613,
    gpt-4o-2024-08-06): OpenAI's name for the snapshot that served an alias."""
    return re.fullmatch(re.escape(asked) + r"-(\d{4}|\d{4}-\d{2}-\d{2})", served) is not None


class LLMJudge:
    """Asks an OpenAI-compatible chat endpoint; every request/reply goes through the cache.

    Attributes the stage reads: `prompts` (one line: which prompts), `evaluator` (the
    tooleval_evaluator.Evaluator, or None for our wording), `counts` (requests, cache_hits, retries,
    bad_responses, malformed, calls: judge calls sent), `served_models` ({model id: calls},
    cached calls included), `max_calls` (judge.max_calls or None), `server` (judge.serve's model
    server once started, else None). `close()` stops that server."""

    def __init__(self, judge_cfg: Judge, cache: JudgeCache, sleep: Callable[[float], None] = time.sleep):
        import openai           # here, not at the top: only judge.kind llm needs the client
        self.openai = openai
        self.cfg = judge_cfg
        # The judge's name, in the cache's keys and the tables: judge.model; a served judge without
        # one is named by its folder (a converted GGUF's names the file, its version and digest).
        self.name = judge_cfg.model or (Path(judge_cfg.serve_model).name if judge_cfg.serve else None)
        self.cache = cache
        self.sleep = sleep
        folder = judge_cfg.evaluator_dir
        self.evaluator = (None if folder is None
                          else tooleval_evaluator.load(repo_path(folder)))
        if self.evaluator is None:
            self.prompts = (f"our wording of ToolEval's prompts, lib/toolbench/tooleval_prompts "
                            f"(sha256 {prompts_sha256()})")
        else:
            self.prompts = self.evaluator.describe()
            if self.evaluator.model not in (None, self.name):
                self.prompts += (f"; asks judge.model {self.name}, not config.yaml's "
                                 f"{self.evaluator.model}")
        max_calls = judge_cfg.max_calls
        self.max_calls = None if max_calls is None else int(max_calls)
        self.server = None
        self.start_lock = threading.Lock()      # judged in threads: one of them starts the server
        if judge_cfg.serve:
            self.api_key, self.client = "", None        # connected at the first call sent (`_client`)
            self.endpoint = f"{judge_cfg.serve} serve on {judge_cfg.serve_model} (model {self.name})"
        else:
            self.api_key = _api_key(judge_cfg)
            self.client = self._new_client(judge_cfg.base_url, self.api_key)
            self.endpoint = f"{self.client.base_url} (model {self.name})"
        # requests: HTTP requests sent, the client's retries included; retries: of those, the ones
        # sent again (by the client, or here after a malformed 200); bad_responses: malformed 200s;
        # calls: judge calls sent (not from the cache), what judge.max_calls limits.
        self.counts = {"requests": 0, "cache_hits": 0, "retries": 0, "bad_responses": 0,
                       "malformed": 0, "calls": 0}
        self.served_models: dict[str, int] = {}
        self.lock = threading.Lock()

    def _new_client(self, base_url: str | None, api_key: str):
        return self.openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=self.cfg.max_retries,
                                  timeout=self.cfg.timeout_s)

    def _client(self):
        """The client; with judge.serve, the judge's server is started here, at the first call sent
        (a run whose every reply is cached starts none). Its log: served-judge-<kind>.log beside the
        cache."""
        with self.start_lock:
            if self.client is None:
                j = self.cfg
                device, dtype = backends.inference_device(j.serve_dtype)
                self.server = served.shared(j.serve, repo_path(j.serve_model), None,
                                            self.cache.path.parent / f"served-judge-{j.serve}.log",
                                            device=device, dtype=dtype, seed=j.seed, extra=j.serve_args,
                                            timeout_s=j.serve_timeout_s or 600)
                self.client = self._new_client(self.server.base_url, "not-needed")
                self.endpoint = f"{self.server.name} at {self.server.url} on {j.serve_model} (model {self.name})"
        return self.client

    def _model(self) -> str:
        """The model id requests name: judge.model, or the served folder its server knows it by."""
        return self.server.model if self.server is not None else self.name

    def _server_state(self) -> str:
        """For an error: how the judge's own server is, and its last log lines ("" without one)."""
        if self.server is None:
            return ""
        return f"; the judge's server is {self.server.state()}. {self.server.log_lines()}"

    def close(self) -> None:
        """Stop the judge's server, when it started one (the last user stops a shared one)."""
        with self.start_lock:
            if self.server is not None:
                served.release(self.server)
            self.server = None
            if self.cfg.serve:
                self.client = None

    def _count(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.counts[what] += n

    def _served(self, model: str) -> None:
        with self.lock:
            self.served_models[model] = self.served_models.get(model, 0) + 1

    def _reserve_call(self) -> None:
        """Count one judge call about to be sent, or refuse it when judge.max_calls are spent."""
        with self.lock:
            if self.max_calls is not None and self.counts["calls"] >= self.max_calls:
                raise JudgeBudgetExceeded(
                    f"judge.max_calls={self.max_calls} reached: {self.counts['calls']} judge calls "
                    f"were sent to {self.endpoint} in this run (limit {self.max_calls}) and the "
                    f"next was not. Every reply received is kept in the cache {self.cache.path}: "
                    f"a rerun resumes from it and sends only the calls not answered yet (cached "
                    f"replies do not count against the limit); raise judge.max_calls, or set it "
                    f"to null, to judge the rest")
            self.counts["calls"] += 1

    def served_model_warning(self) -> str | None:
        """A warning when any call was answered by a model id other than judge.model (an exact
        comparison), or by one not known; None when every call names judge.model."""
        others = {m: n for m, n in self.served_models.items() if m != self.name}
        if not others:
            return None
        parts = []
        for model, n in sorted(others.items()):
            calls = _plural(n, "call")
            if model == NOT_RECORDED:
                parts.append(f"{calls} replayed from cache records written before the served model "
                             f"id was recorded (which model answered is unknown)")
            elif model == NOT_GIVEN:
                parts.append(f"{calls} answered without a `model` field (the endpoint did not say "
                             f"which model answered)")
            elif _dated_snapshot(model, self.name):
                parts.append(f"{calls} answered by {model}, the dated snapshot the endpoint served "
                             f"for the alias {self.name}: that snapshot is the judge (name it to "
                             f"compare runs)")
            else:
                parts.append(f"{calls} answered by {model}, not the {self.name} asked")
        return f"judge.model is {self.name} but " + "; ".join(parts)

    def request(self, function: str, fields: dict, index: int) -> tuple[list[dict], dict]:
        """(messages, parameters) of one judge call: our prompts (a system message, seed + index
        sent), or the evaluator's function call (lib/toolbench/tooleval_evaluator.py)."""
        if self.evaluator is not None:
            return self.evaluator.request(function, fields)
        messages = tooleval.prompt_messages(function, fields)
        params = {"temperature": self.cfg.temperature,
                  "max_tokens": self.cfg.max_tokens,
                  "seed": self.cfg.seed + index}
        sampling = served.sampling_body(self.cfg.serve, self.cfg.temperature)     # {} unless served
        if sampling:
            params["extra_body"] = sampling
        return messages, params

    def estimate(self, first_calls: Iterable[tuple[str, dict, int]]) -> CallPlan:
        """What judging will cost, before anything is sent: `first_calls` holds, per query and
        assessment index, the (function, fields, index) of the first call that assessment makes
        (check_answer_status; check_task_solvable after a pre-check that still asks the task;
        select_better_answer for a win-rate round). Looks in the cache only; sends nothing."""
        n = cached = at_most = chars = 0
        for function, fields, index in first_calls:
            messages, params = self.request(function, fields, index)
            n += 1
            if self.cache.get(request_key(self.name, messages, params, index, 0)) is not None:
                cached += 1
                at_most += CALLS_AT_MOST[function] - 1
                continue
            at_most += CALLS_AT_MOST[function]
            chars += sum(len(m["content"]) for m in messages)
            if "functions" in params:
                chars += len(json.dumps(params["functions"]))
        return CallPlan(first_calls=n, cached=cached, to_send=n - cached, at_most=at_most,
                        prompt_tokens=math.ceil(chars / 4), max_calls=self.max_calls)

    def _send(self, messages: list[dict], params: dict) -> tuple[str, str]:
        """The reply's text (the function call's arguments for an evaluator's request) and the model
        id that answered. The client has retried time-outs / connection errors / 408 / 409 / 429 /
        5xx itself; a malformed 200 is sent again here max_retries times (backoff
        retry_backoff_s * 2^n); then JudgeRequestError names the endpoint and the last failure."""
        read = call_arguments if "functions" in params else reply_content
        retries, sent = self.cfg.max_retries, 0
        for attempt in range(retries + 1):
            try:
                raw = self._client().chat.completions.with_raw_response.create(
                    model=self._model(), messages=messages, **params)
            except self.openai.APIError as err:      # the client's retries are spent (or none apply)
                n = _attempts(err)
                sent += n
                self._count("requests", n)
                self._count("retries", n - 1)
                raise JudgeRequestError(
                    f"judge endpoint {self.endpoint} failed after {_plural(sent, 'attempt')} (the "
                    f"openai client's max_retries={retries}), last: {_failure(err, self.api_key)}"
                    f"{self._server_state()}") from None
            sent += raw.retries_taken + 1
            self._count("requests", raw.retries_taken + 1)
            self._count("retries", raw.retries_taken)
            try:
                resp = _parse(raw)
                model = served_model(resp)
                return read(resp), (self.name if self.server is not None and model == self.server.model
                                    else model)
            except MalformedResponse as err:
                self._count("bad_responses")
                if attempt == retries:
                    raise JudgeRequestError(
                        f"judge endpoint {self.endpoint} failed after {_plural(sent, 'attempt')}, "
                        f"last: {_failure(err, self.api_key)}{self._server_state()}") from None
                self._count("retries")
                self.sleep(self.cfg.retry_backoff_s * 2 ** attempt)
        raise AssertionError("unreachable")

    def ask(self, function: str, fields: dict, index: int) -> dict:
        """One judge call (cached); returns {function, reply, parsed, cached, attempts,
        served_model[, malformed]} (served_model: of the last attempt). Raises JudgeBudgetExceeded
        instead of sending a call past judge.max_calls."""
        messages, first = self.request(function, fields, index)
        reply, cached, model = None, True, NOT_GIVEN
        for attempt in range(self.cfg.malformed_retries + 1):
            params = reasked(first, attempt)
            key = request_key(self.name, messages, params, index, attempt)
            reply = self.cache.get(key)
            if reply is None:
                cached = False
                self._reserve_call()
                reply, model = self._send(messages, params)
                self.cache.put(key, {"model": self.name, "served_model": model,
                                     "function": function, "index": index, "attempt": attempt,
                                     "params": params, "messages": messages, "reply": reply,
                                     "time": time.time()})
            else:
                model = self.cache.served_model(key)
                self._count("cache_hits")
            self._served(model)
            parsed = tooleval.parse_reply(function, reply)
            if parsed is not None:
                return {"function": function, "reply": reply, "parsed": parsed, "cached": cached,
                        "attempts": attempt + 1, "served_model": model}
            self._count("malformed")
        return {"function": function, "reply": reply, "parsed": None, "cached": cached,
                "attempts": self.cfg.malformed_retries + 1, "served_model": model,
                "malformed": True}
