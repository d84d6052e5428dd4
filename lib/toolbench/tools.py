"""Tool environments: what answers the model's API calls during inference.

All of them share one interface, `call(category, tool_name, api_name, arguments) -> observation`,
where the names are the query's api_list names (as written in test_instruction/*.json) and the
observation is ToolBench's JSON text `{"error": "...", "response": ...}`. The HTTP environments give
it byte for byte as ToolBench's and StableToolBench's own inference client writes it
(`toolbench/inference/Downstream_tasks/rapidapi.py`, `rapidapi_wrapper._step`: `json.dumps(<the
server's JSON reply>)`, Python's defaults: ASCII escapes, ", " and ": ", keys in the order received),
so trajectories read as upstream ones; see `client_observation` and the two environments' `call`.

- `OfflineToolEnv`: recorded responses (toolenv/responses.jsonl), deterministic, no network.
- `VirtualToolEnv`: a StableToolBench-style virtual API server over HTTP.
- `RapidApiToolEnv`: the live RapidAPI endpoints, with the user's key (from an env var).

Each call also leaves its outcome in `env.last_outcome`: "ok", "api_error" (the API answered with an
error) or "transport_error" (no answer: the environment itself failed), and in `env.last_problem`
what went wrong in the project's words (None when the call got an answer). Stage 03 counts them,
stops a run whose environment fails, and checks the environment (`check_env`) before its first query.
"""
from __future__ import annotations

import dataclasses
import json
import socket
import time
import urllib.parse
from pathlib import Path

import httpx

from lib.common import config, keys
from lib.toolbench.formats import change_name, standardize_name


def observation(response="", error: str = "") -> str:
    """ToolBench's observation text, as the offline environment and the sample corpus write it."""
    return json.dumps({"error": error, "response": response}, ensure_ascii=False)


def client_observation(reply) -> str:
    """The observation ToolBench's inference client makes of a tool server's JSON reply:
    `json.dumps(response)` with Python's defaults (non-ASCII as \\uXXXX escapes, ", " and ": "
    separators, keys in the order the server sent them, nothing sorted). Upstream:
    StableToolBench and ToolBench toolbench/inference/Downstream_tasks/rapidapi.py,
    rapidapi_wrapper._step (`return json.dumps(response), status_code`); the client's own error
    observations are built the same way (`json.dumps({"error": ..., "response": ""})`)."""
    return json.dumps(reply)


def client_error(error: str) -> str:
    """An error observation as rapidapi_wrapper._step writes its own: `{"error": ..., "response": ""}`."""
    return client_observation({"error": error, "response": ""})


# The client's own error texts (StableToolBench toolbench/inference/Downstream_tasks/rapidapi.py,
# rapidapi_wrapper._step, around the requests.post to the service url):
TIMEOUT_ERROR = "Timeout error..."                                   # requests.exceptions.Timeout
STATUS_ERROR = "request invalid, data error. status_code={status}"   # response.status_code != 200
DATA_ERROR = "request invalid, data error"                           # response.json() failed


def recorded_observation(response) -> str:
    """The observation of a recorded API response as ToolBench's data holds it: `response` is text,
    a structured reply written as its Python repr ("{'temp_c': 18, ...}"). The sample's training
    conversations and the offline environment both use this, so the model meets at inference the
    observations it was trained on."""
    return observation(response if isinstance(response, str) else repr(response))


def api_key(category: str, tool_name: str, api_name: str) -> tuple[str, str, str]:
    """How environments identify an API: category, tool and API names standardized as ToolBench
    names files and functions (so 'Weather API!' and 'weather_api' are the same tool)."""
    return (standardize_name(category), standardize_name(tool_name),
            change_name(standardize_name(api_name)))


def canonical_arguments(arguments: dict) -> str:
    """Exact canonical form: JSON with sorted keys."""
    return json.dumps(arguments, sort_keys=True, ensure_ascii=False)


