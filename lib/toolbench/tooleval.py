"""ToolEval's rules: labels, pre-checks, votes, the judge's prompts and how its replies are read.

ToolBench's `tooleval/eval_pass_rate.py` + `registered_cls/rtl.py`, re-implemented with our own
prompts (tooleval_prompts/ beside this module); lib/judge/judge.py runs them, lib/judge/llm_judge.py
sends the prompts. Pure rules, no lib imports. The rules, both aggregations and why replies are
JSON rather than forced function calls: docs/judging.md, "ToolEval's rules".
"""
from __future__ import annotations

import copy
import hashlib
import json
import random
import re
from pathlib import Path

ANSWER_LABELS = ("Solved", "Unsolved", "Unsure")
TASK_LABELS = ("Solvable", "Unsolvable", "Unsure")
SCORE = {"Solved": 1.0, "Unsure": 0.5, "Unsolved": 0.0}
AGGREGATIONS = ("majority", "mean")


def json_object(text: str) -> dict | None:
    """`text` as a JSON object; None when it is not JSON or not an object."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, dict) else None


# --------------------------------------------------------------------------------------------
# The answer and the pre-checks
# --------------------------------------------------------------------------------------------
def last_action(traj: dict) -> str | None:
    actions = [s["action"] for s in traj["steps"] if s.get("action")]
    return actions[-1] if actions else None


def final_answer_text(traj: dict) -> str:
    """The answer ToolEval judges: the converted answer's final_answer when present."""
    answer = traj.get("answer")
    if isinstance(answer, dict) and isinstance(answer.get("final_answer"), str):
        return answer["final_answer"]
    return traj["final_answer"]


NO_FINISH = "no Finish call"


def precheck(traj: dict) -> str | None:
    """ToolEval's rule-based answer labels (Unsolved), decided without the judge; None when the
    judge must look at the answer."""
    if last_action(traj) != "Finish":
        return NO_FINISH
    # rtl.py check_is_solved, on the converted answer's final_answer (Finish's raw arguments) as
    # is: an empty string or a give-up; anything else, even an empty answer inside the JSON, is the
    # judge's to read.
    text = final_answer_text(traj)
    if "give_up_and_restart" in text or (text == "" and traj["finish_type"] in ("give_up", "give_up_and_restart")):
        return "gave up (give_up_and_restart)"
    if text == "":
        return "empty final answer"
    return None


def asks_task(pre: str | None) -> bool:
    """Whether ToolEval still asks the judge if the task was solvable after this pre-check: for an
    empty or given-up answer yes (rtl.py is_passed -> check_task_solvable), without a Finish call no
    (eval_pass_rate.py returns Solvable at once)."""
    return pre is not None and pre != NO_FINISH


# --------------------------------------------------------------------------------------------
# Labels and votes (pure functions)
# --------------------------------------------------------------------------------------------
def assessment_label(answer_status: str, task_status: str) -> str:
    """ToolEval's is_passed: 'Passed', 'Failed' or 'Unsure'."""
    if answer_status == "Solved" or task_status == "Unsolvable":
        return "Passed"
    if answer_status == "Unsolved" and task_status == "Solvable":
        return "Failed"
    return "Unsure"


def seeded_rng(*parts) -> random.Random:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def vote(label: str, rng: random.Random) -> tuple[str, bool]:
    """'pass' / 'fail' for an assessment label; Unsure is a coin toss (returned flag True)."""
    if label == "Unsure":
        return ("pass" if rng.random() < 0.5 else "fail"), True
    return ("pass" if label == "Passed" else "fail"), False


def majority(votes: list[str]) -> bool:
    """ToolBench's final count: a query passes when pass votes >= fail votes."""
    return votes.count("pass") >= votes.count("fail")


def status_winner(statuses: dict) -> tuple[str | None, str]:
    """rtl.py's preference on the answer labels of one round ({side: answer_status}): the only
    answer Solved wins, else the only one Unsure; (None, "") when the labels do not decide."""
    for label in ("Solved", "Unsure"):
        holders = [k for k, v in statuses.items() if v == label]
        if len(holders) == 1:
            return holders[0], f"only one answer {label}"
        if len(holders) == 2:
            return None, ""
    return None, ""


# --------------------------------------------------------------------------------------------
# Prompts (our wording of ToolEval's four judge functions) and replies
# --------------------------------------------------------------------------------------------
PROMPT_DIR = Path(__file__).with_name("tooleval_prompts")


def _template(name: str) -> str:
    """tooleval_prompts/<name>.txt; the file's final newline is not part of the prompt."""
    return (PROMPT_DIR / f"{name}.txt").read_text(encoding="utf-8").removesuffix("\n")


REPLY_FIELDS = {"check_answer_status": ("answer_status", ANSWER_LABELS),
                "parse_answer_status": ("answer_status", ANSWER_LABELS),
                "check_task_solvable": ("task_status", TASK_LABELS),
                "select_better_answer": ("index", (0, 1))}
