"""The live RapidAPI endpoints as a tool environment, requests built from the tool documents, the
user's key from an environment variable; observations as ToolBench's RapidAPI route writes them."""
from __future__ import annotations

import json
import socket
import time
import urllib.parse

from lib.toolbench.formats import change_name, standardize_name
from lib.toolbench.apis import find_api_doc, load_tool_docs
from lib.toolbench.observations import client_error, observation, rapidapi_observation
from lib.toolbench.http_client import RETRIES, HttpToolEnv, new_client, send


class RapidApiToolEnv(HttpToolEnv):
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
        self.client = new_client(timeout)

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
        reply = send(self.client, spec, self.timeout, "RapidAPI", self.retries, self.sleep)
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

