"""First-step accuracy: is the model's first move on a test query a sensible tool call?

A measure that a few CPU-minutes of training can move, where the pass rate cannot yet: the first
assistant turn parses, names one of the query's functions, holds its required parameters and takes
their values from the query (docs/judging.md, "First-step accuracy"). Stage 02's learning curve and
stage 03's first-step table (lib/infer/first_step_report.py) score with it.
"""
from __future__ import annotations

import json

from lib.toolbench import formats
from lib.checks import grounding

CRITERIA = ("parses", "names_function", "has_required", "values_from_query")


def _required(functions: list[dict]) -> dict[str, list[str]]:
    # A function written without "parameters" or "required" (hand-made or foreign data) requires nothing.
    return {fn["name"]: (fn.get("parameters") or {}).get("required") or []
            for fn in functions if fn.get("name") and fn["name"] != "Finish"}


def check(text: str, query: dict) -> dict:
    """The four criteria and `correct` for one generated first turn on a test query."""
    return check_against(text, formats.functions_for_query(query), query["query"])


def check_against(text: str, functions: list[dict], query_text: str) -> dict:
    """The four criteria and `correct` for a first turn, given the functions its prompt listed."""
    required = _required(functions)
    _, action, action_input, error = formats.parse_step(text)
    result = dict.fromkeys(CRITERIA, False)
    result["parses"] = error is None
    if result["parses"]:
        args = json.loads(action_input, strict=False) if action_input else {}
        result["names_function"] = action in required
        needed = required.get(action, [])
        result["has_required"] = result["names_function"] and all(p in args for p in needed)
        result["values_from_query"] = result["has_required"] and all(
            grounding.stated_in(args[p], query_text) for p in needed)
    result["correct"] = all(result[c] for c in CRITERIA)
    return result


def first_turn(line: dict) -> str:
    """The first assistant turn of a trajectory line in ToolBench's layout, rebuilt from its parsed
    fields (a turn with no Action rebuilds with an empty one, which fails `parses` as it did)."""
    if not line.get("steps"):
        return ""
    step = line["steps"][0]
    return formats.format_step(step.get("thought", ""), step.get("action", ""), step.get("action_input", ""))


def rates(checks: list[dict]) -> dict:
    """Share of queries meeting each criterion, and `n`."""
    n = len(checks)
    return {"n": n, **{k: round(sum(c[k] for c in checks) / n, 4) if n else None
                       for k in (*CRITERIA, "correct")}}
