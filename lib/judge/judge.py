"""Stage 04: judge the trajectories of stage 03 - ToolEval pass rate, win rate, deterministic checks.

`run(cfg)` reads the trajectories this run's settings select, checks each one
(lib/checks/trajectory_checks.py), judges it `judge.evaluate_times` times with the LLM judge
(lib/judge/llm_judge.py) or the offline judge (lib/checks/offline_judge.py) under ToolEval's rules
(lib/toolbench/tooleval.py), and writes pass rates under both aggregations with Wilson intervals,
agreement, and the win rate against `judge.win_rate_reference`. Files: docs/formats.md, "04 judge";
rules: docs/judging.md.
"""
from __future__ import annotations

import json
from pathlib import Path

from lib.common import config, resume, store, tables
from lib.common.settings import Profile
from lib.toolbench import released, tooleval, trajectories
from lib.models import backends
from lib.checks import offline_judge
from lib.infer import untrained
from lib.judge import judgments, llm_judge, pass_rates, released_runs, win_rate



# --------------------------------------------------------------------------------------------
# What was selected, in words
# --------------------------------------------------------------------------------------------
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
# One group's trajectories, as the stage judges them
# --------------------------------------------------------------------------------------------
def selected_trajectories(cfg: Profile, group: str) -> tuple[list[dict], dict[str, dict], dict]:
    """A group's trajectories as stage 04 judges them: trajectories/<group>.jsonl read and checked,
    those of the first inference.max_queries_per_group test queries (judgments.select); with the
    group's test queries by str(query_id) and the selection's account."""
    out, test_dir = config.output_dir(cfg), config.path(cfg, cfg.data.test_dir)
    queries = judgments.load_queries(test_dir / f"{group}.json")
    trajs, account = judgments.select(trajectories.read(out / "trajectories" / f"{group}.jsonl"),
                                      queries, cfg.inference.max_queries_per_group)
    return trajs, queries, account


def example_trajectory(cfg: Profile) -> dict:
    """One trajectory to follow through stage 04 by hand (notebook 04): the first, in group order,
    whose answer the judge must look at (it ends with a Finish answer no pre-check decides), else
    the first selected one. {group, trajectory, query (its test query, or None)}."""
    traj_dir = config.output_dir(cfg) / "trajectories"
    found = []
    for group in (g for g in cfg.inference.groups if (traj_dir / f"{g}.jsonl").exists()):
        trajs, queries, _ = selected_trajectories(cfg, group)
        found += [{"group": group, "trajectory": t, "query": queries.get(str(t["query_id"]))} for t in trajs]
    if not found:
        raise FileNotFoundError(f"no trajectories in {traj_dir}: run notebook 03 first")
    return next((f for f in found if tooleval.precheck(f["trajectory"]) is None), found[0])


def first_request(judge: llm_judge.LLMJudge | None, traj: dict) -> dict | None:
    """What the LLM judge is sent first about `traj` (assessment 0), built and not sent: the judge's
    own request (our wording or ToolEval's evaluator, with its parameters); for the offline judge
    (None), the messages of our wording an LLM judge would get (parameters None: nothing is sent).
    None when a pre-check decides the answer without asking anything."""
    call = tooleval.first_call(traj)
    if call is None:
        return None
    function, fields = call
    messages, params = (judge.request(function, fields, 0) if judge is not None
                        else (tooleval.prompt_messages(function, fields), None))
    return {"function": function, "fields": fields, "messages": messages, "params": params}


def select_all(cfg: Profile, log) -> tuple[dict[str, list[dict]], dict[str, dict], dict[str, dict], list[str]]:
    """The trajectories of every group that has some, selected as this run's settings ask: by
    group, the trajectories, the test queries and the selection's account; and the notes on it."""
    traj_dir, test_dir = config.output_dir(cfg) / "trajectories", config.path(cfg, cfg.data.test_dir)
    groups = [g for g in cfg.inference.groups if (traj_dir / f"{g}.jsonl").exists()]
    if not groups:
        raise FileNotFoundError(f"no trajectories in {traj_dir}: run notebook 03 first")
    trajs, queries, selection, notes = {}, {}, {}, []
    for g in groups:
        trajs[g], queries[g], selection[g] = selected_trajectories(cfg, g)
        for note, warning in selection_notes(selection[g], test_dir / f"{g}.json"):
            log(f"{'WARNING: ' if warning else ''}{g}: {note}")
            notes.append(f"{g}: {note}")
    if not any(trajs.values()):
        raise judgments.JudgeInputError(f"no trajectories to judge in {traj_dir} for the selected "
                                        f"queries ({'; '.join(notes)}): run notebook 03 first")
    return trajs, queries, selection, notes


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------
def run_untrained(cfg: Profile, log=print):
    """Stage 04 for the untrained model's trajectories (lib/infer/untrained.py), when stage 03 made
    them; else None."""
    if not untrained.enabled(cfg) or not (untrained.output_dir(cfg) / "trajectories").exists():
        return None
    return run(untrained.settings(cfg), log=log)


@resume.one_writer("stage 04 judge", lambda cfg, *_, **__: config.output_dir(cfg) / "judgments")
def run(cfg: Profile, log=print):
    """Judge every group's trajectories; write judgments, pass_rate.csv/.md, checks, summary.
    Returns the pass-rate table (a pandas DataFrame). One stage-04 run at a time per output folder:
    a second one fails at once (lib.common.resume.one_writer) instead of judging every query twice."""
    released_sets = [released_runs.released_set(cfg, entry, i) for i, entry in enumerate(cfg.judge.released or [])]
    with backends.closing(judgments.make_judge(cfg)) as judge:     # stops a server judge.serve started
        return _judge_all(cfg, judge, released_sets, log)


