"""ToolBench's observation text, `{"error": "...", "response": ...}`, as each source writes it: the
offline recordings and the sample corpus, ToolBench's and StableToolBench's inference client
(`json.dumps` of a server's reply, Python's defaults), ToolBench's RapidAPI route; and whether an
observation reports an error.
"""
from __future__ import annotations

import json


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


def reports_error(text) -> bool:
    """Whether an observation says its call failed: ToolBench's `{"error": ..., "response": ...}`
    with an error set (blank text is none). Anything else, not JSON or not an object, reports none.
    Stage 03's outcome of a call, stage 04's checks and stage 01's retried calls all ask this."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return False
    error = data.get("error") if isinstance(data, dict) else None
    return bool(error.strip() if isinstance(error, str) else error)


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

