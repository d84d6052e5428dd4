"""ToolBench's formats, as its public code writes them: the one place a rule of theirs lives.

Names (`standardize_name`, `change_name`, `api_function_name`), test queries and their functions
(`load_queries`, `functions_for_query`, `Query`), the system prompt, the assistant step
(`format_step`, `parse_step` -> `Step`) and ToolEval's converted answer (`tooleval_answer`), checked
against OpenBMB/ToolBench's code and the sample files in toolbench-sample/ (docs/formats.md).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple

# ToolBench's name rules (toolbench/utils.py::standardize, change_name), re-implemented.
_NOT_NAME_CHAR = re.compile("[^\u4e00-\u9fa5a-zA-Z0-9_^]")   # '^' is kept: a quirk of the original
_RESERVED = {"from", "class", "return", "false", "true", "id", "and"}
MAX_NAME = 64
DESCRIPTION_MAX = 256
TOOL_DESCRIPTION_MAX = 512
_TYPES = {"NUMBER": "integer", "STRING": "string", "BOOLEAN": "boolean"}

def _finish(description: str) -> dict:
    return {
        "name": "Finish",
        "description": description,
        "parameters": {
            "type": "object",
            "properties": {
                "return_type": {"type": "string", "enum": ["give_answer", "give_up_and_restart"]},
                "final_answer": {
                    "type": "string",
                    "description": "The final answer you want to give the user. You should have this "
                                   "field if \"return_type\"==\"give_answer\"",
                },
            },
            "required": ["return_type"],
        },
    }


# ToolBench's Finish function, as its inference code (rapidapi.py) and StableToolBench write it; the
# released training answers hold this wording and the older FINISH_V1 wording about equally often.
FINISH = _finish(
    "If you believe that you have obtained a result that can answer the task, please call this function "
    "to provide the final answer. Alternatively, if you recognize that you are unable to proceed with the "
    "task in the current state, call this function to restart. Remember: you must ALWAYS call this "
    "function at the end of your attempt, and the only part that will be shown to the user is the final "
    "answer, so it should contain sufficient information.")
FINISH_V1 = _finish(
    "If you think you get the result which can answer the task, call this function to give the final "
    "answer. Or, if you think you can't handle the task from this status, call this function to restart. "
    "Remember: you should ALWAYS call this function at the end of your try, and the final answer is the "
    "ONLY part that will be showed to user, so final answer should contain enough information.")

SYSTEM_PROMPT = (
    "You are AutoGPT, you can use many tools(functions) to do the following task.\n"
    "First I will give you the task description, and your task start.\n"
    "At each step, you need to give your thought to analyze the status now and what to do next, with a "
    "function call to actually excute your step. Your output should follow this format:\nThought:\nAction\n"
    "Action Input:\n\n"
    "After the call, you will get the call result, and you are now in a new state.\n"
    "Then you will analyze your status now, then decide what to do next...\n"
    "After many (Thought-call) pairs, you finally perform the task, then you can give your finial answer.\n"
    "Remember: \n"
    "1.the state change is irreversible, you can't go back to one of the former state, if you want to "
    "restart the task, say \"I give up and restart\".\n"
    "2.All the thought is short, at most in 5 sentence.\n"
    "3.You can do more then one trys, so if your plan is to continusly try some conditions, you can do one "
    "of the conditions per try.\n"
    "Let's Begin!\n"
    "Task description: {task_description}"
)

TASK_DESCRIPTION = (
    "You should use functions to help handle the real time user querys. Remember:\n"
    "1.ALWAYS call \"Finish\" function at the end of the task. And the final answer should contain enough "
    "information to show to the user,If you can't handle the task, or you find that function calls always "
    "fail(the function is not valid now), use function Finish->give_up_and_restart.\n"
    "2.Do not use origin tool names, use only subfunctions' names.\n"
    "You have access of the following tools:\n"
)


# The sentence ToolBench's process_system_message anchors on, and what it adds after it.
SYSTEM_ANCHOR = "with a function call to actually excute your step."
SYSTEM_FORMAT = " Your output should follow this format:\nThought:\nAction\nAction Input:\n"
APIS_PREFIX = "\nSpecifically, you have access to the following APIs: "


class QueryError(ValueError):
    """A test query record that does not fit ToolBench's format."""


