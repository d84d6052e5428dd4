"""A series: one row of stage 05's Table 1 and Table 2, and what it says.

A dict with label, kind (paper | readme | run), model, method, params_b, source, paper_label,
aggregation, judge, and per group (and "overall", "average" where printed): printed, value, n and
ci. lib/report/report.py draws them; the claim audit (lib/report/audit.py) reads the same facts.
"""
from __future__ import annotations

from lib.common import config
from lib.judge import pass_rates

GROUPS = config.GROUPS
OFFLINE_NOTE = "offline judge, not ToolEval"
PAPER_AGGREGATION = "majority"          # the paper says majority voting over >= 4 assessments


def is_majority(aggregation: str) -> bool:
    """'majority' or stage 04's 'majority_vote': the aggregation the paper comparison uses."""
    return aggregation.startswith(PAPER_AGGREGATION)


def is_offline(judge_name: str) -> bool:
    """'offline' or 'offline judge': the rule-based judge, not ToolEval."""
    return judge_name.startswith("offline")


def weighted_mean(s: dict, groups: list[str] = GROUPS) -> float | None:
    """Query-weighted mean over `groups`, the six by default (None if a group or its size is missing)."""
    if not all(g in s["value"] and s["n"].get(g) for g in groups):
        return None
    return sum(s["value"][g] * s["n"][g] for g in groups) / sum(s["n"][g] for g in groups)


def covered_groups(s: dict) -> list[str]:
    """The test groups a series has figures for (those its overall pools), in GROUPS order."""
    found = [g for g in s["value"] if g not in ("overall", "average")]
    return [g for g in GROUPS if g in found] + [g for g in found if g not in GROUPS]


def overall_note(s: dict) -> str:
    """'' when the series' overall pools all six groups, else which groups it pools (stage 04's words)."""
    return pass_rates.overall_note(covered_groups(s))


def overall(s: dict) -> tuple[float | None, str]:
    """The Table 1 figure of a series and what it is."""
    if "overall" in s["value"]:
        what = {"paper": "Table 1 (query-weighted)", "run": "overall row of pass_rate.csv"}
        note = f" ({overall_note(s)})" if overall_note(s) else ""
        return s["value"]["overall"], what.get(s["kind"], "overall") + note
    if "average" in s["value"]:
        return s["value"]["average"], "README Average (unweighted mean of six groups)"
    return weighted_mean(s), "query-weighted mean of the groups"