def _judge_all(cfg: Profile, judge: llm_judge.LLMJudge | None, released_sets: list[dict], log):
    """Stage 04's work once the judge is made (`run`)."""
    import pandas as pd         # here, not at the top: a heavy import only the returned table needs
    judge_cfg, out = cfg.judge, config.output_dir(cfg)
    times = judge_cfg.evaluate_times
    name = judge.name if judge else offline_judge.OFFLINE

    trajs, queries, selection, notes = select_all(cfg, log)
    traj_dir, groups = out / "trajectories", list(trajs)

    # Judge (resuming from judgments/<group>.jsonl while the judge and the trajectories are the same;
    # only now, with the settings and every input checked, is the folder touched).
    judgments_dir = resume.resumable(out / "judgments", {
        "judge": judgments.judgment_settings(judge_cfg), "offline_rule": offline_judge.OFFLINE_RULE if judge is None else None,
        "trajectories": resume.file_digest(*(traj_dir / f"{g}.jsonl" for g in groups))}, log=log)
    result = pass_rates.judge_set(cfg, judge, pass_rates.TrajectorySet(
        trajs, queries, {g: judgments_dir / f"{g}.jsonl" for g in trajs}, out, notes), log)
    rows, judged = result["rows"], result["judged"]

    # Win rate against a reference method, when one is configured.
    win_rows = (win_rate.win_rate(cfg, judge, judged, trajs, log) if judge_cfg.win_rate_reference
                else [])
    if win_rows:
        tables.write_csv(out / "win_rate.csv", win_rows, win_rate.WIN_COLUMNS)

    # Released answers of other systems: the same judge, cache, votes and aggregations.
    released_rows = [row for entry in released_sets
                     for row in released_runs.judge_released(cfg, judge, entry, queries, log)["rows"]]

    # Which model the endpoint actually answered with (an alias is served by a dated snapshot).
    served_warning = judge.served_model_warning() if judge else None
    if served_warning:
        log(f"WARNING: {served_warning}")
    summary = {"judge": name, "kind": judge_cfg.kind, "prompts": pass_rates.prompts_used(judge),
               "evaluate_times": times, "stamp": cfg.stamp,
               "selection": selection, "no_queries": [g for g in groups if not judged[g]],
               "notes": notes, "pass_rate": rows, "checks": result["checks"],
               "agreement": result["agreement"], "deemed_unsolvable": result["deemed_unsolvable"],
               "win_rate": win_rows, "released": released_rows,
               "requests": judge.counts if judge else None,
               "served_models": judge.served_models if judge else None,
               "served_model_warning": served_warning}
    (out / "judge_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return pd.DataFrame(rows, columns=pass_rates.CSV_COLUMNS + ["std_over_runs"])


# Small readers for the notebook.
def summary(cfg: Profile) -> dict:
    return json.loads((config.output_dir(cfg) / "judge_summary.json").read_text(encoding="utf-8"))


def examples(cfg: Profile, k: int = 3) -> list[dict]:
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


# --------------------------------------------------------------------------------------------
# Command line: re-judge one released answer set (lib/judge/released_runs.py)
# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys
    parser = argparse.ArgumentParser(
        prog="python -m lib.judge.judge", description="Re-judge released answers (a ToolEval converted-answer "
        "file or a raw answer folder) with a profile's judge; stage 04 itself runs from notebook 04 "
        "or `python -m lib.pipeline.run --only 04`.")
    config.add_arguments(parser, example="judge.evaluate_times=2")
    parser.add_argument("--answers", required=True, help="converted-answer file (<group>.json) or raw answer folder")
    parser.add_argument("--group", required=True, choices=config.GROUPS)
    parser.add_argument("--name", required=True, help='the run\'s name, e.g. "ChatGPT-CoT (released)"')
    parser.add_argument("--methods", nargs="*", help="raw answer folders: only these methods (e.g. CoT@1)")
    parser.add_argument("--compare-to", help="the published row to compare with in stage 05 (a paper "
                        "label such as ChatGPT-CoT); default: the label the name starts with")
    args = parser.parse_args(argv)
    overrides = config.overrides_of(parser, args)
    try:
        cfg = config.load(args.profile, overrides)
        answers = {"name": args.name, "path": args.answers, "groups": [args.group],
                   **({"methods": args.methods} if args.methods else {}),
                   **({"compare_to": args.compare_to} if args.compare_to else {})}
        result = released_runs.rejudge(cfg, answers, log=lambda *a: print(*a, file=sys.stderr))
    except (config.ConfigError, released.ReleasedFormatError, judgments.JudgeInputError,
            llm_judge.JudgeRequestError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    info = result["info"]
    print(f"{info['name']}, {args.group}: judge {info['judge']}, prompts {info['prompts']}, "
          f"{cfg.judge.evaluate_times} assessments per query")
    for row in result["rows"]:
        if row["group"] == args.group:
            print(f"  {row['aggregation']:>8}: pass rate {row['pass_rate']:.1f}% of n={row['n']} "
                  f"(Wilson 95% {row['ci_low']:.1f}-{row['ci_high']:.1f}); on the "
                  f"{row['n_solvable']} deemed solvable: "
                  + (f"{row['pass_rate_solvable']:.1f}%" if row["pass_rate_solvable"] is not None else "n/a"))
    for note in info["notes"]:
        print(f"  note: {note}")
    print(f"  not available: {', '.join(released.NEEDS_FULL_MESSAGES) if info['not_available'] else 'none'}")
    print(f"  written to {result['folder']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
