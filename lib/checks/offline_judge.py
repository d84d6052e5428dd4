"""The offline judge (`judge.kind: offline`): a transparent rule on the deterministic checks
(lib/checks/trajectory_checks.py), for the smoke profile and users without an endpoint. Pure functions
on a checks dict, no lib imports.

It is NOT ToolEval, and every number it gives is labelled "offline judge" (OFFLINE). Its answer and
task labels and its win-rate score: docs/judging.md, "The offline judge".
"""
from __future__ import annotations

OFFLINE = "offline judge"
# The offline judge's rule, by version: judgments made under another version are set aside, not reused.
OFFLINE_RULE = "3: Solved needs an answer grounded in the result of a relevant call about the query"


def offline_answer_status(checks: dict, pre: str | None) -> tuple[str, str]:
    """The offline judge's answer label (see the module docstring) and its reason; `pre` is
    tooleval.precheck's failure, if any."""
    if pre:
        return "Unsolved", pre
    if checks.get("not_available"):
        return "Unsure", ("not decidable: the answer's tool responses are not available (released "
                          "file with messages cut to 100 characters), so its vote is a coin")
    if checks["successful_calls"] == 0:
        return "Unsolved", "no API call returned a result"
    if not checks["answer_grounded"]:
        return "Unsolved", "the final answer states no value that a successful relevant call returned"
    recall = checks["relevant_recall"]
    if checks["valid_names"] and checks["valid_inputs"] and (recall is None or recall >= 0.5):
        return "Solved", "valid calls only, a result obtained, relevant APIs called"
    return "Unsure", "finished with results, but with hallucinated/invalid calls or few relevant APIs"


def offline_preference_score(checks: dict) -> tuple:
    """The offline judge's preference between two runs that both pass or both fail (higher is
    better): relevant-API recall, then fewer hallucinated calls, fewer invalid inputs, fewer steps."""
    return (checks["relevant_recall"] or 0.0, -len(checks["hallucinated"]),
            -checks["invalid_inputs"], -checks["n_steps"])
