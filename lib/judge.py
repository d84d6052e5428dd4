"""Stage 04: judge the trajectories of stage 03 - ToolEval pass rate, win rate, deterministic checks.

What this module does, top to bottom in `run(cfg)`:

1. Reads `outputs/<profile>/trajectories/<group>.jsonl` (docs/formats.md; a query id twice in a file
   is an error naming both lines) and the test queries of `data.test_dir/<group>.json` (for each
   query's `api_list` and "relevant APIs"). It judges what this run's settings select, as stage 03
   runs it: the trajectories of the first `inference.max_queries_per_group` queries of the test
   file (`select`); others an earlier, larger run left in the file stay there, unjudged, and the
   log and pass_rate.md say how many were judged of how many. A group with no selected trajectory
   ("no queries") is a warning and has no pass-rate row, instead of a rate of nan.
2. Deterministic checks, no LLM, for every trajectory (`deterministic_checks`): finished with
   `give_answer`; every Action names a function of the query's api_list (or Finish); every Action
   Input is a JSON object holding the function's required parameters; hallucinated-function rate;
   relevant-API recall (share of the query's "relevant APIs" that were called); parse-error rate.
3. Pass rate, ToolEval's algorithm (ToolBench `tooleval/eval_pass_rate.py` + `registered_cls/rtl.py`,
   re-implemented here with our own prompts), `judge.evaluate_times` assessments per query:
   - Rule-based pre-checks, no judge call: the last step is not a call of `Finish`, the final answer
     is empty, or the model gave up (`give_up_and_restart`) -> answer Unsolved, vote fail.
   - Otherwise the judge labels the final answer Solved / Unsolved / Unsure; an Unsure answer is
     asked again with the whole trajectory. Unless Solved, the judge labels the task Solvable /
     Unsolvable / Unsure with the available tools. Assessment: Solved -> pass; task Unsolvable ->
     pass; Unsolved + Solvable -> fail; every other pair is Unsure and, as ToolEval does, decided by a
     coin - here a seeded one (seed, group, query id, assessment index), so reruns agree.
   Two aggregations, both reported and named in pass_rate.csv's `aggregation` column:
   - `majority` (the paper's "majority voting"; ToolBench's rule): a query passes when its pass
     votes >= its fail votes (a tie passes, as in ToolBench's final pass-rate count).
   - `mean` (StableToolBench's "solvable pass rate"): each assessment run scores a query
     1 (Solved) / 0.5 (Unsure) / 0 (Unsolved or pre-check fail) on the answer label alone; a run's
     rate is the mean over queries; the figure is the mean over runs, with the std over runs
     (population std, as numpy's default) in pass_rate.md and judge_summary.json.
4. The judge (`judge.kind`):
   - `llm`: any OpenAI-compatible chat endpoint through the `openai` client (`base_url`, `model`,
     key read from the environment variable named by `api_key_env`; the key is never printed or
     written). ToolEval forced function calls; we ask for one JSON object in the reply instead,
     because local servers (vLLM, Ollama) do not all support forced function calls - the labels and
     rules are ToolEval's. Each request (model, messages, sampling parameters incl. a per-assessment
     seed, assessment index, attempt) is hashed; request and reply are appended to
     `outputs/<profile>/judge_cache.jsonl` and looked up there first, so a rerun or resumed run sends
     nothing twice while the repeated assessments stay distinct samples. 429 / 5xx / time-outs /
     connection errors / malformed responses (an HTTP 200 that is not a chat completion: a proxy's
     HTML page, JSON without choices) are retried `max_retries` times with exponential backoff
     starting at `retry_backoff_s`, at least as long as a `Retry-After` asks (capped at
     MAX_RETRY_AFTER_S); then JudgeRequestError names the endpoint and the last failure. A reply
     that is not a JSON object with a valid label is asked again (a new attempt, cached apart) up
     to `malformed_retries` times, then counted as Unsure (index replies: counted as no
     preference) and flagged `malformed` in the judgment.
   - `offline`: the **offline judge**, a transparent rule on the deterministic checks, for the smoke
     profile and users without an endpoint. It is NOT ToolEval and every number it gives is labelled
     "offline judge". Answer label: pre-check fail -> Unsolved; no API call returned a result (empty
     observation or a non-empty "error") -> Unsolved; the final answer is not grounded (it states no
     informative value of a successful call of a relevant API, or of any successful call when the
     query lists none, made *about the query*: each required argument stated in the query or an
     earlier observation; values echoing the query or the call's input do not count; lib/grounding.py
     defines the matching) -> Unsolved; otherwise Solved when no call was hallucinated,
     every Action Input was valid and (when the query lists relevant APIs) at least half of them were
     called, else Unsure. Task label: always Solvable (a rule cannot judge solvability). The same
     vote and aggregation rules then apply, so its repeated assessments differ only in the coins.
5. Win rate against a reference method (`judge.win_rate_reference`: a trajectories folder or an
   outputs/<profile> folder), ToolEval's preference comparison: per assessment round, a query that
   passes (majority) beats one that fails with no judge call; otherwise, as rtl.py does, an answer
   labelled Solved (then Unsure) in that round beats one that is not; otherwise the judge picks the
   better of the two answers shown in a seeded random order (cancelling position bias), identical
   answers being a tie without a call. More round votes wins; equal votes is a tie, reported apart.
   The offline judge breaks pass/pass and fail/fail pairs with a documented score (relevant-API
   recall, then fewer hallucinated / invalid calls, then fewer steps) and calls the rest ties.
6. Statistics: per group and overall (query-weighted, as the paper's Table 1) pass rate with Wilson
   95% intervals (an overall over fewer than the six groups names the groups it pools, in
   pass_rate.csv's `covers` and a note in pass_rate.md); agreement of the repeated assessments
   (mean pairwise agreement and Fleiss' kappa over the answer labels of the queries the judge was
   asked about).

Outputs under outputs/<profile>/: `judgments/<group>.jsonl` (append-only, one line per query: every
assessment with the judge's replies, the votes, both scores and the checks; a rerun skips query ids
already judged by the same judge), `pass_rate.csv` / `pass_rate.md`, `checks.csv`,
`judge_summary.json`, `judge_cache.jsonl`, and with a reference `preferences/<group>.jsonl`,
`win_rate.csv`. Every JSONL file here is appended and read through lib.store: a line torn by a
killed run is skipped, and cut before the next append instead of swallowing it.
"""
from __future__ import annotations

import email.utils
import hashlib
import json
import math
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from lib import config, grounding, store, toolbench