def _loose(value) -> str:
    return str(value).strip().lower() if not isinstance(value, (dict, list)) else \
        json.dumps(value, sort_keys=True, ensure_ascii=False).lower()


def loose_arguments(arguments: dict, keep=None) -> tuple:
    """Forgiving form: parameter names standardized, values compared as lowercase stripped text,
    empty / null values dropped; `keep` limits it to those (standardized) parameter names."""
    out = {}
    for name, value in arguments.items():
        key = change_name(standardize_name(name))
        if value is None or _loose(value) == "" or (keep is not None and key not in keep):
            continue
        out[key] = _loose(value)
    return tuple(sorted(out.items()))


def load_tool_docs(tools_dir) -> dict:
    """toolenv/tools/<category>/<tool>.json -> {standardized tool name: doc with 'category' added}."""
    docs = {}
    tools_dir = Path(tools_dir)
    if not tools_dir.exists():
        return docs
    for path in sorted(tools_dir.glob("*/*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
        if not isinstance(doc, dict) or "api_list" not in doc:
            raise ValueError(f"{path}: a tool document needs 'tool_name' and 'api_list'")
        doc = dict(doc, category=path.parent.name)
        docs[standardize_name(doc.get("tool_name") or path.stem)] = doc
    return docs


def find_api_doc(docs: dict, tool_name: str, api_name: str) -> dict | None:
    doc = docs.get(standardize_name(tool_name))
    if doc is None:
        return None
    want = change_name(standardize_name(api_name))
    for api in doc["api_list"]:
        if change_name(standardize_name(api["name"])) == want:
            return api
    return None


OK, API_ERROR, TRANSPORT_ERROR = "ok", "api_error", "transport_error"
RETRIES = 3                 # waits on HTTP 429 / 502-504 before a call counts as failed
MAX_RETRY_AFTER_S = 60.0    # a longer Retry-After is cut to this


class EnvUnavailable(RuntimeError):
    """The configured tool environment does not answer: stage 03 stops rather than record a run
    whose observations are transport errors."""


class ToolEnv:
    """The interface every environment implements.

    `last_outcome` is what the last call met: "ok", "api_error" (the API answered with an error:
    a bad argument, an unknown API, RapidAPI's HTTP 4xx; the model's business) or "transport_error"
    (no answer: unreachable, timed out, HTTP 5xx, 429 after its retries; the environment's failure).
    `last_problem` says in the project's words what went wrong in transport (None otherwise): the
    observation itself holds upstream's text, which names less (e.g. "Timeout error...").
    """

    name = "base"
    last_outcome = OK
    last_problem = None

    def call(self, category: str, tool_name: str, api_name: str, arguments: dict) -> str:
        raise NotImplementedError

    def probe(self, category: str = "Data", tool_name: str = "preflight", api_name: str = "probe") -> tuple[str, str]:
        """("ok" | "warn" | "missing", what was found): can this environment answer calls at all?
        The arguments name an API to try (the first test query's, a call the server knows)."""
        return "ok", f"{self.name} tool environment"

    def close(self) -> None:
        """Release what the environment holds (the HTTP environments' open connections)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _answered(self, text: str, transport: str | None = None, api_error: bool | None = None) -> str:
        """Record the outcome of a call whose observation is `text` and pass `text` on: a transport
        error when `transport` says what failed, else an API error when `api_error` (by default:
        when the observation's error field is set)."""
        self.last_problem = transport
        if api_error is None:
            api_error = bool(json.loads(text).get("error"))
        self.last_outcome = TRANSPORT_ERROR if transport else API_ERROR if api_error else OK
        return text


def check_env(env, api: tuple = ()) -> str:
    """What `env.probe(*api)` found, or raise EnvUnavailable when nothing answers. Stage 03 calls it
    before its first query: notebook 03 also runs alone, and the pre-flight can be skipped."""
    status, detail = env.probe(*api) if hasattr(env, "probe") else ("ok", f"{type(env).__name__}: not probed")
    if status == "missing":
        raise EnvUnavailable(f"tool environment: {detail}")
    return detail


class OfflineToolEnv(ToolEnv):
    """Answers from recorded responses; the same call always gets the same answer.

    Matching rule, first hit wins, within the recordings of the same API (category, tool and API
    names compared standardized):
    1. exact: the arguments' canonical JSON (sorted keys) equals a recording's;
    2. loose: the same after standardizing parameter names, dropping empty values and comparing
       values as lowercase, stripped text (so 5 == "5", "Paris" == "paris ");
    3. required: the API's required parameters (from its tool document) agree loosely, other
       arguments ignored; APIs without required parameters match their first recording here.
    Otherwise the observation is an error "no recorded response", as is a call of an API with no
    recordings at all. Among several recordings that tie at one level, the first in the file wins.
    """

    name = "offline"

    def __init__(self, responses_path, tools_dir=None):
        self.responses_path = Path(responses_path)
        self.docs = load_tool_docs(tools_dir) if tools_dir else {}
        self.recordings: dict[tuple, list[dict]] = {}
        if not self.responses_path.exists():
            raise FileNotFoundError(f"no recorded responses at {self.responses_path}")
        with open(self.responses_path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{self.responses_path}: line {number}: not valid JSON ({err.msg})") from None
                for field in ("category", "tool_name", "api_name", "arguments", "response"):
                    if field not in record:
                        raise ValueError(f"{self.responses_path}: line {number}: missing field '{field}'")
                if not isinstance(record["arguments"], dict):
                    raise ValueError(f"{self.responses_path}: line {number}: field 'arguments' must be an object")
                key = api_key(record["category"], record["tool_name"], record["api_name"])
                self.recordings.setdefault(key, []).append(record)

    def _required(self, tool_name: str, api_name: str) -> set | None:
        api = find_api_doc(self.docs, tool_name, api_name)
        if api is None:
            return None
        return {change_name(standardize_name(p["name"])) for p in api.get("required_parameters", [])}

    def match(self, category, tool_name, api_name, arguments: dict) -> dict | None:
        recorded = self.recordings.get(api_key(category, tool_name, api_name), [])
        exact = canonical_arguments(arguments)
        for record in recorded:
            if canonical_arguments(record["arguments"]) == exact:
                return record
        loose = loose_arguments(arguments)
        for record in recorded:
            if loose_arguments(record["arguments"]) == loose:
                return record
        required = self._required(tool_name, api_name)
        if required is not None:
            want = loose_arguments(arguments, keep=required)
            for record in recorded:
                if loose_arguments(record["arguments"], keep=required) == want:
                    return record
        return None

    def call(self, category, tool_name, api_name, arguments):
        if not self.recordings.get(api_key(category, tool_name, api_name)):
            return self._answered(observation(error=f"No recorded response for API '{api_name}' of tool "
                                                    f"'{tool_name}' (offline tool environment)"))
        record = self.match(category, tool_name, api_name, arguments)
        if record is None:
            return self._answered(observation(
                error=f"No recorded response for API '{api_name}' of tool '{tool_name}' with arguments "
                      f"{canonical_arguments(arguments)} (offline tool environment)"))
        return self._answered(recorded_observation(record["response"]))

    def probe(self, *api):
        """The recordings loaded when the environment was made (a missing file raised there)."""
        n = sum(map(len, self.recordings.values()))
        return "ok" if n else "warn", f"offline: {n:,} recorded responses of {len(self.recordings):,} APIs"


def retry_wait(retry_after, attempt: int) -> float:
    """Seconds before retry `attempt` (from 0): the server's Retry-After in its seconds form, else
    (absent, or an HTTP date) 1, 2, 4 ... s; never more than MAX_RETRY_AFTER_S."""
    try:
        wait = float(retry_after)
    except (TypeError, ValueError):
        wait = 2.0 ** attempt
    return min(max(wait, 0.0), MAX_RETRY_AFTER_S)


def _client(timeout: float) -> httpx.Client:
    """An environment's HTTP client: `timeout` s for connecting and for each read and write;
    redirects followed; any other status comes back as a response (_send sorts them)."""
    return httpx.Client(timeout=timeout, follow_redirects=True)


@dataclasses.dataclass
class Reply:
    """What one HTTP call got: `status` (0: no answer), the body as text (UTF-8, undecodable bytes
    replaced), and `problem`, None for a 2xx, else what went wrong in the project's words
    ("<service> answered HTTP 500", "... gave no answer within 30 s", "... unreachable (...)")."""
    status: int
    text: str = ""
    problem: str | None = None
    timed_out: bool = False


def _send(client: httpx.Client, request: dict, timeout: float, service: str, retries: int = RETRIES,
          sleep=time.sleep) -> Reply:
    """One call of `service`; `request` is {method, url, headers, body}. Nothing answering within
    `timeout` s (`client`'s time-out) is status 0, timed_out. HTTP 429 and 502-504 (busy,
    temporarily down) are retried up to `retries` times, waiting as Retry-After asks (`sleep`: tests
    inject it); the last answer is returned, its body kept (RapidAPI's error bodies are observations)."""
    for attempt in range(retries + 1):
        try:
            reply = client.request(request["method"], request["url"], headers=request.get("headers"),
                                   content=request.get("body"))
        except httpx.TimeoutException:
            return Reply(0, "", f"{service} gave no answer within {timeout:g} s", timed_out=True)
        except (httpx.RequestError, httpx.InvalidURL) as err:    # refused, reset, no route, bad url
            detail = f": {err}" if str(err) else ""
            return Reply(0, "", f"{service} unreachable ({type(err).__name__}{detail})")
        text = reply.content.decode("utf-8", errors="replace")
        if reply.is_success:
            return Reply(reply.status_code, text)
        if reply.status_code in (429, 502, 503, 504) and attempt < retries:
            sleep(retry_wait(reply.headers.get("Retry-After"), attempt))
            continue
        return Reply(reply.status_code, text, f"{service} answered HTTP {reply.status_code}")


class _HttpToolEnv(ToolEnv):
    """An environment over HTTP: one client, made with the environment's time-out, for all its calls
    (it keeps connections open for the next call); closed by close(), or when the environment goes."""

    client = None

    def close(self):
        if self.client is not None:
            self.client.close()

    def __del__(self):
        self.close()


class VirtualToolEnv(_HttpToolEnv):
    """StableToolBench's virtual API server (server/main.py there, `get_virtual_response`).

    Request: HTTP POST to `url` (e.g. http://HOST:8080/virtual), JSON body
    `category` (the query's category_name), `tool_name` (standardized tool name), `api_name`
    (standardized API name, as in the function name), `tool_input` (the arguments as a JSON
    string), `strip` (how the server shortens long responses: "truncate", "filter" or "random"),
    `toolbench_key` (the user's ToolBench key, from an env var; may be empty for a local server),
    the key also in a `toolbench_key` header, as the upstream client sends it.
    Reply: a JSON object `{"error": ..., "response": ...}` (from the server's cache, the real API or
    its LLM simulation; `response` may be text or any JSON value).

    The observation is what StableToolBench's client (toolbench/inference/Downstream_tasks/
    rapidapi.py, rapidapi_wrapper._step) makes of the reply, byte for byte:
    - HTTP 200 with JSON: `json.dumps(reply)` (client_observation), the reply's keys in their order;
    - HTTP status other than 200: `{"error": "request invalid, data error. status_code=<N>",
      "response": ""}`;
    - a body that is not JSON: `{"error": "request invalid, data error", "response": ""}`;
    - no answer within the time-out: `{"error": "Timeout error...", "response": ""}` (upstream
      waits forever on a /virtual url, and gives up after 15 s on others).
    Where upstream's client stops with an exception instead, the project goes on with an
    observation of the same shape: a refused connection (requests' ConnectionError, not caught
    there) reads `{"error": "virtual API server unreachable (...)", "response": ""}`, and a JSON
    reply that is not an object with an "error" field (upstream: KeyError on response["error"])
    reads as a body it cannot use, "request invalid, data error". Unlike upstream, HTTP 429 and
    502-504 are retried first (RETRIES, Retry-After).

    The real server answers every API error (unknown tool, unparsable input) with HTTP 200 and an
    error field, and simulates unknown tools with its LLM; an HTTP error status means the call never
    reached an API (a wrong url path: 404/405/422; its simulator or upstream failed: 500), so any
    HTTP error here is a transport error, as are the replies above that the client cannot use.
    """

    name = "virtual"

    def __init__(self, url: str, toolbench_key: str = "", strip: str = "truncate", timeout: float = 60,
                 retries: int = RETRIES, sleep=time.sleep):
        self.url, self.key, self.strip, self.timeout = url, toolbench_key or "", strip, timeout
        self.retries, self.sleep = retries, sleep
        self.client = _client(timeout)

    def payload(self, category, tool_name, api_name, arguments) -> dict:
        return {"category": category, "tool_name": standardize_name(tool_name),
                "api_name": change_name(standardize_name(api_name)),
                "tool_input": json.dumps(arguments, ensure_ascii=False), "strip": self.strip,
                "toolbench_key": self.key}

    def _post(self, category, tool_name, api_name, arguments) -> Reply:
        request = {"method": "POST", "url": self.url,
                   "headers": {"Content-Type": "application/json", "toolbench_key": self.key},
                   "body": json.dumps(self.payload(category, tool_name, api_name, arguments)).encode()}
        return _send(self.client, request, self.timeout, "virtual API server", self.retries, self.sleep)

    def call(self, category, tool_name, api_name, arguments):
        reply = self._post(category, tool_name, api_name, arguments)
        if reply.timed_out:
            return self._answered(client_error(TIMEOUT_ERROR), transport=reply.problem)
        if reply.status == 0:
            return self._answered(client_error(reply.problem), transport=reply.problem)
        if reply.status != 200:
            return self._answered(client_error(STATUS_ERROR.format(status=reply.status)),
                                  transport=reply.problem or f"virtual API server answered HTTP {reply.status}")
        try:
            data = json.loads(reply.text)
        except json.JSONDecodeError:
            return self._answered(client_error(DATA_ERROR),
                                  transport=f"virtual API server answered HTTP 200 with a body that is not JSON: "
                                            f"{reply.text[:80]!r}")
        if not isinstance(data, dict) or "error" not in data:
            return self._answered(client_error(DATA_ERROR),
                                  transport=f"virtual API server answered JSON without an 'error' field: "
                                            f"{reply.text[:80]!r}")
        return self._answered(client_observation(data), api_error=bool(data["error"]))

    def probe(self, category="Data", tool_name="preflight", api_name="probe"):
        """One call. "missing": nothing answers at the url, or it answers HTTP 4xx (not
        StableToolBench's POST /virtual); "warn": connected but slow (the server simulates an
        uncached call with an LLM) or HTTP 5xx / 429 to this call; "ok": it answered."""
        reply = self._post(category, tool_name, api_name, {})
        at, call = f"virtual server {self.url}", f"a call of {tool_name}/{api_name}"
        if reply.problem is None:
            return "ok", f"{at} answered {call}"
        error, status = reply.problem.replace("virtual API server ", ""), reply.status
        if status >= 500 or status == 429 or reply.timed_out:
            return "warn", f"{at}: {error} to {call}"
        if status:
            return "missing", f"{at}: {error} to {call}; is inference.virtual_server_url the server's /virtual?"
        return "missing", f"{at}: {error}; start StableToolBench's server or set inference.virtual_server_url"


# ToolBench's RapidAPI route (toolbench/inference/server.py, process_error): the error label a
# response gets from its text, first match wins. (Its first test, for "The request to the API has
# timed out...", is followed by an `if` rather than an `elif`, so the chain below always overrides
# it: it never decides, and is left out here.)
RAPIDAPI_ERRORS = (
    (("Your Client (working) ---> Gateway (working) ---> API (not working)",), "API not working error..."),
    (("Unauthorized", "unauthorized"), "Unauthorized error..."),
    (("You are not subscribed to this API.",), "Unsubscribed error..."),
    (("Too many requests",), "Too many requests error..."),
    (("You have exceeded", "you are being rate limited"), "Rate limit error..."),
    (("Access restricted. Check credits balance or enter the correct API key.",), "Rate limit error..."),
    (("Oops, an error in the gateway has occurred.",), "Gateway error..."),
    (("Blocked User. Please contact your API provider.",), "Blocked error..."),
    (("error",), "Message error..."),
)
RAPIDAPI_RESPONSE_CHARS = 2048      # server.py get_rapidapi_response: str(observation)[:2048]


def rapidapi_error_label(response) -> str:
    """server.py process_error's label of a RapidAPI response (a parsed JSON value or text)."""
    text = str(response)
    for needles, label in RAPIDAPI_ERRORS:
        if any(n in text for n in needles):
            return label
    return ""


def rapidapi_observation(body: str) -> str:
    """The observation ToolBench makes of a RapidAPI reply `body`, byte for byte:
    the tool's api.py keeps `response.json()`, else `response.text`, whatever the HTTP status;
    server.py `get_rapidapi_response` labels it (process_error), writes it with str() (Python's
    repr for a dict or list, observation_shorten with strip "truncate") cut to 2048 characters, and
    returns {"error": label, "response": that text}; rapidapi.py `rapidapi_wrapper._step` then
    json.dumps-es that dict (client_observation)."""
    try:
        response = json.loads(body)
    except json.JSONDecodeError:
        response = body
    return client_observation({"error": rapidapi_error_label(response),
                               "response": str(response)[:RAPIDAPI_RESPONSE_CHARS]})


class RapidApiToolEnv(_HttpToolEnv):
    """Live RapidAPI calls built from the tool documents (url, method, parameter names).

    GET parameters go in the query string, other methods send them as a JSON body; the key travels
    in the X-RapidAPI-Key header and is never logged or written anywhere. The observation is
    ToolBench's (rapidapi_observation), also for an HTTP error status: its body is the API's answer.
    """

    name = "rapidapi"

    def __init__(self, tools_dir, rapidapi_key: str, timeout: float = 30, retries: int = RETRIES,
                 sleep=time.sleep):
        self.docs = load_tool_docs(tools_dir)
        self.key, self.timeout, self.retries, self.sleep = rapidapi_key, timeout, retries, sleep
        self.client = _client(timeout)

    def build_request(self, tool_name, api_name, arguments) -> dict:
        """{method, url, headers, body} of the call, or raise KeyError for an unknown API."""
        api = find_api_doc(self.docs, tool_name, api_name)
        if api is None or not api.get("url"):
            raise KeyError(f"no documentation with a url for API '{api_name}' of tool '{tool_name}'")
        # The model uses standardized parameter names; RapidAPI wants the documented ones.
        names = {change_name(standardize_name(p["name"])): p["name"]
                 for p in api.get("required_parameters", []) + api.get("optional_parameters", [])}
        params = {names.get(k, k): v for k, v in arguments.items()}
        url, method = api["url"], str(api.get("method") or "GET").upper()
        host = urllib.parse.urlparse(url).netloc
        headers = {"X-RapidAPI-Key": self.key, "X-RapidAPI-Host": host}
        # Path parameters written as {name} in the documented url are filled in.
        for name in list(params):
            if "{" + name + "}" in url:
                url = url.replace("{" + name + "}", urllib.parse.quote(str(params.pop(name)), safe=""))
        body = None
        if method == "GET":
            if params:
                url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
        else:
            headers["Content-Type"] = "application/json"
            body = json.dumps(params).encode()
        return {"method": method, "url": url, "headers": headers, "body": body}

    def call(self, category, tool_name, api_name, arguments):
        try:
            spec = self.build_request(tool_name, api_name, arguments)
        except KeyError as err:
            return self._answered(observation(error=str(err.args[0])))
        reply = _send(self.client, spec, self.timeout, "RapidAPI", self.retries, self.sleep)
        if reply.status == 0:
            # Nothing answered: in ToolBench the tool's api.py raised, and server.py run() made
            # {"error": "Function executing <import line> error...\n<exception>", "response": ""}.
            return self._answered(client_error(f"Function executing {_import_line(category, tool_name, api_name)}"
                                               f" error...\n{reply.problem}"), transport=reply.problem)
        text = rapidapi_observation(reply.text)
        if reply.problem and (reply.status >= 500 or reply.status == 429):
            return self._answered(text, transport=reply.problem)
        # Any other status is the API's answer: a 4xx one (bad parameters, not subscribed) an API
        # error whatever its label; a 2xx one an API error when ToolBench labels it one.
        return self._answered(text, api_error=True if reply.problem else None)

    def probe(self, category="", tool_name="", api_name=""):
        """The key is set and the API's host (else the first documented one) accepts a connection:
        a TCP connect, no call, as every call spends the user's quota."""
        if not self.key:
            return "missing", "RapidAPI: no key (set the environment variable inference.rapidapi_key_env names)"
        api = find_api_doc(self.docs, tool_name, api_name) if tool_name else None
        url = (api or {}).get("url") or next((a["url"] for d in self.docs.values() for a in d["api_list"]
                                              if a.get("url")), None)
        if url is None:
            return "missing", "RapidAPI: no tool document with a url (data.toolenv_dir/tools)"
        parts = urllib.parse.urlparse(url)
        host, port = parts.hostname, parts.port or (80 if parts.scheme == "http" else 443)
        try:
            socket.create_connection((host, port), timeout=self.timeout).close()
        except OSError as err:
            return "missing", f"RapidAPI: {host}:{port} unreachable ({type(err).__name__}: {err}); check the network"
        return "ok", f"RapidAPI: key set, {host} accepts connections (not called: calls cost quota)"


def _import_line(category: str, tool_name: str, api_name: str) -> str:
    """The import server.py's prepare_tool_name_and_url writes for a tool's api.py function, with
    get_rapidapi_response's default tools_root "data.toolenv.tools"."""
    standard_category = category.replace(" ", "_").replace(",", "_").replace("/", "_")
    while " " in standard_category or "," in standard_category:
        standard_category = standard_category.replace(" ", "_").replace(",", "_")
    standard_category = standard_category.replace("__", "_")
    return (f"from data.toolenv.tools.{standard_category}.{standardize_name(tool_name)}.api import "
            f"{change_name(standardize_name(api_name))}")


def make_env(cfg: dict) -> ToolEnv:
    """The environment the profile's inference.tool_env names."""
    inference_cfg = cfg.inference
    toolenv = config.path(cfg, cfg.data.toolenv_dir)
    kind, timeout = inference_cfg.tool_env, inference_cfg.tool_timeout_s or 60
    if kind == "offline":
        return OfflineToolEnv(toolenv / "responses.jsonl", toolenv / "tools")
    if kind == "virtual":
        return VirtualToolEnv(inference_cfg.virtual_server_url, keys.secret(inference_cfg.toolbench_key_env, required=False),
                              timeout=timeout)
    if kind == "rapidapi":
        return RapidApiToolEnv(toolenv / "tools", keys.secret(inference_cfg.rapidapi_key_env), timeout=timeout)
    raise ValueError(f"inference.tool_env must be offline, virtual or rapidapi, got '{kind}'")
