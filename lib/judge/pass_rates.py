"""Stage 04's tables of a judged set (ours, or a released run's): pass rates per group and overall
for both aggregations with Wilson intervals and the rate on the queries the judge deems solvable
(pass_rate.csv / .md), the deterministic checks (checks.csv), the agreement of repeated assessments,
and `judge_set`, which judges a `TrajectorySet` group by group (lib/judge/judgments.py) and writes
those tables.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lib.common import config, stats, tables
from lib.common.settings import Profile
from lib.toolbench import tooleval
from lib.checks import offline_judge
from lib.judge import judgments


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
            # ToolEval passes a query whose task the judge deems unsolvable; beside the rate, the
            # rate over the queries it deems solvable.
            solvable = [r for r in recs if judgments.deemed_solvable(r)]
            if aggregation == "majority":
                solvable_passed = sum(r["passed"] for r in solvable)
            else:
                solvable_passed = sum(r["score_mean"] for r in solvable)
            rows.append({"method": "+".join(methods), "group": group, "n": n, "passed": passed,
                         "pass_rate": stats.percent(passed / n) if n else float("nan"),
                         "ci_low": stats.percent(low), "ci_high": stats.percent(high),
                         "aggregation": aggregation, "judge": judge_name, "covers":
                         "+".join(present) if group == "overall" else group,
                         "n_solvable": len(solvable), "pass_rate_solvable":
                         stats.percent(solvable_passed / len(solvable)) if solvable else None,
                         "std_over_runs": std})
    return rows


CSV_COLUMNS = ["method", "group", "n", "passed", "pass_rate", "ci_low", "ci_high", "aggregation",
               "judge", "covers", "n_solvable", "pass_rate_solvable"]
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
        # Released answers with cut messages have no argument checks (None): not counted either way.
        inputs = [c["valid_inputs"] for c in calling if c["valid_inputs"] is not None]
        rows.append({"group": group, "n": len(checks),
                     "finished": _rate(sum(c["finished"] for c in checks), len(checks)),
                     "n_calls": calls, "with_calls": len(calling),
                     "valid_names": _rate(sum(c["valid_names"] for c in calling), len(calling)),
                     "valid_inputs": _rate(sum(inputs), len(inputs)),
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


def caption(judge_name: str, times: int, stamp: str | None) -> str:
    if judge_name == offline_judge.OFFLINE:
        what = (f"Pass rate by the **offline judge** (rule-based on the deterministic checks; "
                f"NOT ToolEval), {times} assessments per query")
    else:
        what = f"ToolEval-style pass rate, judge `{judge_name}`, {times} assessments per query"
    return what + (f" - {stamp}" if stamp else "")


def pass_rate_markdown(rows: list[dict], judge_name: str, times: int, stamp: str | None,
                       caveats: list[str] = (), prompts: str | None = None) -> str:
    """pass_rate.md; `caveats` are run()'s words on what was judged (selection, empty groups)."""
    parts = [f"{caption(judge_name, times, stamp)}.", ""] + ([f"Prompts: {prompts}.", ""] if prompts else [])
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
                  tables.markdown_table(cols, sub), ""]
    return "\n".join(parts)


def prompts_used(judge) -> str:
    """Which prompts judged: the LLM judge names them; the offline judge asks none."""
    if judge is None:
        return "none (the offline judge is a rule)"
    return getattr(judge, "prompts", "ours (lib/toolbench/tooleval_prompts/)")


@dataclass(frozen=True)
class TrajectorySet:
    """A set of trajectories to judge by group (ours, or a released run's), and where it goes."""
    trajs: dict[str, list[dict]]
    queries: dict[str, dict]            # each group's test queries by str(query_id)
    paths: dict[str, Path]              # each group's judgments JSONL
    folder: Path                        # pass_rate.csv, pass_rate.md, checks.csv
    notes: list[str]                    # what was judged, for pass_rate.md
    method: str | None = None           # a released run's name: the tables' method, the log's prefix
    # Other groups' judgments, judged before (a released run judged a group at a time).
    earlier: dict[str, list[dict]] = field(default_factory=dict)

    def said(self, line: str) -> str:
        return f"{self.method + ': ' if self.method else ''}{line}"


def judge_set(cfg: Profile, judge, todo: TrajectorySet, log) -> dict:
    """Judge `todo` group by group into its judgments files and write its folder's pass_rate.csv,
    pass_rate.md and checks.csv, over these groups and the earlier ones."""
    judging = judgments.Judging.of(judge, cfg.judge)
    if judge is not None:       # what this will cost, before any paid call
        log(todo.said(cost_estimate(judging, todo).line()))
    judged = judge_groups(judging, todo, log)
    return write_tables(cfg, judging, todo, judged)


def cost_estimate(judging: judgments.Judging, todo: TrajectorySet):
    """The LLM judge's estimate of the calls the queries not yet judged will make."""
    times = judging.times
    done = {g: judgments.read_judgments(todo.paths[g], judging.name, times) for g in todo.trajs}
    return judging.judge.estimate((*call, index) for g in todo.trajs for t in todo.trajs[g]
                                  if str(t["query_id"]) not in done[g] for index in range(times)
                                  if (call := tooleval.first_call(t)) is not None)


def judge_groups(judging: judgments.Judging, todo: TrajectorySet, log) -> dict[str, list[dict]]:
    """Every group's judgments, in ToolBench's group order (a group of another name, a user's own
    test file, keeps its place after); an earlier group's as they were."""
    judged = {}
    groups = [*todo.trajs, *(g for g in todo.earlier if g not in todo.trajs)]
    for group in sorted(groups, key=lambda g: config.GROUPS.index(g) if g in config.GROUPS else len(config.GROUPS)):
        if group not in todo.trajs:
            judged[group] = todo.earlier[group]
            continue
        judged[group] = judgments.judge_group(todo.trajs[group], todo.queries.get(group, {}), todo.paths[group],
                                              judging, group)
        log(todo.said(f"{group}: {len(judged[group])} queries judged by {judging.name}"))
    return judged


def write_tables(cfg: Profile, judging: judgments.Judging, todo: TrajectorySet, judged: dict[str, list[dict]]) -> dict:
    """pass_rate.csv, pass_rate.md and checks.csv of the judged set; returns what they hold, with the
    judgments, their agreement and the queries deemed unsolvable."""
    name, times, notes = judging.name, judging.times, todo.notes
    rows = pass_rate_rows(judged, name, times)
    if todo.method:
        for row in rows:
            row["method"] = todo.method
    tables.write_csv(todo.folder / "pass_rate.csv", rows, CSV_COLUMNS)
    unsolvable = {g: [str(r["query_id"]) for r in judged[g] if not judgments.deemed_solvable(r)]
                  for g in judged}
    if any(unsolvable.values()):
        notes = [*notes, "the judge deemed unsolvable: " + "; ".join(
            f"{g} {len(ids)} of {len(judged[g])}" for g, ids in unsolvable.items() if ids)
            + " (ToolEval passes those; `pass_rate_solvable` leaves them out)"]
    (todo.folder / "pass_rate.md").write_text(
        pass_rate_markdown(rows, name, times, cfg.stamp, notes, prompts_used(judging.judge)), encoding="utf-8")
    check_rows = checks_rows(judged)
    tables.write_csv(todo.folder / "checks.csv", check_rows, CHECK_COLUMNS)
    return {"rows": rows, "checks": check_rows, "judged": judged, "agreement": agreement(judged),
            "deemed_unsolvable": unsolvable}
