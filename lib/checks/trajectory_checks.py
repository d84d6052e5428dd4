"""Stage 04's deterministic checks of a trajectory, no LLM (`deterministic_checks`), reported in
checks.csv and in each judgment, and the ground of the offline judge (lib/checks/offline_judge.py).
The checks and their fields: docs/formats.md, "04 judge"; for a released answer whose tool messages
were cut, the checks that need arguments or responses are None and `not_available` names them.
"""
from __future__ import annotations

from lib.toolbench import formats, observations, tooleval
from lib.checks import grounding


# --------------------------------------------------------------------------------------------
# Function names: ToolBench's `<api>_for_<tool>` (lib.toolbench.formats)
# --------------------------------------------------------------------------------------------
def function_table(traj: dict, query: dict | None) -> dict[str, list[str]]:
    """Callable function name -> required parameter names: the query's api_list as the prompt
    showed it (lib.toolbench.formats.functions_for_query) when the query is known, else the trajectory's
    available_tools. Finish is always callable (it requires return_type)."""
    functions = (formats.functions_for_query(query) if query is not None
                 else traj.get("available_tools") or [])
    table = {fn["name"]: list((fn.get("parameters") or {}).get("required", [])) for fn in functions}
    table["Finish"] = ["return_type"]
    return table


def relevant_names(query: dict | None) -> set[str]:
    """The query's "relevant APIs" ([tool, api] pairs) as function names."""
    return {formats.api_function_name(api, tool) for tool, api in (query or {}).get("relevant APIs", [])}


# --------------------------------------------------------------------------------------------
# Deterministic checks (no LLM)
# --------------------------------------------------------------------------------------------
def _call_succeeded(observation: str) -> bool:
    return bool(observation.strip()) and not observations.reports_error(observation)


def about_query(step: dict, required: list[str], context: str) -> bool:
    """A call is about the query when each of its required arguments is stated in `context` (the
    query and the observations before the call), numbers as numbers (lib/checks/grounding.py)."""
    args = tooleval.json_object(step.get("action_input", "")) or {}
    return all(grounding.stated_in(args.get(p, ""), context) for p in required)


def grounding_sources(traj: dict, api_calls: list[dict], relevant: set[str],
                      table: dict[str, list[str]]) -> tuple[list[dict], int]:
    """The successful calls whose results an answer must report: calls of the query's relevant
    APIs (every API when the query lists none) that are about the query; and how many successful
    calls were not about it (an argument the query and the earlier results never gave)."""
    sources, off_query, context = [], 0, traj["query"]
    for s in api_calls:
        if _call_succeeded(s.get("observation", "")):
            if not about_query(s, table.get(s["action"], []), context):
                off_query += 1
            elif not relevant or s["action"] in relevant:
                sources.append(s)
        context += "\n" + s.get("observation", "")
    return sources, off_query


def deterministic_checks(traj: dict, query: dict | None) -> dict:
    """The per-trajectory checks reported beside the pass rate."""
    table = function_table(traj, query)
    calls = [s for s in traj["steps"] if s.get("action")]
    api_calls = [s for s in calls if s["action"] != "Finish"]
    hallucinated = [s["action"] for s in calls if s["action"] not in table]
    invalid_inputs, missing = 0, []
    for s in calls:
        args = tooleval.json_object(s.get("action_input", ""))
        lacking = [p for p in table.get(s["action"], []) if args is not None and p not in args]
        if args is None or lacking:
            invalid_inputs += 1
            missing += [f"{s['action']}.{p}" for p in lacking]
    relevant = relevant_names(query)
    hits = sorted(relevant & {s["action"] for s in api_calls})
    n_steps = len(traj["steps"])
    sources, off_query = grounding_sources(traj, api_calls, relevant, table)
    given = " ".join([traj["query"], *(s.get("action_input", "") for s in sources)])
    grounded = grounding.matched_values(tooleval.final_answer_text(traj),
                                        [s["observation"] for s in sources], given)
    checks = {
        "finished": traj["finish_type"] == "give_answer" and tooleval.last_action(traj) == "Finish",
        "n_steps": n_steps, "n_calls": len(calls), "n_api_calls": len(api_calls),
        "successful_calls": sum(_call_succeeded(s.get("observation", "")) for s in api_calls),
        "valid_names": not hallucinated, "hallucinated": hallucinated,
        "hallucination_rate": len(hallucinated) / len(calls) if calls else 0.0,
        "valid_inputs": invalid_inputs == 0, "invalid_inputs": invalid_inputs,
        "missing_required": missing,
        "relevant_apis": sorted(relevant), "relevant_hits": hits,
        "relevant_recall": len(hits) / len(relevant) if relevant else None,
        "parse_errors": int(traj.get("parse_errors", 0)),
        "parse_error_rate": int(traj.get("parse_errors", 0)) / max(n_steps, 1),
        "off_query_calls": off_query,
        "answer_grounded": bool(grounded), "grounded_values": grounded[:10],
    }
    # Released answers whose tool messages were cut (lib/toolbench/released.py): what needs the arguments or
    # the responses is not available - None, never a failure.
    for key in traj.get("not_available") or ():
        checks[key] = None
    if traj.get("not_available"):
        checks.update(invalid_inputs=None, missing_required=None, grounded_values=None,
                      not_available=list(traj["not_available"]))
    return checks
