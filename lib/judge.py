"""Stage 04: judge the trajectories of stage 03 - ToolEval pass rate, win rate, deterministic checks.

What `run(cfg)` does, top to bottom, and where each rule lives:

1. Reads `outputs/<profile>/trajectories/<group>.jsonl` (docs/formats.md; a query id twice in a file
   is an error naming both lines; lib/judgments.py) and the test queries of
   `data.test_dir/<group>.json` (for each query's `api_list` and "relevant APIs"). It judges what
   this run's settings select, as stage 03 runs it: the trajectories of the first
   `inference.max_queries_per_group` queries of the test file (`select`); others an earlier, larger
   run left in the file stay there, unjudged, and the log and pass_rate.md say how many were judged
   of how many. A group with no selected trajectory ("no queries") is a warning and has no
   pass-rate row, instead of a rate of nan.
2. Deterministic checks, no LLM, for every trajectory (lib/trajectory_checks.py): finished, valid
   function names and inputs, hallucination rate, relevant-API recall, parse-error rate, a grounded
   answer.
3. Pass rate, ToolEval's algorithm (lib/tooleval.py: pre-checks, labels, votes, prompts),
   `judge.evaluate_times` assessments per query, each query's judgment appended to
   `judgments/<group>.jsonl` (lib/judgments.py). Two aggregations, both reported and named in
   pass_rate.csv's `aggregation` column: `majority` (the paper's "majority voting"; ToolBench's rule)
   and `mean` (StableToolBench's "solvable pass rate"), with the std over runs (population std, as
   numpy's default) in pass_rate.md and judge_summary.json.
4. The judge (`judge.kind`, `make_judge`): `llm`, any OpenAI-compatible chat endpoint, cached and
   retried (lib/llm_judge.py); or `offline`, the **offline judge**, a transparent rule on the
   deterministic checks, NOT ToolEval, every number it gives labelled "offline judge"
   (lib/offline_judge.py).
5. Win rate against a reference method (`judge.win_rate_reference`), ToolEval's preference
   comparison (lib/win_rate.py).
6. Statistics (lib/stats.py): per group and overall (query-weighted, as the paper's Table 1) pass
   rate with Wilson 95% intervals (an overall over fewer than the six groups names the groups it
   pools, in pass_rate.csv's `covers` and a note in pass_rate.md); agreement of the repeated
   assessments (mean pairwise agreement and Fleiss' kappa over the answer labels of the queries the
   judge was asked about).

Outputs under outputs/<profile>/: `judgments/<group>.jsonl` (append-only, one line per query: every
assessment with the judge's replies, the votes, both scores and the checks; a rerun skips query ids
already judged by the same judge), `pass_rate.csv` / `pass_rate.md`, `checks.csv`,
`judge_summary.json`, `judge_cache.jsonl`, and with a reference `preferences/<group>.jsonl`,
`win_rate.csv`. Every JSONL file here is appended and read through lib.store: a line torn by a
killed run is skipped, and cut before the next append instead of swallowing it.
"""
from __future__ import annotations

import json
from pathlib import Path

from lib import config, judgments, llm_judge, offline_judge, stats, store, tables, tooleval, win_rate


# --------------------------------------------------------------------------------------------
# Selecting what to judge
# --------------------------------------------------------------------------------------------
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
# Tables
# --------------------------------------------------------------------------------------------
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
    for aggregation in tooleval.AGGREGATIONS:
        for group in present + ["overall"]:
            recs = [r for g in present for r in judged[g]] if group == "overall" else judged[group]
            n = len(recs)
            methods = sorted({str(r.get("method")) for r in recs}) or ["?"]
            if aggregation == "majority":
                passed = sum(r["passed"] for r in recs)
                std = None
            else:
                runs = stats.mean_score_runs([r["scores"] for r in recs], times)
                passed = round(sum(runs) / len(runs) * n, 4)
                std = stats.percent(stats.population_std(runs))
            low, high = stats.wilson(passed, n)
            rows.append({"method": "+".join(methods), "group": group, "n": n, "passed": passed,
                         "pass_rate": stats.percent(passed / n) if n else float("nan"),
                         "ci_low": stats.percent(low), "ci_high": stats.percent(high),
                         "aggregation": aggregation, "judge": judge_name, "std_over_runs": std,
                         "covers": "+".join(present) if group == "overall" else group})
    return rows


CSV_COLUMNS = ["method", "group", "n", "passed", "pass_rate", "ci_low", "ci_high", "aggregation",
               "judge", "covers"]
CHECK_COLUMNS = ["group", "n", "finished", "n_calls", "with_calls", "valid_names", "valid_inputs",
                 "hallucination_rate", "relevant_recall", "parse_error_rate"]


def _rate(part: float, whole: float) -> float | None:
    """part / whole in percent; None (n/a) for 0 / 0, which is no evidence, not 100% or 0%."""
    return stats.percent(part / whole) if whole else None


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
                      "mean_pairwise_agreement": stats.pairwise_agreement(labels),
                      "fleiss_kappa": stats.fleiss_kappa(labels, tooleval.ANSWER_LABELS),
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
    """Stage 04's rows (dicts) as a Markdown table of `columns`, numbers to 2 decimals."""
    return tables.pipe_table(columns, [[_fmt(r.get(c)) for c in columns] for r in rows])


def caption(judge_name: str, times: int, stamp: str | None) -> str:
    if judge_name == offline_judge.OFFLINE:
        what = (f"Pass rate by the **offline judge** (rule-based on the deterministic checks; "
                f"NOT ToolEval), {times} assessments per query")
    else:
        what = f"ToolEval-style pass rate, judge `{judge_name}`, {times} assessments per query"
    return what + (f" - {stamp}" if stamp else "")