def standardize_name(name: str) -> str:
    """ToolBench's `standardize`: non-name characters to '_', runs of '_' collapsed, lowercase,
    '_' stripped at both ends, and a leading digit prefixed with 'get_'."""
    name = _NOT_NAME_CHAR.sub("_", str(name))
    name = re.sub(r"_+", "_", name).lower().strip("_")
    if name and name[0].isdigit():
        name = "get_" + name
    return name


def change_name(name: str) -> str:
    """ToolBench's `change_name`: Python keywords and 'id' get an 'is_' prefix."""
    return "is_" + name if name in _RESERVED else name


def api_function_name(api_name: str, tool_name: str) -> str:
    """`<api>_for_<tool>`, both standardized; ToolBench keeps the LAST 64 characters."""
    return f"{change_name(standardize_name(api_name))}_for_{standardize_name(tool_name)}"[-MAX_NAME:]


def _parameter(param: dict) -> dict:
    prop = {"type": _TYPES.get(param.get("type"), "string"),
            "description": str(param.get("description") or "")[:DESCRIPTION_MAX]}
    default = param.get("default", "")
    if len(str(default if default is not None else "")) != 0:
        prop["example_value"] = default
    return prop


def api_to_function(api: dict) -> dict:
    """One api_list entry -> ToolBench's function dict (rapidapi.py::api_json_to_openai_json)."""
    tool = standardize_name(api["tool_name"])
    name = api_function_name(api["api_name"], api["tool_name"])
    description = f"This is the subfunction for tool \"{tool}\", you can use this tool."
    api_description = str(api.get("api_description") or "").strip()
    if api_description:
        api_description = api_description.replace(api["api_name"], name)[:DESCRIPTION_MAX]
        description += f"The description of this function is: \"{api_description}\""
    parameters = {"type": "object", "properties": {}, "required": [], "optional": []}
    # As in ToolBench, optional parameters are listed only when the API has required ones.
    if api.get("required_parameters"):
        for kind, params in (("required", api["required_parameters"]),
                             ("optional", api.get("optional_parameters") or [])):
            for param in params:
                pname = change_name(standardize_name(param["name"]))
                parameters["properties"][pname] = _parameter(param)
                parameters[kind].append(pname)
    return {"name": name, "description": description, "parameters": parameters}


API_FIELDS = ("category_name", "tool_name", "api_name")


def check_query(query: dict, where: str = "query", index: int | None = None) -> None:
    """Raise QueryError naming the file, record index / query_id and field of a malformed query."""
    qid = query.get("query_id") if isinstance(query, dict) else None
    at = f"{where}: record {index}" + (f" (query_id {qid})" if qid is not None else "")
    if not isinstance(query, dict):
        raise QueryError(f"{at}: a query must be a JSON object, got {type(query).__name__}")
    for field in ("query", "query_id", "api_list"):
        if field not in query:
            raise QueryError(f"{at}: missing field '{field}'")
    if not isinstance(query["query"], str) or not query["query"].strip():
        raise QueryError(f"{at}: field 'query' must be a non-empty string")
    if not isinstance(query["api_list"], list) or not query["api_list"]:
        raise QueryError(f"{at}: field 'api_list' must be a non-empty list")
    for i, api in enumerate(query["api_list"]):
        if not isinstance(api, dict):
            raise QueryError(f"{at}: field 'api_list[{i}]' must be an object")
        for field in API_FIELDS:
            if not isinstance(api.get(field), str) or not api[field]:
                raise QueryError(f"{at}: field 'api_list[{i}].{field}' missing or not a string")
        for field in ("required_parameters", "optional_parameters"):
            params = api.get(field, [])
            if not isinstance(params, list) or any(not isinstance(p, dict) or "name" not in p
                                                   for p in params):
                raise QueryError(f"{at}: field 'api_list[{i}].{field}' must be a list of "
                                 "{name, type, description, default}")