ANSWER_LABELS = ("Solved", "Unsolved", "Unsure")
# The offline judge's rule, by version: judgments made under another version are set aside, not reused.
OFFLINE_RULE = "3: Solved needs an answer grounded in the result of a relevant call about the query"
TASK_LABELS = ("Solvable", "Unsolvable", "Unsure")
SCORE = {"Solved": 1.0, "Unsure": 0.5, "Unsolved": 0.0}
AGGREGATIONS = ("majority", "mean")
OFFLINE = "offline judge"
Z95 = 1.959963984540054


class JudgeInputError(ValueError):
    """A trajectory or query record that cannot be judged; names file, line, query id and field."""


class JudgeRequestError(RuntimeError):
    """The judge endpoint kept failing after every retry."""


# --------------------------------------------------------------------------------------------
# Reading trajectories and queries
# --------------------------------------------------------------------------------------------
REQUIRED_FIELDS = {"query_id": (int, str), "query": str, "finish_type": str, "final_answer": str,
                   "steps": list}
STEP_FIELDS = ("action", "action_input", "observation")


def _bad(path, line, qid, field, why) -> JudgeInputError:
    return JudgeInputError(f"{path}, line {line}, query_id {qid!r}: field '{field}' {why}")


def read_trajectories(path: str | Path) -> list[dict]:
    """One trajectory per line; raises JudgeInputError naming file, line, query id and field. A
    query id twice in the file is refused (naming both lines): judging both would count the query
    twice in the pass rate, judging one would silently pick a run."""
    rows, first_line = [], {}
    with open(path, encoding="utf-8") as fh:
        for line_no, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as err:
                torn = "" if text.endswith("\n") else (
                    "; the last line is cut short: stage 03 was stopped mid-write, rerun it to "
                    "finish the group")
                raise _bad(path, line_no, None, "<line>",
                           f"is not valid JSON ({err.msg}){torn}") from None
            if not isinstance(rec, dict):
                raise _bad(path, line_no, None, "<line>", "is not a JSON object")
            qid = rec.get("query_id")
            for field, kind in REQUIRED_FIELDS.items():
                if field not in rec:
                    raise _bad(path, line_no, qid, field, "is missing")
                if not isinstance(rec[field], kind) or isinstance(rec[field], bool):
                    raise _bad(path, line_no, qid, field, f"has type {type(rec[field]).__name__}")
            for i, step in enumerate(rec["steps"]):
                if not isinstance(step, dict):
                    raise _bad(path, line_no, qid, f"steps[{i}]", "is not an object")
                for field in STEP_FIELDS:
                    if not isinstance(step.get(field, ""), str):
                        raise _bad(path, line_no, qid, f"steps[{i}].{field}", "is not a string")
            if str(qid) in first_line:
                raise JudgeInputError(f"{path}: query_id {qid!r} appears twice, on lines "
                                      f"{first_line[str(qid)]} and {line_no}; stage 04 judges each "
                                      f"query once: remove one of the two lines")
            first_line[str(qid)] = line_no
            rows.append(rec)
    return rows


def load_queries(path: str | Path | None) -> dict[str, dict]:
    """ToolBench test queries by str(query_id), read and checked by stage 03's reader; {} when the
    file is absent."""
    if path is None or not Path(path).exists():
        return {}
    return {str(q["query_id"]): q for q in toolbench.load_queries(path)}


def select(trajs: list[dict], queries: dict[str, dict],
           limit: int | None) -> tuple[list[dict], dict]:
    """The trajectories this run's settings ask to judge: those of the first `limit`
    (inference.max_queries_per_group) queries of the test file - the queries stage 03 runs
    (lib.inference.run), so that stage 04 reports on what stage 03's summary counts, not on every
    query an earlier, larger run left in the file; without a test file, the file's first `limit`.
    The others stay in the file, unjudged. Returns them (in file order) and an account for the log
    and judge_summary.json."""
    if queries:
        wanted = list(queries)[:limit or None]
        chosen = set(wanted)
        picked = [t for t in trajs if str(t["query_id"]) in chosen]
        found = {str(t["query_id"]) for t in picked}
        missing = [q for q in wanted if q not in found]
    else:
        wanted, picked, missing = None, trajs[:limit or None], []
    return picked, {"in_file": len(trajs), "judged": len(picked), "max_queries_per_group": limit,
                    "selected_queries": None if wanted is None else len(wanted),
                    "without_trajectory": missing}


def selection_notes(account: dict, test_file: Path) -> list[tuple[str, bool]]:
    """What the log and pass_rate.md must say about a group's selection, each note with whether it
    is a warning (the figures cover fewer queries than asked); [] when the selection is the whole
    file and every selected query has a trajectory."""
    notes, limit, missing = [], account["max_queries_per_group"], account["without_trajectory"]
    if account["judged"] < account["in_file"]:
        why = (f"inference.max_queries_per_group={limit}" if limit
               else f"the others are of queries not in {test_file}")
        notes.append((f"judged {account['judged']} of {account['in_file']} trajectories in the "
                      f"file: {why}", False))
    if missing:
        notes.append((f"{len(missing)} of the {account['selected_queries']} selected queries have "
                      f"no trajectory (stage 03 did not finish them: {', '.join(missing[:5])}"
                      f"{', ...' if len(missing) > 5 else ''})", True))
    if not account["judged"]:
        notes.append(("no queries: nothing to judge, so no pass rate for this group and it is not "
                      "in the overall", True))
    return notes


# --------------------------------------------------------------------------------------------
# Function names: ToolBench's `<api>_for_<tool>` (lib.toolbench)
# --------------------------------------------------------------------------------------------
def function_table(traj: dict, query: dict | None) -> dict[str, list[str]]:
    """Callable function name -> required parameter names: the query's api_list as the prompt
    showed it (lib.toolbench.functions_for_query) when the query is known, else the trajectory's
    available_tools. Finish is always callable (it requires return_type)."""
    functions = (toolbench.functions_for_query(query) if query is not None
                 else traj.get("available_tools") or [])
    table = {fn["name"]: list((fn.get("parameters") or {}).get("required", [])) for fn in functions}
    table["Finish"] = ["return_type"]
    return table


def relevant_names(query: dict | None) -> set[str]:
    """The query's "relevant APIs" ([tool, api] pairs) as function names."""
    return {toolbench.api_function_name(api, tool) for tool, api in (query or {}).get("relevant APIs", [])}


