"""The interface every tool environment implements, and what a call's outcome is.

`call(category, tool_name, api_name, arguments) -> observation`: the names are the query's api_list
names (as written in test_instruction/*.json), the observation ToolBench's JSON text
(lib/toolbench/observations.py). Each call also leaves its outcome in `env.last_outcome`: "ok",
"api_error" (the API answered with an error) or "transport_error" (no answer: the environment itself
failed), and in `env.last_problem` what went wrong in the project's words (None when the call got an
answer). Stage 03 counts them, and stops a run whose environment fails.
"""
from __future__ import annotations

import json

OK, API_ERROR, TRANSPORT_ERROR = "ok", "api_error", "transport_error"


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
