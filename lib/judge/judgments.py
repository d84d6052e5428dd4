"""Judging a group of trajectories into its judgments file: stage 03's trajectories read and
checked (lib/toolbench/trajectories.py), every query judged `judge.evaluate_times` times, one line per query appended to
`judgments/<group>.jsonl` (docs/formats.md). `judge_query` judges one query, `judge_group` a group,
skipping query ids already judged by the same judge with the same evaluate_times.
"""
from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lib.common import config, settings, store
from lib.common.settings import Judge, Profile
from lib.toolbench import formats, tooleval
from lib.checks import offline_judge, trajectory_checks
from lib.judge import llm_judge
from lib.common.progress import Progress


class JudgeInputError(ValueError):
    """A query record, or a selection, that cannot be judged (a trajectory line that cannot:
    lib.toolbench.trajectories.TrajectoryError)."""


# --------------------------------------------------------------------------------------------
# Reading queries
# --------------------------------------------------------------------------------------------
def load_queries(path: str | Path | None) -> dict[str, dict]:
    """ToolBench test queries by str(query_id), read and checked by stage 03's reader; {} when the
    file is absent."""
    if path is None or not Path(path).exists():
        return {}
    return {str(q["query_id"]): q for q in formats.load_queries(path)}


def select(trajs: list[dict], queries: dict[str, dict],
           limit: int | None) -> tuple[list[dict], dict]:
    """The trajectories this run's settings ask to judge: those of the first `limit`
    (inference.max_queries_per_group) queries of the test file - the queries stage 03 runs
    (lib.infer.inference.run), so that stage 04 reports on what stage 03's summary counts, not on every
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


# The judge settings a judgment depends on; the others (time-outs, retries, workers, max_calls, the
# released list) may change between a run and its resumption without setting judgments aside.
JUDGMENT_SETTINGS = ("kind", "evaluate_times", "base_url", "model", "temperature", "max_tokens", "seed",
                     "malformed_retries", "evaluator_dir", "serve", "serve_model", "serve_gguf", "serve_dtype",
                     "serve_args")


def judgment_settings(judge_cfg: Judge) -> dict:
    values = {k: getattr(judge_cfg, k) for k in JUDGMENT_SETTINGS}
    return {k: config.as_dict(v) if dataclasses.is_dataclass(v) else v for k, v in values.items()}


@dataclass(frozen=True)
class Judging:
    """Who judges and how: the LLM judge (None: the offline rule), assessments per query, the seed of
    the votes' coins, and how many queries are judged at once (an LLM judge only)."""
    judge: llm_judge.LLMJudge | None
    times: int
    seed: int
    workers: int | None = 1

    @classmethod
    def of(cls, judge: llm_judge.LLMJudge | None, judge_cfg: settings.Judge) -> "Judging":
        return cls(judge, judge_cfg.evaluate_times, judge_cfg.seed, judge_cfg.max_workers)

    @property
    def name(self) -> str:
        return self.judge.name if self.judge else offline_judge.OFFLINE


def make_judge(cfg: Profile) -> llm_judge.LLMJudge | None:
    """The judge judge.kind names: an LLMJudge with the run's cache, or None for the offline judge."""
    judge_cfg = cfg.judge
    if judge_cfg.kind == "offline":
        return None
    if judge_cfg.kind != "llm":
        raise config.ConfigError(f"judge.kind must be 'offline' or 'llm', got {judge_cfg.kind!r}")
    return llm_judge.LLMJudge(judge_cfg, llm_judge.JudgeCache(config.output_dir(cfg) / "judge_cache.jsonl"))


# --------------------------------------------------------------------------------------------
# One query: its assessments, votes and scores
# --------------------------------------------------------------------------------------------
OFFLINE_TASK = ("; ToolEval would still ask whether the task was solvable (and pass it if not); the "
                "offline judge cannot, and counts it Solvable")