SYSTEM_PROMPT = _template("system")
PROMPTS = {function: _template(function) for function in REPLY_FIELDS}


def prompt_messages(function: str, fields: dict) -> list[dict]:
    """The chat messages of one judge call in our wording: the system message, then the function's
    template filled with `fields` (what lib/judge/llm_judge.py sends when judge.evaluator_dir is null)."""
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": PROMPTS[function].format(**fields)}]


def parse_reply(function: str, text: str | None) -> dict | None:
    """The reply's JSON object with its label normalised; None when malformed."""
    if not text:
        return None
    text = re.sub(r"^\s*```(?:json)?|```\s*$", "", text.strip())
    obj = json_object(text)
    if obj is None:
        found = re.search(r"\{.*\}", text, re.DOTALL)
        obj = json_object(found.group(0)) if found else None
    if obj is None:
        return None
    field, allowed = REPLY_FIELDS[function]
    value = obj.get(field)
    if field == "index":
        try:
            value = int(value)
        except (TypeError, ValueError):
            return None
    else:
        value = {a.lower(): a for a in allowed}.get(str(value).strip().lower())
    if value not in allowed:
        return None
    return {**obj, field: value}


# --------------------------------------------------------------------------------------------
# One assessment by the judge
# --------------------------------------------------------------------------------------------
def _label(call: dict, field: str) -> str:
    return call["parsed"][field] if call["parsed"] is not None else "Unsure"


def answer_as_toolbench_shows_it(traj: dict):
    """The whole run as ToolBench's eval_pass_rate.py puts it in the judge's parse_answer_status
    prompt: its hallucination check (rtl.py check_has_hallucination) runs first and, walking the
    answer_details tree depth first, turns each tool node's message into its str() in place, stopping
    at the first call of a function not in available_tools (or at an error, which it swallows).
    StableToolBench's eval_pass_rate.py skips that check; ours follows ToolBench, as its rules do."""
    answer = traj.get("answer")
    if not isinstance(answer, dict):
        return {"final_answer": traj["final_answer"], "steps": traj["steps"]}
    answer = copy.deepcopy(answer)

    def valid(node) -> bool:
        if node["role"] == "tool":
            if isinstance(node["message"], dict):
                node["message"] = str(node["message"])
            return re.findall(r"'name':\s*'(.*?)'", node["message"], re.DOTALL)[0] in names

    def walk(nodes) -> bool:
        if isinstance(nodes, dict):
            return valid(nodes) is not False and walk(nodes["next"])
        return all(walk(node) for node in nodes)

    try:
        names = {tool["name"] for tool in traj.get("available_tools") or []}
        walk(answer["answer_details"])
    except (KeyError, IndexError, TypeError):
        pass
    return answer


def answer_fields(traj: dict) -> dict:
    """check_answer_status's fields (ToolEval: the query and the answer's final_answer)."""
    return {"query": traj["query"], "answer": final_answer_text(traj)}


def task_fields(traj: dict) -> dict:
    """check_task_solvable's fields (ToolEval: json.dumps of the query and its available tools)."""
    return {"task": json.dumps({"query": traj["query"], "available_tools": traj.get("available_tools", [])})}


def first_call(traj: dict) -> tuple[str, dict] | None:
    """The first judge call of each assessment of `traj` (function, fields); None when the
    pre-checks decide it without any call."""
    pre = precheck(traj)
    if pre is None:
        return "check_answer_status", answer_fields(traj)
    return ("check_task_solvable", task_fields(traj)) if asks_task(pre) else None


def llm_assessment(judge, traj: dict, index: int, answer_rule: str | None = None) -> dict:
    """ToolEval's answer check (re-asked with the whole run when Unsure), then the task check.
    `judge` is a lib.judge.llm_judge.LLMJudge (anything with its `ask`); a malformed reply is Unsure.
    With `answer_rule` (a pre-check for which `asks_task`), the answer is Unsolved by that rule and
    only the task is asked about."""
    calls, answer_status = [], "Unsolved"
    if answer_rule is None:
        calls.append(judge.ask("check_answer_status", answer_fields(traj), index))
        answer_status = _label(calls[-1], "answer_status")
    if answer_status == "Unsure":
        calls.append(judge.ask("parse_answer_status", {"query": traj["query"],
                                                       "answer": json.dumps(answer_as_toolbench_shows_it(traj))}, index))
        answer_status = _label(calls[-1], "answer_status")
    task_status = "Solvable"
    if answer_status != "Solved":
        calls.append(judge.ask("check_task_solvable", task_fields(traj), index))
        task_status = _label(calls[-1], "task_status")
    return {"answer_status": answer_status, "task_status": task_status,
            "source": "precheck+judge" if answer_rule else "judge",
            **({"reason": answer_rule} if answer_rule else {}), "calls": calls, "malformed": any(c.get("malformed") for c in calls)}