def pass_rate_markdown(rows: list[dict], judge_name: str, times: int, stamp: str | None,
                       caveats: list[str] = ()) -> str:
    """pass_rate.md; `caveats` are run()'s words on what was judged (selection, empty groups)."""
    parts = [f"{caption(judge_name, times, stamp)}.", ""]
    groups = [r["group"] for r in rows
              if r["aggregation"] == tooleval.AGGREGATIONS[0] and r["group"] != "overall"]
    if overall_note(groups):
        parts += [f"**Note: {overall_note(groups)}.**", ""]
    parts += [f"- **{caveat}.**" for caveat in caveats] + ([""] if caveats else [])
    notes = {"majority": "majority vote (paper; ToolBench: pass if pass votes >= fail votes, "
                              "Unsure decided by a seeded coin)",
             "mean": "mean score (StableToolBench: Solved 1 / Unsure 0.5 / Unsolved 0 per "
                           "run, mean over runs; std over runs in percentage points)"}
    for aggregation in tooleval.AGGREGATIONS:
        sub = [r for r in rows if r["aggregation"] == aggregation]
        cols = CSV_COLUMNS + (["std_over_runs"] if aggregation == "mean" else [])
        parts += [f"**{notes[aggregation]}** - pass rates in %, Wilson 95% intervals:", "",
                  markdown_table(sub, cols), ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------
def make_judge(cfg: dict) -> llm_judge.LLMJudge | None:
    """The judge judge.kind names: an LLMJudge with the run's cache, or None for the offline judge."""
    judge_cfg = cfg["judge"]
    if judge_cfg["kind"] == "offline":
        return None
    if judge_cfg["kind"] != "llm":
        raise config.ConfigError(f"judge.kind must be 'offline' or 'llm', got {judge_cfg['kind']!r}")
    return llm_judge.LLMJudge(judge_cfg, llm_judge.JudgeCache(config.output_dir(cfg) / "judge_cache.jsonl"))


def run(cfg: dict, log=print):
    """Judge every group's trajectories; write judgments, pass_rate.csv/.md, checks, summary.
    Returns the pass-rate table (a pandas DataFrame). One stage-04 run at a time per output folder:
    a second one fails at once (lib.store.exclusive) instead of judging every query twice."""
    with store.exclusive(config.output_dir(cfg) / "judgments", "stage 04 judge"):
        return _run(cfg, log)


def _run(cfg: dict, log):
    import pandas as pd         # here, not at the top: a heavy import only the returned table needs
    judge_cfg, out = cfg["judge"], config.output_dir(cfg)
    times, seed = int(judge_cfg["evaluate_times"]), int(judge_cfg["seed"])
    if times < 1:
        raise config.ConfigError("judge.evaluate_times must be >= 1 (the paper used >= 4)")
    judge = make_judge(cfg)
    name = judge.name if judge else offline_judge.OFFLINE

    # Load the trajectories of every group that has some, and select what this run's settings ask.
    traj_dir, test_dir = out / "trajectories", config.path(cfg, cfg["data"]["test_dir"])
    groups = [g for g in cfg["inference"]["groups"] if (traj_dir / f"{g}.jsonl").exists()]
    if not groups:
        raise FileNotFoundError(f"no trajectories in {traj_dir}: run notebook 03 first")
    trajs, queries, selection, notes = {}, {}, {}, []
    for g in groups:
        queries[g] = judgments.load_queries(test_dir / f"{g}.json")
        trajs[g], selection[g] = select(judgments.read_trajectories(traj_dir / f"{g}.jsonl"),
                                        queries[g], cfg["inference"]["max_queries_per_group"])
        for note, warning in selection_notes(selection[g], test_dir / f"{g}.json"):
            log(f"{'WARNING: ' if warning else ''}{g}: {note}")
            notes.append(f"{g}: {note}")
    if not any(trajs.values()):
        raise judgments.JudgeInputError(f"no trajectories to judge in {traj_dir} for the selected "
                                        f"queries ({'; '.join(notes)}): run notebook 03 first")

    # Judge (resuming from judgments/<group>.jsonl while the judge and the trajectories are the same;
    # only now, with the settings and every input checked, is the folder touched).
    judgments_dir = config.resumable_dir(cfg, "judgments", {
        "judge": judge_cfg, "offline_rule": offline_judge.OFFLINE_RULE if judge is None else None,
        "trajectories": config.file_digest(*(traj_dir / f"{g}.jsonl" for g in groups))}, log=log)
    judged = {}
    for group in groups:
        judged[group] = judgments.judge_group(trajs[group], queries[group],
                                              judgments_dir / f"{group}.jsonl", judge, times, seed,
                                              group, int(judge_cfg["max_workers"]))
        log(f"{group}: {len(judged[group])} queries judged by {name}")

    # Tables: pass rate (both aggregations), deterministic checks, agreement.
    rows = pass_rate_rows(judged, name, times)
    tables.write_csv(out / "pass_rate.csv", rows, CSV_COLUMNS)
    (out / "pass_rate.md").write_text(
        pass_rate_markdown(rows, name, times, cfg.get("stamp"), notes), encoding="utf-8")
    check_rows = checks_rows(judged)
    tables.write_csv(out / "checks.csv", check_rows, CHECK_COLUMNS)

    # Win rate against a reference method, when one is configured.
    win_rows = (win_rate.win_rate(cfg, judge, judged, trajs, log) if judge_cfg["win_rate_reference"]
                else [])
    if win_rows:
        tables.write_csv(out / "win_rate.csv", win_rows, win_rate.WIN_COLUMNS)

    summary = {"judge": name, "kind": judge_cfg["kind"], "evaluate_times": times, "stamp": cfg.get("stamp"),
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