def functions_for_query(query: dict, finish: dict = FINISH) -> list[dict]:
    """The query's api_list as ToolBench function dicts, then Finish (the prompt's function list)."""
    check_query(query)
    return [api_to_function(api) for api in query["api_list"]] + [finish]


def tool_descriptions_for_query(query: dict, tool_docs: dict | None = None) -> list[tuple[str, str]]:
    """(standardized tool name, tool description) per distinct tool of the query, in order.

    `tool_docs` maps standardized tool names to their documentation's `tool_description`
    (toolenv/tools/<category>/<tool>.json); a tool without one is described as "None", as ToolBench
    does for empty descriptions.
    """
    tool_docs = tool_docs or {}
    seen: dict[str, str] = {}
    for api in query["api_list"]:
        tool = standardize_name(api["tool_name"])
        if tool not in seen:
            seen[tool] = str(tool_docs.get(tool) or "")
    return list(seen.items())


def system_prompt(functions: list[dict], tools: list[tuple[str, str]] | None = None) -> str:
    """ToolBench's system prompt (as in its training records) with the functions appended.

    `tools` are (standardized tool name, description) pairs for the task description's tool list;
    when None they are derived from the function names with description "None".
    """
    if tools is None:
        tools = []
        for fn in functions:
            if fn["name"] != "Finish" and "_for_" in fn["name"]:
                tool = fn["name"].rsplit("_for_", 1)[1]
                if tool not in [t for t, _ in tools]:
                    tools.append((tool, ""))
    task = TASK_DESCRIPTION
    for k, (tool, description) in enumerate(dict(tools).items()):
        description = str(description)[:TOOL_DESCRIPTION_MAX].replace("\n", "").strip() or "None"
        task += f"{k + 1}.{tool}: {description}\n"
    return (SYSTEM_PROMPT.replace("{task_description}", task)
            + "\nSpecifically, you have access to the following APIs: " + str(functions))


def user_message(query: str) -> str:
    """ToolBench's user turn."""
    return f"\n{query}\nBegin!\n"


def format_step(thought: str, action: str, action_input: str) -> str:
    """An assistant turn as in ToolBench's training records."""
    return f"\nThought: {thought}\nAction: {action}\nAction Input: {action_input}"


def process_system_message(system_message: str, functions: list) -> str:
    """ToolBench's system prompt: the ReAct format after the anchor, the functions appended as a repr."""
    if SYSTEM_ANCHOR not in system_message:
        raise ValueError(f"system message lacks ToolBench's sentence {SYSTEM_ANCHOR!r}")
    return (system_message.replace(SYSTEM_ANCHOR, SYSTEM_ANCHOR + SYSTEM_FORMAT)
            + APIS_PREFIX + str(functions))


class Step(NamedTuple):
    """One parsed assistant turn; `error` is None when it is a usable call."""
    thought: str
    action: str
    action_input: str
    error: str | None


def parse_step(text: str, function_names=None) -> Step:
    """THE parser of one assistant turn -> Step(thought, action, action_input, error).

    Accepts `Thought: ...\\nAction: <fn>\\nAction Input: <json>` (leading whitespace and an eos
    already stripped by the caller are fine). `error` is None when the step is usable, else a short
    reason: missing Action, missing Action Input, unknown function (when `function_names` is given),
    or Action Input that is not a JSON object. Whatever parsed is returned even with an error.
    """
    text = text or ""
    a = text.find("\nAction:")
    if a < 0 and text.lstrip().startswith("Action:"):
        a = text.find("Action:") - 1
    thought_part = text if a < 0 else text[:a + 1]
    t = thought_part.find("Thought:")
    thought = (thought_part[t + len("Thought:"):] if t >= 0 else thought_part).strip()
    if a < 0:
        return Step(thought, "", "", "missing 'Action:'")
    rest = text[a + 1 + len("Action:"):]
    i = rest.find("\nAction Input:")
    if i < 0:
        return Step(thought, rest.strip(), "", "missing 'Action Input:'")
    action = rest[:i].strip()
    action_input = rest[i + len("\nAction Input:"):].strip()
    if not action:
        return Step(thought, action, action_input, "empty Action")
    if function_names is not None and action not in function_names:
        return Step(thought, action, action_input, f"unknown function '{action}'")
    try:
        args = json.loads(action_input, strict=False) if action_input else {}
    except json.JSONDecodeError as err:
        return Step(thought, action, action_input, f"Action Input is not valid JSON ({err.msg})")
    if not isinstance(args, dict):
        return Step(thought, action, action_input, "Action Input must be a JSON object")
    return Step(thought, action, action_input, None)