# --------------------------------------------------------------------------------------------
# Deterministic checks (no LLM)
# --------------------------------------------------------------------------------------------
def _json_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def _call_succeeded(observation: str) -> bool:
    if not observation.strip():
        return False
    obs = _json_object(observation)
    return not (obs is not None and str(obs.get("error", "")).strip())


def about_query(step: dict, required: list[str], context: str) -> bool:
    """A call is about the query when each of its required arguments is stated in `context` (the
    query and the observations before the call), numbers as numbers (lib/grounding.py)."""
    args = _json_object(step.get("action_input", "")) or {}
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
        args = _json_object(s.get("action_input", ""))
        lacking = [p for p in table.get(s["action"], []) if args is not None and p not in args]
        if args is None or lacking:
            invalid_inputs += 1
            missing += [f"{s['action']}.{p}" for p in lacking]
    relevant = relevant_names(query)
    hits = sorted(relevant & {s["action"] for s in api_calls})
    n_steps = len(traj["steps"])
    sources, off_query = grounding_sources(traj, api_calls, relevant, table)
    given = " ".join([traj["query"], *(s.get("action_input", "") for s in sources)])
    grounded = grounding.matched_values(final_answer_text(traj), [s["observation"] for s in sources], given)
    return {
        "finished": traj["finish_type"] == "give_answer" and _last_action(traj) == "Finish",
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


def _last_action(traj: dict) -> str | None:
    actions = [s["action"] for s in traj["steps"] if s.get("action")]
    return actions[-1] if actions else None


def final_answer_text(traj: dict) -> str:
    """The answer ToolEval judges: the converted answer's final_answer when present."""
    answer = traj.get("answer")
    if isinstance(answer, dict) and isinstance(answer.get("final_answer"), str):
        return answer["final_answer"]
    return traj["final_answer"]


def precheck(traj: dict) -> str | None:
    """ToolEval's rule-based failures, decided without the judge; None when the judge must look."""
    if _last_action(traj) != "Finish":
        return "no Finish call"
    text = final_answer_text(traj)
    if traj["finish_type"] in ("give_up", "give_up_and_restart") or "give_up_and_restart" in text:
        return "gave up (give_up_and_restart)"
    if not text.strip() or not traj["final_answer"].strip():
        return "empty final answer"
    return None


# --------------------------------------------------------------------------------------------
# ToolEval's rules (pure functions)
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


def mean_score_runs(per_query_scores: list[list[float]], runs: int) -> list[float]:
    """StableToolBench: the pass rate of each run (mean over queries); a missing run scores 0."""
    if not per_query_scores:
        return [0.0] * runs
    return [sum(q[r] if r < len(q) else 0.0 for q in per_query_scores) / len(per_query_scores)
            for r in range(runs)]


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (as fractions)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def pairwise_agreement(labels: list[list[str]]) -> float:
    """Mean over items of the share of agreeing pairs among the repeated labels."""
    shares = []
    for item in labels:
        k = len(item)
        if k < 2:
            continue
        agree = sum(item[i] == item[j] for i in range(k) for j in range(i + 1, k))
        shares.append(agree / (k * (k - 1) / 2))
    return sum(shares) / len(shares) if shares else float("nan")


def fleiss_kappa(labels: list[list[str]], categories=ANSWER_LABELS) -> float:
    """Fleiss' kappa; every item needs the same number (>= 2) of ratings. NaN when undefined."""
    items = [item for item in labels if len(item) >= 2]
    if not items or len({len(i) for i in items}) != 1:
        return float("nan")
    k = len(items[0])
    counts = [[item.count(c) for c in categories] for item in items]
    p_items = [(sum(c * c for c in row) - k) / (k * (k - 1)) for row in counts]
    p_bar = sum(p_items) / len(items)
    p_cat = [sum(row[j] for row in counts) / (len(items) * k) for j in range(len(categories))]
    p_e = sum(p * p for p in p_cat)
    return float("nan") if p_e >= 1 else (p_bar - p_e) / (1 - p_e)


# --------------------------------------------------------------------------------------------
# Prompts (our wording of ToolEval's four judge functions)
# --------------------------------------------------------------------------------------------
SYSTEM_PROMPT = ("You evaluate the work of an AI assistant that answers user requests by calling "
                 "APIs. Reply with one JSON object and nothing else.")

PROMPTS = {
    "check_answer_status": """Below are a user's request and the final answer an assistant gave.
Decide `answer_status`:
- "Unsolved" if the answer apologises, refuses, reports that it could not do the task, or does not
  respond directly to the request.
- If it does respond directly: "Solved" when you are confident it settles the request, "Unsolved"
  when you are confident it does not, and "Unsure" when the answer alone does not let you tell.

Request:
{query}

Final answer:
{answer}

Reply as {{"reason": "<one or two sentences>", "answer_status": "Solved" | "Unsolved" | "Unsure"}}.""",
    "parse_answer_status": """Below are a user's request and the whole run of an assistant (every
tool call with its arguments and the tool's response, then the final answer), as JSON.
Decide `answer_status`:
- "Unsolved" if every tool call ended in an error.
- "Unsolved" if the final answer states things the tool responses do not support or contradict.
- "Unsure" if you cannot verify whether the information in the final answer is true and valid.
- "Solved" if successful tool calls in the run really do settle the request.

Request:
{query}

Run:
{answer}

Reply as {{"reason": "<one or two sentences>", "answer_status": "Solved" | "Unsolved" | "Unsure"}}.""",
    "check_task_solvable": """Below is a task: a user's request and the tools the assistant could call.
Decide `task_status`:
- "Unsolvable" if the request contains invalid information (for example a malformed e-mail
  address or phone number).
- "Unsolvable" if the request lacks information needed to carry it out (for example which
  restaurant to navigate to).
- "Solvable" if the available tools are enough to carry out the request.
- "Unsure" if you cannot reach a conclusion.

Task:
{task}

Reply as {{"reason": "<one or two sentences>", "task_status": "Solvable" | "Unsolvable" | "Unsure"}}.""",
    "select_better_answer": """Below are a user's request and two runs of assistants answering it,
as JSON (Answer_0 and Answer_1). Their order is random: ignore it. Pick the better run:
1. First compare the "final_answer" values: does it hold everything needed to reply to the
   request; does it describe truthfully what was done and what failed; if it does not settle the
   request, does it explain why, accurately and in detail?
2. Only if that does not decide it, compare "answer_details": fewer failed or repeated tool calls,
   fewer tokens spent, more sub-goals reached, more distinct successful calls tried.
If you still cannot tell, pick either.

Request:
{query}

Answer_0:
{answer_0}

Answer_1:
{answer_1}

Reply as {{"reason": "<one or two sentences>", "index": 0 | 1}}.""",
}

REPLY_FIELDS = {"check_answer_status": ("answer_status", ANSWER_LABELS),
                "parse_answer_status": ("answer_status", ANSWER_LABELS),
                "check_task_solvable": ("task_status", TASK_LABELS),
                "select_better_answer": ("index", (0, 1))}


def parse_reply(function: str, text: str | None) -> dict | None:
    """The reply's JSON object with its label normalised; None when malformed."""
    if not text:
        return None
    text = re.sub(r"^\s*```(?:json)?|```\s*$", "", text.strip())
    obj = _json_object(text)
    if obj is None:
        found = re.search(r"\{.*\}", text, re.DOTALL)
        obj = _json_object(found.group(0)) if found else None
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
# The LLM judge: OpenAI-compatible client, disk cache, retries
# --------------------------------------------------------------------------------------------
class JudgeCache:
    """Append-only JSONL of every request and reply, keyed by a hash of the request. Written through
    lib.store: a torn last line (a run killed mid-write) is skipped on loading - that request is
    simply sent again - and cut before the next record, which therefore is not lost with it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock = threading.Lock()        # queries are judged in threads; one writer at a time
        # A bad line mid-file (an older version glued a record onto a torn line): its requests are
        # simply sent again, so it is skipped with a warning rather than stopping the stage.
        warn = lambda message: print(f"WARNING: {message}: skipped; its requests are sent again")
        self.replies = {rec["key"]: rec["reply"] for rec in store.read_jsonl(self.path, on_bad=warn)}

    def get(self, key: str) -> str | None:
        return self.replies.get(key)

    def put(self, key: str, record: dict) -> None:
        with self.lock:
            self.replies[key] = record["reply"]
            store.append_jsonl(self.path, {"key": key, **record})


def request_key(model: str, messages: list[dict], params: dict, index: int, attempt: int) -> str:
    blob = json.dumps({"model": model, "messages": messages, "params": params, "index": index,
                       "attempt": attempt}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _api_key(jcfg: dict) -> str:
    import os
    key = os.environ.get(jcfg["api_key_env"] or "")
    if key:
        return key
    if "api.openai.com" in str(jcfg["base_url"] or "api.openai.com"):
        raise JudgeRequestError(f"judge.kind is llm but the environment variable "
                                f"{jcfg['api_key_env']!r} is not set (the key is read only from there)")
    return "not-needed"         # local servers (vLLM, Ollama) accept any key


MAX_RETRY_AFTER_S = 120.0       # a longer Retry-After is waited this long, then asked again


class MalformedResponse(Exception):
    """An HTTP 200 from the judge endpoint that is not a chat completion (a proxy's HTML page, a
    server's {"error": ...}): a failure of the endpoint, retried like a 5xx - unlike a completion
    whose text is not a valid label, which the model is asked again for (malformed_retries)."""


def reply_content(resp: Any) -> str:
    """The text of a chat completion as the openai client returned it. The client does not check a
    200's body (measured with openai 3.57 against a local server): a non-JSON body sent as text/html
    comes back as a str, a bare JSON list or string as that value, a JSON object without choices as
    a ChatCompletion whose choices are None (empty: []; a choice without message: message None).
    Each raises MalformedResponse saying what was wrong. A message whose content is None is the
    model's own empty reply: "" (parse_reply counts it malformed and the model is asked again)."""
    if not hasattr(resp, "choices"):
        raise MalformedResponse(f"HTTP 200 whose body is not a chat completion but a "
                                f"{type(resp).__name__}: {str(resp)[:120]!r}")
    if not resp.choices:
        error = (getattr(resp, "model_extra", None) or {}).get("error")
        raise MalformedResponse(f"HTTP 200 with {'empty' if resp.choices == [] else 'no'} choices"
                                + (f", error: {str(error)[:200]}" if error else ""))
    message = getattr(resp.choices[0], "message", None)
    if message is None:
        raise MalformedResponse("HTTP 200 whose choices[0] has no message")
    content = getattr(message, "content", None)
    if content is not None and not isinstance(content, str):
        raise MalformedResponse(f"HTTP 200 whose message content is a "
                                f"{type(content).__name__}, not text")
    return content or ""


def retry_after(response: Any) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, or `Retry-After` in seconds or as an
    HTTP date); None when it did not say or said something unreadable."""
    headers = getattr(response, "headers", None) or {}
    for name, unit in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if not value:
            continue
        try:
            seconds = float(value) * unit
        except ValueError:
            try:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def _failure(err: Exception) -> str:
    """What went wrong with one request, for the error after the last retry."""
    status = getattr(err, "status_code", None)
    return f"{type(err).__name__}" + (f" (HTTP {status})" if status else "") + (
        f": {err}" if isinstance(err, MalformedResponse) else "")


class LLMJudge:
    """Asks an OpenAI-compatible chat endpoint; every request/reply goes through the cache."""

    def __init__(self, jcfg: dict, cache: JudgeCache, sleep: Callable[[float], None] = time.sleep):
        import openai
        self.openai = openai
        self.cfg = jcfg
        self.name = jcfg["model"]
        self.cache = cache
        self.sleep = sleep
        self.client = openai.OpenAI(base_url=jcfg["base_url"], api_key=_api_key(jcfg),
                                    max_retries=0, timeout=float(jcfg["timeout_s"]))
        self.endpoint = f"{self.client.base_url} (model {self.name})"
        self.counts = {"requests": 0, "cache_hits": 0, "retries": 0, "bad_responses": 0,
                       "malformed": 0}
        self.lock = threading.Lock()

    def _count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def _send(self, messages: list[dict], params: dict) -> str:
        """The reply's text; 429 / 5xx / time-outs / connection errors / malformed 200s are retried
        max_retries times, then JudgeRequestError names the endpoint and the last failure."""
        transient = (self.openai.RateLimitError, self.openai.APITimeoutError,
                     self.openai.APIConnectionError, self.openai.InternalServerError,
                     MalformedResponse)
        retries = int(self.cfg["max_retries"])
        for attempt in range(retries + 1):
            try:
                self._count("requests")
                return reply_content(self._create(messages, params))
            except transient as err:
                if isinstance(err, MalformedResponse):
                    self._count("bad_responses")
                if attempt == retries:
                    raise JudgeRequestError(f"judge endpoint {self.endpoint} failed {retries + 1} "
                                            f"times, last: {_failure(err)}") from None
                self._count("retries")
                self.sleep(self._wait(err, attempt))
        raise AssertionError("unreachable")

    def _create(self, messages: list[dict], params: dict) -> Any:
        """One request. The client decodes a 200 declared JSON itself and lets the decoder's error
        through bare (measured): that is a malformed response too."""
        try:
            return self.client.chat.completions.create(model=self.name, messages=messages, **params)
        except json.JSONDecodeError as err:
            raise MalformedResponse(f"HTTP 200 whose body is not JSON ({err.msg})") from None

    def _wait(self, err: Exception, attempt: int) -> float:
        """Exponential backoff, but at least what the server asked for in Retry-After (a 429's,
        a 503's), capped at MAX_RETRY_AFTER_S."""
        backoff = float(self.cfg["retry_backoff_s"]) * 2 ** attempt
        asked = retry_after(getattr(err, "response", None))
        return backoff if asked is None else max(backoff, min(asked, MAX_RETRY_AFTER_S))

    def ask(self, function: str, fields: dict, index: int) -> dict:
        """One judge call (cached); returns {function, reply, parsed, cached, attempts}."""
        messages = [{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": PROMPTS[function].format(**fields)}]
        params = {"temperature": float(self.cfg["temperature"]),
                  "max_tokens": int(self.cfg["max_tokens"]),
                  "seed": int(self.cfg["seed"]) + index}
        reply, cached = None, True
        for attempt in range(int(self.cfg["malformed_retries"]) + 1):
            key = request_key(self.name, messages, params, index, attempt)
            reply = self.cache.get(key)
            if reply is None:
                cached = False
                reply = self._send(messages, params)
                self.cache.put(key, {"model": self.name, "function": function, "index": index,
                                     "attempt": attempt, "params": params, "messages": messages,
                                     "reply": reply, "time": time.time()})
            else:
                self._count("cache_hits")
            parsed = parse_reply(function, reply)
            if parsed is not None:
                return {"function": function, "reply": reply, "parsed": parsed, "cached": cached,
                        "attempts": attempt + 1}
            self._count("malformed")
        return {"function": function, "reply": reply, "parsed": None, "cached": cached,
                "attempts": int(self.cfg["malformed_retries"]) + 1, "malformed": True}


# --------------------------------------------------------------------------------------------
# One assessment, one query
# --------------------------------------------------------------------------------------------
def _label(call: dict, field: str) -> str:
    return call["parsed"][field] if call["parsed"] is not None else "Unsure"


def llm_assessment(judge: LLMJudge, traj: dict, index: int) -> dict:
    """ToolEval's answer check (re-asked with the whole run when Unsure), then the task check."""
    calls = [judge.ask("check_answer_status",
                       {"query": traj["query"], "answer": final_answer_text(traj)}, index)]
    answer_status = _label(calls[-1], "answer_status")
    if answer_status == "Unsure":
        run = traj.get("answer") or {"final_answer": traj["final_answer"], "steps": traj["steps"]}
        calls.append(judge.ask("parse_answer_status",
                               {"query": traj["query"], "answer": json.dumps(run)}, index))
        answer_status = _label(calls[-1], "answer_status")
    task_status = "Solvable"
    if answer_status != "Solved":
        task = {"query": traj["query"], "available_tools": traj.get("available_tools", [])}
        calls.append(judge.ask("check_task_solvable", {"task": json.dumps(task)}, index))
        task_status = _label(calls[-1], "task_status")
    return {"answer_status": answer_status, "task_status": task_status, "source": "judge",
            "calls": calls, "malformed": any(c.get("malformed") for c in calls)}


def offline_answer_status(checks: dict, pre: str | None) -> tuple[str, str]:
    """The offline judge's rule (see the module docstring); returns (label, reason)."""
    if pre:
        return "Unsolved", pre
    if checks["successful_calls"] == 0:
        return "Unsolved", "no API call returned a result"
    if not checks["answer_grounded"]:
        return "Unsolved", "the final answer states no value that a successful relevant call returned"
    recall = checks["relevant_recall"]
    if checks["valid_names"] and checks["valid_inputs"] and (recall is None or recall >= 0.5):
        return "Solved", "valid calls only, a result obtained, relevant APIs called"
    return "Unsure", "finished with results, but with hallucinated/invalid calls or few relevant APIs"


def judge_query(traj: dict, checks: dict, judge: LLMJudge | None, times: int, seed: int,
                group: str) -> dict:
    """All assessments of one query, the votes and both scores."""
    pre = precheck(traj)
    assessments = []
    for index in range(times):
        if pre:
            a = {"answer_status": "Unsolved", "task_status": "Solvable", "source": "precheck",
                 "reason": pre, "calls": []}
        elif judge is None:
            status, reason = offline_answer_status(checks, None)
            a = {"answer_status": status, "task_status": "Solvable", "source": "offline",
                 "reason": reason, "calls": []}
        else:
            a = llm_assessment(judge, traj, index)
        a["label"] = assessment_label(a["answer_status"], a["task_status"])
        a["vote"], a["coin"] = vote(a["label"], seeded_rng(seed, group, traj["query_id"], index))
        assessments.append({"index": index, **a})
    votes = [a["vote"] for a in assessments]
    scores = [SCORE[a["answer_status"]] for a in assessments]
    return {"query_id": traj["query_id"], "group": group, "method": traj.get("method"),
            "judge": judge.name if judge else OFFLINE, "evaluate_times": times, "precheck": pre,
            "assessments": assessments,
            "votes": {"pass": votes.count("pass"), "fail": votes.count("fail")},
            "passed": majority(votes), "scores": scores, "score_mean": sum(scores) / len(scores),
            "final_answer": traj["final_answer"], "checks": checks}


# --------------------------------------------------------------------------------------------
# A group: resume, judge, append
# --------------------------------------------------------------------------------------------
def read_judgments(path: Path, judge_name: str, times: int) -> dict[str, dict]:
    """Judgments already written by this judge (same evaluate_times), by str(query_id). A torn last
    line (a run killed mid-write) is no judgment: that query is judged again, and the next append
    (lib.store) cuts the fragment. Reading never changes the file (it may be a reference's)."""
    return {str(rec["query_id"]): rec for rec in store.read_jsonl(path)
            if rec.get("judge") == judge_name and rec.get("evaluate_times") == times}


def judge_group(trajs: list[dict], queries: dict, out_path: Path, judge: LLMJudge | None,
                times: int, seed: int, group: str, workers: int = 1) -> list[dict]:
    """Judge every trajectory not yet in out_path (append-only); returns all, in input order."""
    name = judge.name if judge else OFFLINE
    done = read_judgments(out_path, name, times)
    todo = [t for t in trajs if str(t["query_id"]) not in done]

    def one(traj):
        checks = deterministic_checks(traj, queries.get(str(traj["query_id"])))
        return judge_query(traj, checks, judge, times, seed, group)

    pool = ThreadPoolExecutor(workers) if judge is not None and workers > 1 else None
    try:
        with store.JsonlAppender(out_path) as out:
            for rec in (pool.map(one, todo) if pool else map(one, todo)):
                out.write(rec)
                done[str(rec["query_id"])] = rec
    finally:
        if pool:                  # on an error, queries not yet started are not sent at all
            pool.shutdown(cancel_futures=True)
    return [done[str(t["query_id"])] for t in trajs]


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
def _pct(x: float) -> float:
    return round(100 * x, 2) if x == x else x


def overall_note(groups: list[str]) -> str:
    """'' when an overall pools all six groups; else which it pools, so that nobody reads it against
    the paper's six-group overall (77.55) as like for like."""
    if set(config.GROUPS) <= set(groups):
        return ""
    return (f"overall over {len(groups)} of {len(config.GROUPS)} groups: {', '.join(groups)}; "
            "the paper's overall covers all six")


def pass_rate_rows(judged: dict[str, list[dict]], judge_name: str, times: int) -> list[dict]:
    """pass_rate.csv rows: per group and overall (query-weighted), for both aggregations; `covers`
    names the groups a row pools. A group without queries has no row (a rate of 0 / 0 is no
    figure: run() says "no queries" in the log and pass_rate.md) and is not in the overall."""
    rows = []
    present = [g for g in judged if judged[g]]
    for aggregation in AGGREGATIONS:
        for group in present + ["overall"]:
            recs = [r for g in present for r in judged[g]] if group == "overall" else judged[group]
            n = len(recs)
            methods = sorted({str(r.get("method")) for r in recs}) or ["?"]
            if aggregation == "majority":
                passed = sum(r["passed"] for r in recs)
                std = None
            else:
                runs = mean_score_runs([r["scores"] for r in recs], times)
                passed = round(sum(runs) / len(runs) * n, 4)
                std = _pct(_std(runs))
            low, high = wilson(passed, n)
            rows.append({"method": "+".join(methods), "group": group, "n": n, "passed": passed,
                         "pass_rate": _pct(passed / n) if n else float("nan"),
                         "ci_low": _pct(low), "ci_high": _pct(high), "aggregation": aggregation,
                         "judge": judge_name, "std_over_runs": std,
                         "covers": "+".join(present) if group == "overall" else group})
    return rows


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


CSV_COLUMNS = ["method", "group", "n", "passed", "pass_rate", "ci_low", "ci_high", "aggregation",
               "judge", "covers"]
CHECK_COLUMNS = ["group", "n", "finished", "n_calls", "with_calls", "valid_names", "valid_inputs",
                 "hallucination_rate", "relevant_recall", "parse_error_rate"]


def _rate(part: float, whole: float) -> float | None:
    """part / whole in percent; None (n/a) for 0 / 0, which is no evidence, not 100% or 0%."""
    return _pct(part / whole) if whole else None


def checks_rows(judged: dict[str, list[dict]]) -> list[dict]:
    """Deterministic checks per group and overall, in percent. Valid names / inputs are shares of
    the trajectories that made a call: one without calls is valid only vacuously."""
    rows = []
    for group in list(judged) + ["overall"]:
        recs = [r for g in judged for r in judged[g]] if group == "overall" else judged[group]
        checks = [r["checks"] for r in recs]
        calling = [c for c in checks if c["n_calls"]]
        recalls = [c["relevant_recall"] for c in checks if c["relevant_recall"] is not None]
        calls = sum(c["n_calls"] for c in checks)
        rows.append({"group": group, "n": len(checks),
                     "finished": _rate(sum(c["finished"] for c in checks), len(checks)),
                     "n_calls": calls, "with_calls": len(calling),
                     "valid_names": _rate(sum(c["valid_names"] for c in calling), len(calling)),
                     "valid_inputs": _rate(sum(c["valid_inputs"] for c in calling), len(calling)),
                     "hallucination_rate": _rate(sum(len(c["hallucinated"]) for c in checks), calls),
                     "relevant_recall": _rate(sum(recalls), len(recalls)),
                     "parse_error_rate": _rate(sum(c["parse_errors"] for c in checks),
                                               sum(c["n_steps"] for c in checks))})
    return rows


def agreement(judged: dict[str, list[dict]]) -> dict:
    """Agreement of the repeated answer labels, over the queries the judge looked at."""
    out = {}
    for group in list(judged) + ["overall"]:
        recs = [r for g in judged for r in judged[g]] if group == "overall" else judged[group]
        labels = [[a["answer_status"] for a in r["assessments"]] for r in recs if not r["precheck"]]
        out[group] = {"queries_judged": len(labels),
                      "mean_pairwise_agreement": pairwise_agreement(labels),
                      "fleiss_kappa": fleiss_kappa(labels),
                      "coin_votes": sum(a["coin"] for r in recs for a in r["assessments"]),
                      "malformed_assessments": sum(bool(a.get("malformed")) for r in recs
                                                   for a in r["assessments"])}
    return out


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.2f}"
    return str(value)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    import csv
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def caption(judge_name: str, times: int, stamp: str | None) -> str:
    if judge_name == OFFLINE:
        what = (f"Pass rate by the **offline judge** (rule-based on the deterministic checks; "
                f"NOT ToolEval), {times} assessments per query")
    else:
        what = f"ToolEval-style pass rate, judge `{judge_name}`, {times} assessments per query"
    return what + (f" - {stamp}" if stamp else "")


def pass_rate_markdown(rows: list[dict], judge_name: str, times: int, stamp: str | None,
                       caveats: list[str] = ()) -> str:
    """pass_rate.md; `caveats` are run()'s words on what was judged (selection, empty groups)."""
    parts = [f"{caption(judge_name, times, stamp)}.", ""]
    groups = [r["group"] for r in rows if r["aggregation"] == AGGREGATIONS[0] and r["group"] != "overall"]
    if overall_note(groups):
        parts += [f"**Note: {overall_note(groups)}.**", ""]
    parts += [f"- **{caveat}.**" for caveat in caveats] + ([""] if caveats else [])
    notes = {"majority": "majority vote (paper; ToolBench: pass if pass votes >= fail votes, "
                              "Unsure decided by a seeded coin)",
             "mean": "mean score (StableToolBench: Solved 1 / Unsure 0.5 / Unsolved 0 per "
                           "run, mean over runs; std over runs in percentage points)"}
    for aggregation in AGGREGATIONS:
        sub = [r for r in rows if r["aggregation"] == aggregation]
        cols = CSV_COLUMNS + (["std_over_runs"] if aggregation == "mean" else [])
        parts += [f"**{notes[aggregation]}** - pass rates in %, Wilson 95% intervals:", "",
                  markdown_table(sub, cols), ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# Win rate (ToolEval's preference comparison)
# --------------------------------------------------------------------------------------------
def _offline_preference_score(checks: dict) -> tuple:
    return (checks["relevant_recall"] or 0.0, -len(checks["hallucinated"]),
            -checks["invalid_inputs"], -checks["n_steps"])


def _answer_for_comparison(traj: dict) -> dict:
    return traj.get("answer") or {"final_answer": traj["final_answer"],
                                  "total_steps": traj.get("total_steps"), "steps": traj["steps"]}


def compare(out_traj: dict, out_rec: dict, ref_traj: dict, ref_rec: dict, judge: LLMJudge | None,
            times: int, seed: int, group: str) -> dict:
    """One query: per round, a vote for 'output', 'reference' or 'equal'; then win/loss/tie."""
    rounds = []
    for index in range(times):
        call = None
        if out_rec["passed"] != ref_rec["passed"]:
            winner, why = ("output" if out_rec["passed"] else "reference"), "pass beats fail"
        else:
            statuses = {"output": out_rec["assessments"][index]["answer_status"],
                        "reference": ref_rec["assessments"][index]["answer_status"]}
            winner, why = _status_winner(statuses)
            if winner is None and judge is None:
                o, r = _offline_preference_score(out_rec["checks"]), _offline_preference_score(
                    ref_rec["checks"])
                winner = "output" if o > r else "reference" if r > o else "equal"
                why = "offline score (recall, hallucinations, invalid inputs, steps)"
            elif winner is None:
                a, b = _answer_for_comparison(out_traj), _answer_for_comparison(ref_traj)
                if json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True):
                    winner, why = "equal", "identical answers"
                else:
                    swap = seeded_rng(seed, "order", group, out_traj["query_id"], index).random() < 0.5
                    shown = ("reference", "output") if swap else ("output", "reference")
                    pair = (b, a) if swap else (a, b)
                    call = judge.ask("select_better_answer",
                                     {"query": out_traj["query"], "answer_0": json.dumps(pair[0]),
                                      "answer_1": json.dumps(pair[1])}, index)
                    winner = shown[call["parsed"]["index"]] if call["parsed"] else "equal"
                    why = f"judge, shown order {shown[0]} first"
        rounds.append({"index": index, "winner": winner, "why": why, "call": call})
    w = [r["winner"] for r in rounds]
    outcome = ("win" if w.count("output") > w.count("reference")
               else "loss" if w.count("output") < w.count("reference") else "tie")
    return {"query_id": out_traj["query_id"], "group": group,
            "judge": judge.name if judge else OFFLINE, "evaluate_times": times, "rounds": rounds,
            "votes": {"output": w.count("output"), "reference": w.count("reference")},
            "outcome": outcome}


def _status_winner(statuses: dict) -> tuple[str | None, str]:
    for label in ("Solved", "Unsure"):
        holders = [k for k, v in statuses.items() if v == label]
        if len(holders) == 1:
            return holders[0], f"only one answer {label}"
        if len(holders) == 2:
            return None, ""
    return None, ""


def _reference_dirs(cfg: dict) -> tuple[Path, Path | None]:
    ref = config.path(cfg, cfg["judge"]["win_rate_reference"])
    if (ref / "trajectories").is_dir():
        return ref / "trajectories", ref / "judgments"
    return ref, None


def win_rate(cfg: dict, judge: LLMJudge | None, judged: dict[str, list[dict]],
             trajs: dict[str, list[dict]], log=print) -> list[dict]:
    """Win rate of this run against judge.win_rate_reference, per group and overall."""
    jcfg, out = cfg["judge"], config.output_dir(cfg)
    times, seed = int(jcfg["evaluate_times"]), int(jcfg["seed"])
    ref_traj_dir, ref_judg_dir = _reference_dirs(cfg)
    name = judge.name if judge else OFFLINE
    rows, totals = [], {"n": 0, "win": 0, "loss": 0, "tie": 0}
    for group in (g for g in judged if judged[g]):        # a group without queries has no rate
        ref_path = ref_traj_dir / f"{group}.jsonl"
        if not ref_path.exists():
            log(f"win rate: no reference trajectories for {group} ({ref_path}), skipped")
            continue
        ours = {str(t["query_id"]) for t in trajs[group]}
        ref_trajs = [t for t in read_trajectories(ref_path) if str(t["query_id"]) in ours]
        queries = load_queries(config.path(cfg, cfg["data"]["test_dir"]) / f"{group}.json")
        ref_judged_path = out / "reference_judgments" / f"{group}.jsonl"
        if ref_judg_dir is not None and read_judgments(ref_judg_dir / f"{group}.jsonl", name, times):
            ref_judged_path = ref_judg_dir / f"{group}.jsonl"
        ref_recs = {str(r["query_id"]): r for r in judge_group(
            ref_trajs, queries, ref_judged_path, judge, times, seed, group,
            int(jcfg["max_workers"]))}
        ref_by_id = {str(t["query_id"]): t for t in ref_trajs}
        pref_path = config.output_dir(cfg, "preferences") / f"{group}.jsonl"
        done = {str(r["query_id"]): r for r in store.read_jsonl(pref_path)
                if r.get("judge") == name and r.get("evaluate_times") == times}
        with store.JsonlAppender(pref_path) as prefs:
            for traj, rec in zip(trajs[group], judged[group]):
                qid = str(traj["query_id"])
                if qid in done or qid not in ref_by_id:
                    continue
                done[qid] = compare(traj, rec, ref_by_id[qid], ref_recs[qid], judge, times, seed,
                                    group)
                prefs.write(done[qid])
        outcomes = [done[str(t["query_id"])]["outcome"] for t in trajs[group]
                    if str(t["query_id"]) in done]
        row = {k: outcomes.count(k) for k in ("win", "loss", "tie")}
        rows.append(_win_row(group, len(outcomes), row, name, jcfg["win_rate_reference"]))
        for k in totals:
            totals[k] += len(outcomes) if k == "n" else row[k]
    if rows:
        rows.append(_win_row("overall", totals["n"], totals, name, jcfg["win_rate_reference"]))
    return rows


def _win_row(group, n, counts, judge_name, reference) -> dict:
    return {"group": group, "reference": str(reference), "n": n, "wins": counts["win"],
            "losses": counts["loss"], "ties": counts["tie"],
            "win_rate": _pct(counts["win"] / n) if n else float("nan"),
            "tie_rate": _pct(counts["tie"] / n) if n else float("nan"),
            "loss_rate": _pct(counts["loss"] / n) if n else float("nan"), "judge": judge_name}


WIN_COLUMNS = ["group", "reference", "n", "wins", "losses", "ties", "win_rate", "tie_rate",
               "loss_rate", "judge"]


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------
def make_judge(cfg: dict) -> LLMJudge | None:
    jcfg = cfg["judge"]
    if jcfg["kind"] == "offline":
        return None
    if jcfg["kind"] != "llm":
        raise config.ConfigError(f"judge.kind must be 'offline' or 'llm', got {jcfg['kind']!r}")
    return LLMJudge(jcfg, JudgeCache(config.output_dir(cfg) / "judge_cache.jsonl"))


def run(cfg: dict, log=print):
    """Judge every group's trajectories; write judgments, pass_rate.csv/.md, checks, summary.
    Returns the pass-rate table (a pandas DataFrame). One stage-04 run at a time per output folder:
    a second one fails at once (lib.store.exclusive) instead of judging every query twice."""
    with store.exclusive(config.output_dir(cfg) / "judgments", "stage 04 judge"):
        return _run(cfg, log)


def _run(cfg: dict, log):
    import pandas as pd
    jcfg, out = cfg["judge"], config.output_dir(cfg)
    times, seed = int(jcfg["evaluate_times"]), int(jcfg["seed"])
    if times < 1:
        raise config.ConfigError("judge.evaluate_times must be >= 1 (the paper used >= 4)")
    judge = make_judge(cfg)
    name = judge.name if judge else OFFLINE

    # Load the trajectories of every group that has some, and select what this run's settings ask.
    traj_dir, test_dir = out / "trajectories", config.path(cfg, cfg["data"]["test_dir"])
    groups = [g for g in cfg["inference"]["groups"] if (traj_dir / f"{g}.jsonl").exists()]
    if not groups:
        raise FileNotFoundError(f"no trajectories in {traj_dir}: run notebook 03 first")
    trajs, selection, notes = {}, {}, []
    for g in groups:
        trajs[g], selection[g] = select(read_trajectories(traj_dir / f"{g}.jsonl"),
                                        load_queries(test_dir / f"{g}.json"),
                                        cfg["inference"]["max_queries_per_group"])
        for note, warning in selection_notes(selection[g], test_dir / f"{g}.json"):
            log(f"{'WARNING: ' if warning else ''}{g}: {note}")
            notes.append(f"{g}: {note}")
    if not any(trajs.values()):
        raise JudgeInputError(f"no trajectories to judge in {traj_dir} for the selected queries "
                              f"({'; '.join(notes)}): run notebook 03 first")

    # Judge (resuming from judgments/<group>.jsonl while the judge and the trajectories are the same;
    # only now, with the settings and every input checked, is the folder touched).
    judgments = config.resumable_dir(cfg, "judgments", {
        "judge": jcfg, "offline_rule": OFFLINE_RULE if judge is None else None,
        "trajectories": config.file_digest(*(traj_dir / f"{g}.jsonl" for g in groups))}, log=log)
    judged = {}
    for group in groups:
        queries = load_queries(test_dir / f"{group}.json")
        judged[group] = judge_group(trajs[group], queries, judgments / f"{group}.jsonl",
                                    judge, times, seed, group, int(jcfg["max_workers"]))
        log(f"{group}: {len(judged[group])} queries judged by {name}")

    # Tables: pass rate (both aggregations), deterministic checks, agreement.
    rows = pass_rate_rows(judged, name, times)
    _write_csv(out / "pass_rate.csv", rows, CSV_COLUMNS)
    (out / "pass_rate.md").write_text(
        pass_rate_markdown(rows, name, times, cfg.get("stamp"), notes), encoding="utf-8")
    check_rows = checks_rows(judged)
    _write_csv(out / "checks.csv", check_rows, CHECK_COLUMNS)

    # Win rate against a reference method, when one is configured.
    win_rows = win_rate(cfg, judge, judged, trajs, log) if jcfg["win_rate_reference"] else []
    if win_rows:
        _write_csv(out / "win_rate.csv", win_rows, WIN_COLUMNS)

    summary = {"judge": name, "kind": jcfg["kind"], "evaluate_times": times, "stamp": cfg.get("stamp"),
               "selection": selection, "no_queries": [g for g in groups if not judged[g]],
               "notes": notes, "pass_rate": rows, "checks": check_rows,
               "agreement": agreement(judged),
               "win_rate": win_rows, "requests": judge.counts if judge else None}
    (out / "judge_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return pd.DataFrame(rows, columns=CSV_COLUMNS + ["std_over_runs"])


# Small readers for the notebook.
def summary(cfg: dict) -> dict:
    return json.loads((config.output_dir(cfg) / "judge_summary.json").read_text(encoding="utf-8"))


def examples(cfg: dict, k: int = 3) -> list[dict]:
    """A few judged queries (a pass, a fail, a judge-asked one when present), shortened."""
    recs = [r for p in sorted((config.output_dir(cfg) / "judgments").glob("*.jsonl"))
            for r in store.read_jsonl(p)]
    picks = ([r for r in recs if r["passed"]][:1] + [r for r in recs if not r["passed"]][:1]
             + [r for r in recs if not r["precheck"]][:k])
    seen, out = set(), []
    for r in picks:
        if (r["group"], str(r["query_id"])) in seen or len(out) >= k:
            continue
        seen.add((r["group"], str(r["query_id"])))
        a = r["assessments"][0]
        out.append({"group": r["group"], "query_id": r["query_id"], "judge": r["judge"],
                    "final_answer": r["final_answer"][:160], "precheck": r["precheck"],
                    "answer_status": [x["answer_status"] for x in r["assessments"]],
                    "task_status": a["task_status"], "votes": r["votes"], "passed": r["passed"],
                    "score_mean": r["score_mean"],
                    "first_reply": (a["calls"][0]["reply"][:200] if a["calls"] else a.get("reason")),
                    "checks": {c: r["checks"][c] for c in ("finished", "valid_names",
                                                           "valid_inputs", "relevant_recall")}})
    return out
