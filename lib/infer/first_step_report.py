"""Stage 03's first-step table: the fine-tuned model's first turns (from its trajectories) against
the same model untrained, scored by lib/checks/first_step.py's criteria, into first_step.json.
"""
from __future__ import annotations

import json

from lib.common import config, store
from lib.common.settings import Profile
from lib.toolbench import formats, trajectories
from lib.models import backends
from lib.checks.first_step import CRITERIA, check, first_turn, rates
from lib.infer import inference


def untrained_turns(cfg: Profile, queries: list, path) -> dict:
    """{(group, query_id): first turn} of the untrained model, appended to `path` as they are made
    and read back on a rerun (only the missing ones are generated)."""
    done = {(l["group"], str(l["query_id"])): l["text"] for l in store.read_jsonl(path)}
    todo = [q for q in queries if (q.group, str(q.query_id)) not in done]
    if todo:
        backend, size = backends.untrained_backend(cfg), cfg.inference.batch_size
        with store.JsonlAppender(path) as out:
            for i in range(0, len(todo), size):
                batch = todo[i:i + size]
                for q, gen in zip(batch, backend.generate([q.start() for q in batch])):
                    out.write({"group": q.group, "query_id": q.query_id, "text": gen.text})
                    done[(q.group, str(q.query_id))] = gen.text
    return done


def run(cfg: Profile, untrained_first: dict | None = None) -> dict:
    """first_step.json: per group and overall, the criteria's rates for the fine-tuned model (first
    turn of each trajectory) and, with the hf backend, for the untrained one on the same queries:
    `untrained_first` ({(group, query_id): turn}, lib.infer.untrained.first_turns: the untrained run's
    own), the missing ones generated here."""
    out = config.output_dir(cfg)
    test_dir = config.path(cfg, cfg.data.test_dir)
    lines, queries, docs = {}, [], inference.tool_docs(cfg)
    for group in cfg.inference.groups:
        path = out / "trajectories" / f"{group}.jsonl"
        if not path.exists():
            continue
        by_id = {str(r["query_id"]): r for r in formats.load_queries(test_dir / f"{group}.json")}
        lines[group] = [(l, by_id[str(l["query_id"])]) for l in trajectories.read(path, partial=True)]
        queries += [formats.Query(q, group, docs) for _, q in lines[group]]   # stage 03's prompts
    compare = cfg.inference.backend == "hf"
    untrained = dict(untrained_first or {}) if compare else {}
    if compare and any((q.group, str(q.query_id)) not in untrained for q in queries):
        untrained = untrained_turns(cfg, queries, out / "trajectories" / "untrained_first_turns.jsonl")
    report, pooled = {"criteria": list(CRITERIA), "groups": {}}, {"trained": [], "untrained": []}
    for group, pairs in lines.items():
        trained = [check(first_turn(l), q) for l, q in pairs]
        before = [check(untrained[(group, str(l["query_id"]))], q) for l, q in pairs] if compare else []
        report["groups"][group] = {"trained": rates(trained), "untrained": rates(before) if compare else None}
        pooled["trained"] += trained
        pooled["untrained"] += before
    report["overall"] = {"trained": rates(pooled["trained"]),
                         "untrained": rates(pooled["untrained"]) if compare else None}
    report["stamp"] = cfg.stamp
    (out / "first_step.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def table(report: dict):
    """first_step.json as a DataFrame: one row per group and model."""
    import pandas as pd

    rows = [{"group": g, "model": m, **r[m]} for g, r in [*report["groups"].items(), ("overall", report["overall"])]
            for m in ("trained", "untrained") if r[m] is not None]
    return pd.DataFrame(rows)
