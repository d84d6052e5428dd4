"""Tool environments: what answers the model's API calls during inference.

All of them share one interface, `call(category, tool_name, api_name, arguments) -> observation`,
where the names are the query's api_list names (as written in test_instruction/*.json) and the
observation is ToolBench's JSON text `{"error": "...", "response": ...}`.

- `OfflineToolEnv`: recorded responses (toolenv/responses.jsonl), deterministic, no network.
- `VirtualToolEnv`: a StableToolBench-style virtual API server over HTTP.
- `RapidApiToolEnv`: the live RapidAPI endpoints, with the user's key (from an env var).
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from lib.agent import change_name, standardize_name


def observation(response="", error: str = "") -> str:
    """ToolBench's observation text."""
    return json.dumps({"error": error, "response": response}, ensure_ascii=False)


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


class ToolEnv:
    """The interface every environment implements."""

    name = "base"

    def call(self, category: str, tool_name: str, api_name: str, arguments: dict) -> str:
        raise NotImplementedError


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
            return observation(error=f"No recorded response for API '{api_name}' of tool '{tool_name}' "
                                     "(offline tool environment)")
        record = self.match(category, tool_name, api_name, arguments)
        if record is None:
            return observation(error=f"No recorded response for API '{api_name}' of tool '{tool_name}' "
                                     f"with arguments {canonical_arguments(arguments)} (offline tool environment)")
        return recorded_observation(record["response"])


def _send(request, timeout: float, service: str) -> tuple[str, str | None]:
    """(reply text, None), or ("", an error observation) when `service` fails or cannot be reached."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.read().decode("utf-8", errors="replace"), None
    except urllib.error.HTTPError as err:
        return "", observation(error=f"{service} answered HTTP {err.code}")
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        return "", observation(error=f"{service} unreachable ({type(err).__name__})")


class VirtualToolEnv(ToolEnv):
    """StableToolBench's virtual API server (server/main.py there).

    Request: HTTP POST to `url` (e.g. http://HOST:8080/virtual), JSON body
    `category` (the query's category_name), `tool_name` (standardized tool name), `api_name`
    (standardized API name, as in the function name), `tool_input` (the arguments as a JSON
    string), `strip` (how the server shortens long responses: "truncate", "filter" or "random"),
    `toolbench_key` (the user's ToolBench key, from an env var; may be empty for a local server).
    Reply: JSON `{"error": ..., "response": ...}`, passed on as the observation.
    """

    name = "virtual"

    def __init__(self, url: str, toolbench_key: str = "", strip: str = "truncate", timeout: float = 60):
        self.url, self.key, self.strip, self.timeout = url, toolbench_key or "", strip, timeout

    def payload(self, category, tool_name, api_name, arguments) -> dict:
        return {"category": category, "tool_name": standardize_name(tool_name),
                "api_name": change_name(standardize_name(api_name)),
                "tool_input": json.dumps(arguments, ensure_ascii=False), "strip": self.strip,
                "toolbench_key": self.key}

    def call(self, category, tool_name, api_name, arguments):
        body = json.dumps(self.payload(category, tool_name, api_name, arguments)).encode()
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        text, failed = _send(request, self.timeout, "virtual API server")
        if failed:
            return failed
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return observation(text)
        if isinstance(data, dict) and ("error" in data or "response" in data):
            return observation(data.get("response", ""), str(data.get("error") or ""))
        return observation(data)


class RapidApiToolEnv(ToolEnv):
    """Live RapidAPI calls built from the tool documents (url, method, parameter names).

    GET parameters go in the query string, other methods send them as a JSON body; the key travels
    in the X-RapidAPI-Key header and is never logged or written anywhere.
    """

    name = "rapidapi"

    def __init__(self, tools_dir, rapidapi_key: str, timeout: float = 30):
        self.docs = load_tool_docs(tools_dir)
        self.key, self.timeout = rapidapi_key, timeout

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
            return observation(error=str(err.args[0]))
        request = urllib.request.Request(spec["url"], data=spec["body"], method=spec["method"],
                                         headers=spec["headers"])
        text, failed = _send(request, self.timeout, "RapidAPI")
        if failed:
            return failed
        try:
            return observation(json.loads(text))
        except json.JSONDecodeError:
            return observation(text)


def secret(env_var: str | None, required: bool = True) -> str:
    """A key from the environment variable the config names (never from the config itself)."""
    value = os.environ.get(env_var or "", "")
    if required and not value:
        raise RuntimeError(f"set the environment variable {env_var} (named in the config) to your key")
    return value


def make_env(cfg: dict) -> ToolEnv:
    """The environment the profile's inference.tool_env names."""
    from lib import config

    inf = cfg["inference"]
    toolenv = config.path(cfg, cfg["data"]["toolenv_dir"])
    kind = inf["tool_env"]
    if kind == "offline":
        return OfflineToolEnv(toolenv / "responses.jsonl", toolenv / "tools")
    if kind == "virtual":
        return VirtualToolEnv(inf["virtual_server_url"], secret(inf["toolbench_key_env"], required=False))
    if kind == "rapidapi":
        return RapidApiToolEnv(toolenv / "tools", secret(inf["rapidapi_key_env"]))
    raise ValueError(f"inference.tool_env must be offline, virtual or rapidapi, got '{kind}'")
