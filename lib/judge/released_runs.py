"""Released answers judged as ours (issue 11): a `judge.released` entry checked, its answers read
(lib/toolbench/released.py) and selected like our run's, judged by the same judge, cache, votes and
aggregations group by group (lib/judge/pass_rates.py) under outputs/<profile>/released/<name>/
(judgments/<group>/, pass_rate.csv / .md, checks.csv, released.json), and `rejudge`, the command
line's one file or folder for one group (`python -m lib.judge.judge --answers ...`). A group judged later
joins the groups judged before; new answers or another judge set that group's judgments aside.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from lib.common import config, resume
from lib.common.settings import Profile
from lib.toolbench import released
from lib.models import backends
from lib.checks import offline_judge
from lib.judge import judgments, pass_rates


def slug(name: str) -> str:
    """A released run's folder name under outputs/<profile>/released/."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.") or "released"


def released_set(cfg: Profile, entry, index: int = 0) -> dict:
    """A judge.released entry checked ({name, path[, groups][, methods]}), before anything runs."""
    where = f"{cfg.config_path or 'config'}: judge.released[{index}]"
    if not isinstance(entry, dict) or not entry.get("name") or not entry.get("path"):
        raise config.ConfigError(f"{where} must be a mapping with 'name' and 'path', got {entry!r}")
    unknown = set(entry) - {"name", "path", "groups", "methods", "compare_to"}
    if unknown:
        raise config.ConfigError(f"{where}: unknown key(s) {sorted(unknown)} (name, path, groups, "
                                 "methods, compare_to)")
    path = config.path(cfg, entry["path"])
    if not path.exists():
        raise config.ConfigError(f"{where}: path {path} does not exist")
    groups = entry.get("groups") or [g for g in cfg.inference.groups
                                     if path.is_file() and path.stem == g
                                     or (path / f"{g}.json").is_file() or (path / g).is_dir()]
    if not groups:
        raise config.ConfigError(f"{where}: {path} holds none of {cfg.inference.groups} "
                                 f"(<group>.json or <group>/): name its group with groups: [...]")
    bad = [g for g in groups if g not in config.GROUPS]
    if bad:
        raise config.ConfigError(f"{where}: unknown group(s) {bad}; the groups are {config.GROUPS}")
    return {"name": str(entry["name"]), "path": path, "groups": list(groups),
            "methods": entry.get("methods") or cfg.data.answer_methods,
            "compare_to": entry.get("compare_to")}


def _read_info(folder: Path) -> dict:
    path = folder / "released.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def judge_released(cfg: Profile, judge, entry: dict, queries: dict[str, dict], log=print) -> dict:
    """Judge one released run (entry from released_set) under outputs/<profile>/released/<slug>/:
    the answers of the queries this run selects when the test files share their ids (the same
    queries as ours), else the file's first inference.max_queries_per_group."""
    folder = config.output_dir(cfg, "released", slug(entry["name"]))
    limit = cfg.inference.max_queries_per_group
    trajs, notes, not_available, used = {}, [], {}, {}
    for g in entry["groups"]:
        answers = released.load(entry["path"], g, entry["name"], entry["methods"])
        ours = queries.get(g) or {}
        # The same test set when every shared query id holds the same query text (ids alone can
        # collide: the smoke sample numbers its queries from 1 too).
        overlap = [t for t in answers if str(t["query_id"]) in ours]
        same = overlap and all(t["query"].strip() == ours[str(t["query_id"])]["query"].strip() for t in overlap)
        shared = used[g] = ours if same else {}
        trajs[g], account = judgments.select(answers, shared, limit)
        if not shared:
            why = ("shares none of their query ids" if not overlap else
                   "gives other query texts under the same ids")
            notes.append(f"{g}: judged {account['judged']} of {account['in_file']} answers; the test "
                         f"file {why}, so these are not the queries of our run")
        cut = sum(bool(t["not_available"]) for t in trajs[g])
        if cut:
            not_available[g] = cut
            notes.append(f"{g}: {cut} of {len(trajs[g])} answers have their tool messages cut to 100 "
                         f"characters (ToolBench's converter): {', '.join(released.NEEDS_FULL_MESSAGES)}"
                         " are not available for them")
    for note in notes:
        log(f"{entry['name']}: {note}")
    name = judge.name if judge else offline_judge.OFFLINE
    key = {"judge": judgments.judgment_settings(cfg.judge),
           "offline_rule": offline_judge.OFFLINE_RULE if judge is None else None,
           "answers": resume.file_digest(entry["path"]), "methods": entry["methods"]}
    with resume.exclusive(folder, f"judging {entry['name']}"):
        # One resumable folder per group: judging another group later (the command line judges one
        # at a time) keeps this one's judgments; new answers or another judge set a group's aside.
        paths = {g: resume.resumable(folder / "judgments" / g, {**key, "group": g}, log=log) / f"{g}.jsonl"
                 for g in trajs}
        before = _read_info(folder)
        earlier = ({g: list(judgments.read_judgments(folder / "judgments" / g / f"{g}.jsonl", name,
                                                     cfg.judge.evaluate_times).values())
                    for g in before.get("groups", []) if g not in trajs} if before.get("judge") == name else {})
        earlier = {g: recs for g, recs in earlier.items() if recs}
        kept = [n for n in before.get("notes", []) if n.split(":")[0] in earlier] if earlier else []
        result = pass_rates.judge_set(cfg, judge, pass_rates.TrajectorySet(
            trajs, used, paths, folder, kept + notes, method=entry["name"], earlier=earlier), log)
    info = {"name": entry["name"], "compare_to": entry.get("compare_to"),
            "sources": {**{g: src for g, src in before.get("sources", {}).items() if g in earlier},
                        **{g: str(entry["path"]) for g in trajs}},
            "groups": list(result["judged"]), "methods": entry["methods"], "judge": name,
            "prompts": pass_rates.prompts_used(judge), "notes": kept + notes,
            "not_available": {**{g: n for g, n in before.get("not_available", {}).items() if g in earlier},
                              **not_available},
            "deemed_unsolvable": result["deemed_unsolvable"], "pass_rate": result["rows"]}
    (folder / "released.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return {**result, "info": info, "folder": folder}


def rejudge(cfg: Profile, answers: dict, log=print) -> dict:
    """Judge one converted-answer file or raw answer folder with the profile's judge, `answers` a
    `judge.released` entry (name, path, groups; methods, compare_to), into
    outputs/<profile>/released/<name>/ (beside the groups judged there before); returns
    judge_released's result."""
    if not config.path(cfg, answers["path"]).exists():
        raise released.ReleasedFormatError(f"--answers {answers['path']}: no such file or folder")
    entry = released_set(cfg, answers)
    queries = {g: judgments.load_queries(config.path(cfg, cfg.data.test_dir) / f"{g}.json") for g in entry["groups"]}
    with backends.closing(judgments.make_judge(cfg)) as judge:     # stops a server judge.serve started
        return judge_released(cfg, judge, entry, queries, log)
