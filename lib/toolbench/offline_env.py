"""The offline tool environment: recorded responses (toolenv/responses.jsonl), deterministic, no network."""
from __future__ import annotations

import json
from pathlib import Path

from lib.toolbench.formats import change_name, standardize_name
from lib.toolbench.apis import api_names, canonical_arguments, find_api_doc, load_tool_docs, loose_arguments
from lib.toolbench.observations import observation, recorded_observation
from lib.toolbench.tool_env import ToolEnv


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
                key = api_names(record["category"], record["tool_name"], record["api_name"])
                self.recordings.setdefault(key, []).append(record)

    def _required(self, tool_name: str, api_name: str) -> set | None:
        api = find_api_doc(self.docs, tool_name, api_name)
        if api is None:
            return None
        return {change_name(standardize_name(p["name"])) for p in api.get("required_parameters", [])}

    def match(self, category, tool_name, api_name, arguments: dict) -> dict | None:
        recorded = self.recordings.get(api_names(category, tool_name, api_name), [])
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
        if not self.recordings.get(api_names(category, tool_name, api_name)):
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

