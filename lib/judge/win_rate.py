"""Win rate of this run against a reference method (`judge.win_rate_reference`: a trajectories
folder or an outputs/<profile> folder), ToolEval's preference comparison.

Each query's comparison is appended to `preferences/<group>.jsonl`, and a rerun compares only what
is missing. A tie counts as half a win, so a run against itself is 50 % and swapping output and
reference turns W into 100 - W. The comparison rules: docs/judging.md, "Win rate".
"""
from __future__ import annotations

import json
from pathlib import Path

from lib.common import config, stats, store
from lib.common.settings import Profile
from lib.toolbench import tooleval, trajectories
from lib.checks import offline_judge
from lib.judge import judgments, llm_judge


def _answer_for_comparison(traj: dict) -> dict:
    return traj.get("answer") or {"final_answer": traj["final_answer"],
                                  "total_steps": traj.get("total_steps"), "steps": traj["steps"]}


def compare(output: tuple[dict, dict], reference: tuple[dict, dict], judging: judgments.Judging,
            group: str) -> dict:
    """One query, output and reference each a (trajectory, judgment): per round, a vote for
    'output', 'reference' or 'equal'; then win/loss/tie."""
    (out_traj, out_rec), (ref_traj, ref_rec) = output, reference
    judge, times, seed = judging.judge, judging.times, judging.seed
    rounds = []
    for index in range(times):
        call = None
        if out_rec["passed"] != ref_rec["passed"]:
            winner, why = ("output" if out_rec["passed"] else "reference"), "pass beats fail"
        else:
            statuses = {"output": out_rec["assessments"][index]["answer_status"],
                        "reference": ref_rec["assessments"][index]["answer_status"]}
            winner, why = tooleval.status_winner(statuses)
            if winner is None and judge is None:
                o = offline_judge.offline_preference_score(out_rec["checks"])
                r = offline_judge.offline_preference_score(ref_rec["checks"])
                winner = "output" if o > r else "reference" if r > o else "equal"
                why = "offline score (recall, hallucinations, invalid inputs, steps)"
            elif winner is None:
                a, b = _answer_for_comparison(out_traj), _answer_for_comparison(ref_traj)
                if json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True):
                    winner, why = "equal", "identical answers"
                else:
                    # The seeded coin orders the pair, not the roles: swapping output and
                    # reference shows the judge the same two answers in the same order.
                    coin = tooleval.seeded_rng(seed, "order", group, out_traj["query_id"], index)
                    first = min((a, "output"), (b, "reference"), key=lambda x: json.dumps(x[0], sort_keys=True))
                    swap = (coin.random() < 0.5) != (first[1] == "reference")
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
            "judge": judging.name, "evaluate_times": times, "rounds": rounds,
            "votes": {"output": w.count("output"), "reference": w.count("reference")},
            "outcome": outcome}


def _reference_dirs(cfg: Profile) -> tuple[Path, Path | None]:
    ref = config.path(cfg, cfg.judge.win_rate_reference)
    if (ref / "trajectories").is_dir():
        return ref / "trajectories", ref / "judgments"
    return ref, None


def win_rate(cfg: Profile, judge: llm_judge.LLMJudge | None, judged: dict[str, list[dict]],
             trajs: dict[str, list[dict]], log=print) -> list[dict]:
    """Win rate of this run against judge.win_rate_reference, per group and overall."""
    judge_cfg, out = cfg.judge, config.output_dir(cfg)
    judging = judgments.Judging.of(judge, judge_cfg)
    times, name = judging.times, judging.name
    ref_traj_dir, ref_judg_dir = _reference_dirs(cfg)
    rows, totals = [], {"n": 0, "win": 0, "loss": 0, "tie": 0}
    for group in (g for g in judged if judged[g]):        # a group without queries has no rate
        ref_path = ref_traj_dir / f"{group}.jsonl"
        if not ref_path.exists():
            log(f"win rate: no reference trajectories for {group} ({ref_path}), skipped")
            continue
        ours = {str(t["query_id"]) for t in trajs[group]}
        ref_trajs = [t for t in trajectories.read(ref_path) if str(t["query_id"]) in ours]
        queries = judgments.load_queries(config.path(cfg, cfg.data.test_dir) / f"{group}.json")
        ref_judged_path = out / "reference_judgments" / f"{group}.jsonl"
        own = None if ref_judg_dir is None else ref_judg_dir / f"{group}.jsonl"
        if own is not None and judgments.read_judgments(own, name, times):
            ref_judged_path = own
        ref_recs = {str(r["query_id"]): r for r in judgments.judge_group(
            ref_trajs, queries, ref_judged_path, judging, group)}
        ref_by_id = {str(t["query_id"]): t for t in ref_trajs}
        pref_path = config.output_dir(cfg, "preferences") / f"{group}.jsonl"
        done = {str(r["query_id"]): r for r in store.read_jsonl(pref_path)
                if r.get("judge") == name and r.get("evaluate_times") == times}
        with store.JsonlAppender(pref_path) as prefs:
            for traj, rec in zip(trajs[group], judged[group]):
                qid = str(traj["query_id"])
                if qid in done or qid not in ref_by_id:
                    continue
                done[qid] = compare((traj, rec), (ref_by_id[qid], ref_recs[qid]), judging, group)
                prefs.write(done[qid])
        outcomes = [done[str(t["query_id"])]["outcome"] for t in trajs[group]
                    if str(t["query_id"]) in done]
        row = {k: outcomes.count(k) for k in ("win", "loss", "tie")}
        rows.append(_win_row(group, len(outcomes), row, name, judge_cfg.win_rate_reference))
        for k in totals:
            totals[k] += len(outcomes) if k == "n" else row[k]
    if rows:
        rows.append(_win_row("overall", totals["n"], totals, name, judge_cfg.win_rate_reference))
    return rows


def _win_row(group, n, counts, judge_name, reference) -> dict:
    return {"group": group, "reference": str(reference), "n": n, "wins": counts["win"],
            "losses": counts["loss"], "ties": counts["tie"],
            "win_rate": stats.percent((counts["win"] + counts["tie"] / 2) / n) if n else float("nan"),
            "tie_rate": stats.percent(counts["tie"] / n) if n else float("nan"),
            "loss_rate": stats.percent(counts["loss"] / n) if n else float("nan"),
            "judge": judge_name}


WIN_COLUMNS = ["group", "reference", "n", "wins", "losses", "ties", "win_rate", "tie_rate",
               "loss_rate", "judge"]