class Query:
    """A test query made ready for the loop: its functions, prompt and function -> API map."""

    def __init__(self, record: dict, group: str, tool_docs: dict | None = None):
        self.record, self.group = record, group
        self.tool_calls: list[tuple[str, str]] = []     # (outcome, observation) of each call made
        self.query_id, self.text = record["query_id"], record["query"]
        self.functions = functions_for_query(record)
        self.apis = {api_function_name(a["api_name"], a["tool_name"]): a for a in record["api_list"]}
        self.system = system_prompt(self.functions, tool_descriptions_for_query(record, tool_docs))

    def start(self) -> list[dict]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user_message(self.text)}]


def load_queries(path) -> list[dict]:
    """test_instruction/<group>.json, every record checked (errors name file, index, query_id, field)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no test queries at {path}")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise QueryError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(records, list):
        raise QueryError(f"{path}: expected a JSON list of queries")
    first_seen = {}
    for i, record in enumerate(records):
        check_query(record, str(path), i)
        # A repeated id would be run twice and judged against one of the two queries' APIs.
        qid = str(record["query_id"])
        if qid in first_seen:
            raise QueryError(f"{path}: records {first_seen[qid]} and {i} share query_id {record['query_id']!r}; "
                             "each query needs its own id")
        first_seen[qid] = i
    return records


# ---------------------------------------------------------------------------------------------
# ToolEval's converted answer (ToolBench tooleval/convert_to_answer_format.py, checked against the
# real converted files in toolbench-sample/).
# ---------------------------------------------------------------------------------------------

def tooleval_answer(query_text: str, method: str, steps: list[dict], finish_type: str,
                    truncate: bool = False) -> dict:
    """{method, total_steps, final_answer, answer_details} as ToolEval's converter writes it.

    answer_details is a one-path tree of {role, message, next}: system (message ""), user (the
    query), then per step a 'tool' node {name, arguments, response} (Finish's response is ""). As
    the converter does, a finished run (give_answer: ToolBench's valid_data) lists only the calls;
    an unfinished one also has an 'assistant' node with each Thought before its call.
    final_answer is Finish's raw Action Input (a JSON string), "" without a give_answer.
    With `truncate`, messages are str()-ed and cut to 100 characters, like ToolBench's original
    converter (StableToolBench's keeps them whole, which is the default here).
    """
    nodes = [("system", ""), ("user", query_text)]
    for step in steps:
        if finish_type != "give_answer" and step["thought"]:
            nodes.append(("assistant", step["thought"]))
        if step["action"]:
            nodes.append(("tool", {"name": step["action"], "arguments": step["action_input"],
                                   "response": "" if step["action"] == "Finish" else step["observation"]}))
    if truncate:
        nodes = [(role, str(message)[:100] if role != "system" else "") for role, message in nodes]
    final = steps[-1]["action_input"] if finish_type == "give_answer" else ""
    return {"method": method, "total_steps": len(nodes), "final_answer": final,
            "answer_details": answer_details(nodes)}


def answer_details(nodes: list[tuple[str, object]]) -> list[dict]:
    """ToolEval's answer_details for one path of (role, message) nodes: each node's `next` holds
    the one after it."""
    details: list[dict] = []
    for role, message in reversed(nodes):
        details = [{"role": role, "message": message, "next": details}]
    return details


TOOLEVAL_METHOD = {"react": "CoT@1", "dfsdt": "DFS_woFilter_w2"}
