"""BFCL's questions as ToolBench queries, and the model's steps read back as BFCL's call list.

Issue 23, item 1: each question's functions go into ToolBench's system prompt (BFCL's schema
mapped to ToolBench's, then Finish), its user turn is the query; the calls the model makes are the
prediction `lib/checks/bfcl_rules.py` scores. The mapping follows what BFCL itself does for models
whose function names cannot hold dots (bfcl_eval/model_handler/utils.py::convert_to_tool, its
GORILLA_TO_OPENAPI types, the question's own system message after the prompt). A step that does
not parse becomes the exception BFCL's rules score as wrong, with its reason (item 5).
"""
from __future__ import annotations

import json

from lib.toolbench import formats

# BFCL's parameter types as JSON-schema types (BFCL's GORILLA_TO_OPENAPI): tuples are JSON arrays,
# and "any" is offered as a string, as BFCL offers it and as bfcl_rules reads it.
JSON_TYPES = {"string": "string", "integer": "integer", "float": "number", "boolean": "boolean",
              "array": "array", "tuple": "array", "dict": "object", "any": "string"}


class StepError(ValueError):
    """An assistant step that does not parse as a ToolBench step; its message is the reason."""


def presented_name(name: str) -> str:
    """A BFCL name as the model sees it: '.' (a class's method) becomes '_', as BFCL does for
    function-calling APIs whose names allow only [a-zA-Z0-9_-]; ToolBench's names are of that kind."""
    return name.replace(".", "_")


def names(question) -> dict[str, str]:
    """Presented name -> BFCL name, for the question's functions; refuses names that would collide
    (with each other or with Finish), since the map back must be exact."""
    out: dict[str, str] = {}
    for function in question.functions:
        shown = presented_name(function["name"])
        if shown in out or shown == formats.FINISH["name"]:
            raise ValueError(f"{question.id}: function {function['name']!r} is presented as {shown!r}, "
                             "which another function of the question already uses")
        out[shown] = function["name"]
    return out


def _schema(schema: dict) -> dict:
    # One parameter (or item, or key of a dict parameter) in JSON schema; nested schemas mapped alike.
    out = {"type": JSON_TYPES.get(schema.get("type"), "string")}
    description = str(schema.get("description") or "")
    if "default" in schema:
        # ToolBench's only such field, example_value, is an example to copy; a default is what
        # leaving the parameter out means, so it is said in words, as BFCL does for Gemini.
        description = f"{description} Default is: {schema['default']}.".strip()
    if description or "description" in schema:
        out["description"] = description
    if "enum" in schema:
        out["enum"] = list(schema["enum"])
    if "items" in schema:
        out["items"] = _schema(schema["items"])
    if "properties" in schema:
        out["properties"] = {k: _schema(v) for k, v in schema["properties"].items()}
    if "required" in schema:
        out["required"] = list(schema["required"])
    return out


def function(doc: dict) -> dict:
    """One BFCL function document in ToolBench's function shape (formats.api_to_function's):
    name, description, parameters {type object, properties, required, optional}. Parameter names and
    descriptions are kept whole: the model's JSON keys must be BFCL's, and BFCL's descriptions carry
    the formats the answers need (ToolBench's 256-character cut would lose some)."""
    params = doc.get("parameters") or {}
    properties = {name: _schema(schema) for name, schema in (params.get("properties") or {}).items()}
    required = [p for p in params.get("required", []) if p in properties]
    return {"name": presented_name(doc["name"]), "description": str(doc.get("description") or ""),
            "parameters": {"type": "object", "properties": properties, "required": required,
                           "optional": [p for p in properties if p not in required]}}


def functions(question) -> list[dict]:
    """The system prompt's function list: the question's functions, then ToolBench's Finish."""
    names(question)     # the names must map back exactly
    return [function(doc) for doc in question.functions] + [formats.FINISH]


def _turn(question) -> list[dict]:
    if len(question.turns) != 1:
        raise ValueError(f"{question.id}: {len(question.turns)} turns; only single-turn questions are asked")
    return question.turns[0]


def system(question) -> str:
    """ToolBench's system prompt with the question's functions. BFCL's functions belong to no
    RapidAPI tool, so the task description's tool list is empty; a system message of the question's
    own follows the prompt after a blank line, where BFCL puts it after its own prompt."""
    prompt = formats.system_prompt(functions(question), tools=[])
    own = [m["content"] for m in _turn(question) if m["role"] == "system"]
    return "\n\n".join([prompt] + own)


def messages(question) -> list[dict]:
    """The chat the model continues: the system prompt, then the turn's other messages in order,
    each user message as ToolBench's user turn (a few live_irrelevance questions hold several user
    messages and earlier assistant replies; they are kept, as BFCL keeps them)."""
    out = [{"role": "system", "content": system(question)}]
    for message in _turn(question):
        if message["role"] == "user":
            out.append({"role": "user", "content": formats.user_message(message["content"])})
        elif message["role"] != "system":
            out.append({"role": message["role"], "content": message["content"]})
    return out


def is_parallel(category: str) -> bool:
    """Whether the category's answer is several calls (bfcl_rules' dispatch: 'parallel' in the name)."""
    return "parallel" in category


def _call(number: int, text: str, names: dict[str, str]):
    """One step -> ('finish', None), ('call', {name: args}); raises StepError naming the step."""
    step = formats.parse_step(text)
    if step.error:
        raise StepError(f"step {number}: {step.error}")
    if step.action == formats.FINISH["name"]:
        return "finish", None
    args = json.loads(step.action_input, strict=False) if step.action_input else {}
    # An unknown name stays as written: BFCL counts it as a call, and its rules name it wrong.
    return "call", {names.get(step.action, step.action): args}


def prediction(steps_text: list[str], names: dict[str, str], parallel: bool = False):
    """The model's assistant steps -> BFCL's call list, or the StepError of the first step that
    does not parse (bfcl_rules scores it wrong with its reason; for irrelevance it is no call, BFCL's
    rule). Only the first step counts unless `parallel`: then every call before Finish. Finish first,
    or no step at all, is the empty list (no call). `names` maps presented names back to BFCL's."""
    calls = []
    for number, text in enumerate(steps_text if parallel else steps_text[:1], 1):
        try:
            kind, call = _call(number, text, names)
        except StepError as err:
            return err
        if kind == "finish":
            break
        calls.append(call)
    return calls


def prediction_for(question, steps_text: list[str]):
    """`prediction` with the question's names and its category's rule on how many steps count."""
    return prediction(steps_text, names(question), is_parallel(question.category))
