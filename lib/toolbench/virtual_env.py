"""StableToolBench's virtual API server as a tool environment, its observations byte for byte as
StableToolBench's own inference client writes them."""
from __future__ import annotations

import json
import time

from lib.toolbench.formats import change_name, standardize_name
from lib.toolbench.observations import DATA_ERROR, STATUS_ERROR, TIMEOUT_ERROR, client_error, client_observation
from lib.toolbench.http_client import RETRIES, HttpToolEnv, Reply, new_client, send


class VirtualToolEnv(HttpToolEnv):
    """StableToolBench's virtual API server (server/main.py there, `get_virtual_response`), by POST.

    The observation is what StableToolBench's own client makes of the reply, byte for byte. Where
    that client stops with an exception, this one returns an observation of the same shape, and any
    HTTP error status is a transport error, since the server answers API errors with HTTP 200.
    Unlike upstream, HTTP 429 and 502-504 are retried first (RETRIES, Retry-After). The request,
    replies and observations: docs/formats.md, "03 inference".
    """

    name = "virtual"

    def __init__(self, url: str, toolbench_key: str = "", strip: str = "truncate", timeout: float = 60,
                 retries: int = RETRIES, sleep=time.sleep):
        self.url, self.key, self.strip, self.timeout = url, toolbench_key or "", strip, timeout
        self.retries, self.sleep = retries, sleep
        self.client = new_client(timeout)

    def payload(self, category, tool_name, api_name, arguments) -> dict:
        return {"category": category, "tool_name": standardize_name(tool_name),
                "api_name": change_name(standardize_name(api_name)),
                "tool_input": json.dumps(arguments, ensure_ascii=False), "strip": self.strip,
                "toolbench_key": self.key}

    def _post(self, category, tool_name, api_name, arguments) -> Reply:
        request = {"method": "POST", "url": self.url,
                   "headers": {"Content-Type": "application/json", "toolbench_key": self.key},
                   "body": json.dumps(self.payload(category, tool_name, api_name, arguments)).encode()}
        return send(self.client, request, self.timeout, "virtual API server", self.retries, self.sleep)

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