def judge_query(traj: dict, checks: dict, judge: llm_judge.LLMJudge | None, times: int, seed: int,
                group: str) -> dict:
    """All assessments of one query, the votes and both scores."""
    pre = tooleval.precheck(traj)
    assessments = []
    for index in range(times):
        if judge is not None and tooleval.asks_task(pre):
            a = tooleval.llm_assessment(judge, traj, index, answer_rule=pre)
        elif pre:
            a = {"answer_status": "Unsolved", "task_status": "Solvable", "source": "precheck",
                 "reason": pre + (OFFLINE_TASK if tooleval.asks_task(pre) else ""), "calls": []}
        elif judge is None:
            status, reason = offline_judge.offline_answer_status(checks, None)
            a = {"answer_status": status, "task_status": "Solvable", "source": "offline",
                 "reason": reason, "calls": []}
        else:
            a = tooleval.llm_assessment(judge, traj, index)
        a["label"] = tooleval.assessment_label(a["answer_status"], a["task_status"])
        coin = tooleval.seeded_rng(seed, group, traj["query_id"], index)
        a["vote"], a["coin"] = tooleval.vote(a["label"], coin)
        assessments.append({"index": index, **a})
    votes = [a["vote"] for a in assessments]
    scores = [tooleval.SCORE[a["answer_status"]] for a in assessments]
    return {"query_id": traj["query_id"], "group": group, "method": traj.get("method"),
            "judge": judge.name if judge else offline_judge.OFFLINE, "evaluate_times": times,
            "precheck": pre, "assessments": assessments,
            "votes": {"pass": votes.count("pass"), "fail": votes.count("fail")},
            "passed": tooleval.majority(votes), "scores": scores,
            "score_mean": sum(scores) / len(scores),
            "final_answer": traj["final_answer"], "checks": checks}


def deemed_solvable(judgment: dict) -> bool:
    """Whether the judge deems the query's task solvable: not when most of its assessments label the
    task Unsolvable (an answer labelled Solved counts its task Solvable, as ToolEval's does)."""
    labels = [a["task_status"] for a in judgment["assessments"]]
    return 2 * labels.count("Unsolvable") <= len(labels)


# --------------------------------------------------------------------------------------------
# A group: resume, judge, append
# --------------------------------------------------------------------------------------------
def read_judgments(path: Path, judge_name: str, times: int) -> dict[str, dict]:
    """Judgments already written by this judge (same evaluate_times), by str(query_id). A torn last
    line (a run killed mid-write) is no judgment: that query is judged again, and the next append
    (lib.common.store) cuts the fragment. Reading never changes the file (it may be a reference's)."""
    return {str(rec["query_id"]): rec for rec in store.read_jsonl(path)
            if rec.get("judge") == judge_name and rec.get("evaluate_times") == times}


def judge_group(trajs: list[dict], queries: dict, out_path: Path, judging: Judging, group: str,
                progress_log=print) -> list[dict]:
    """Judge every trajectory not yet in out_path (append-only); returns all, in input order.
    Progress (queries judged of the group, rate, ETA) goes to `progress_log` (lib.common.progress)."""
    judge, times, seed, workers = judging.judge, judging.times, judging.seed, judging.workers
    done = read_judgments(out_path, judging.name, times)
    todo = [t for t in trajs if str(t["query_id"]) not in done]
    progress = Progress(f"04 {group} judged", len(trajs), log=progress_log, start_at=len(trajs) - len(todo),
                        unit="query")

    def one(traj):
        checks = trajectory_checks.deterministic_checks(traj, queries.get(str(traj["query_id"])))
        return judge_query(traj, checks, judge, times, seed, group)

    finished = passed = 0
    pool = ThreadPoolExecutor(workers) if judge is not None and workers > 1 else None
    try:
        with store.JsonlAppender(out_path) as out:
            for rec in (pool.map(one, todo) if pool else map(one, todo)):
                out.write(rec)
                done[str(rec["query_id"])] = rec
                passed += rec["passed"]
                progress.update(progress.start_at + (finished := finished + 1), f"{passed} passed in this run")
    finally:
        progress.close()
        if pool:                  # on an error, queries not yet started are not sent at all
            pool.shutdown(cancel_futures=True)
    return [done[str(t["query_id"])] for t in trajs]
