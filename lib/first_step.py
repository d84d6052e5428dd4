"""First-step accuracy: is the model's first move on a test query a sensible tool call?

A measure that a few CPU-minutes of training can move, where the pass rate cannot yet. The first
assistant turn of a query is *correct* when all four hold:

  parses            it is a Thought / Action / Action Input step whose Action Input is a JSON object
                    (lib.toolbench.parse_step; an unknown function name still counts as parsed);
  names_function    the Action is one of the query's API functions (`<api>_for_<tool>`, not Finish);
  has_required      the Action Input holds every required parameter of that function;
  values_from_query each required parameter's value appears in the query text (case-folded,
                    whitespace collapsed, numbers as numbers: lib.grounding's normalisation).

Stage 03 reports it per group for the fine-tuned model (from the trajectories) and for the same
model before training (its first turn alone), so the table says what fine-tuning taught.

Heavy libraries are imported inside the functions that use them (lib/__init__.py says why).
"""
from __future__ import annotations

import json

from lib import backends, config, grounding, inference, store, toolbench

CRITERIA = ("parses", "names_function", "has_required", "values_from_query")


def _required(functions: list[dict]) -> dict[str, list[str]]:
    # A function written without "parameters" or "required" (hand-made or foreign data) requires nothing.
    return {fn["name"]: (fn.get("parameters") or {}).get("required") or []
            for fn in functions if fn.get("name") and fn["name"] != "Finish"}


def check(text: str, query: dict) -> dict:
    """The four criteria and `correct` for one generated first turn on a test query."""
    return check_against(text, toolbench.functions_for_query(query), query["query"])


def check_against(text: str, functions: list[dict], query_text: str) -> dict:
    """The four criteria and `correct` for a first turn, given the functions its prompt listed."""
    required = _required(functions)
    _, action, action_input, error = toolbench.parse_step(text)
    result = dict.fromkeys(CRITERIA, False)
    result["parses"] = error is None
    if result["parses"]:
        args = json.loads(action_input, strict=False) if action_input else {}
        result["names_function"] = action in required
        needed = required.get(action, [])
        result["has_required"] = result["names_function"] and all(p in args for p in needed)
        result["values_from_query"] = result["has_required"] and all(
            grounding.stated_in(args[p], query_text) for p in needed)
    result["correct"] = all(result[c] for c in CRITERIA)
    return result


def first_turn(line: dict) -> str:
    """The first assistant turn of a trajectory line in ToolBench's layout, rebuilt from its parsed
    fields (a turn with no Action rebuilds with an empty one, which fails `parses` as it did)."""
    if not line.get("steps"):
        return ""
    step = line["steps"][0]
    return toolbench.format_step(step.get("thought", ""), step.get("action", ""), step.get("action_input", ""))


def rates(checks: list[dict]) -> dict:
    """Share of queries meeting each criterion, and `n`."""
    n = len(checks)
    return {"n": n, **{k: round(sum(c[k] for c in checks) / n, 4) if n else None
                       for k in (*CRITERIA, "correct")}}


# ---------------------------------------------------------------------------------------------
# Stage 03's report: the fine-tuned model (its trajectories) against the same model untrained.


def untrained_turns(cfg: dict, queries: list, path) -> dict:
    """{(group, query_id): first turn} of the untrained model, appended to `path` as they are made
    and read back on a rerun (only the missing ones are generated)."""
    done = {(l["group"], str(l["query_id"])): l["text"] for l in store.read_jsonl(path)}
    todo = [q for q in queries if (q.group, str(q.query_id)) not in done]
    if todo:
        backend, size = backends.untrained_backend(cfg), cfg["inference"]["batch_size"]
        with store.JsonlAppender(path) as out:
            for i in range(0, len(todo), size):
                batch = todo[i:i + size]
                for q, gen in zip(batch, backend.generate([q.start() for q in batch])):
                    out.write({"group": q.group, "query_id": q.query_id, "text": gen.text})
                    done[(q.group, str(q.query_id))] = gen.text
    return done


def run(cfg: dict, untrained_first: dict | None = None) -> dict:
    """first_step.json: per group and overall, the criteria's rates for the fine-tuned model (first
    turn of each trajectory) and, with the hf backend, for the untrained one on the same queries:
    `untrained_first` ({(group, query_id): turn}, lib.untrained.first_turns: the untrained run's
    own), the missing ones generated here."""
    out = config.output_dir(cfg)
    test_dir = config.path(cfg, cfg["data"]["test_dir"])
    lines, queries, docs = {}, [], inference.tool_docs(cfg)
    for group in cfg["inference"]["groups"]:
        path = out / "trajectories" / f"{group}.jsonl"
        if not path.exists():
            continue
        by_id = {str(r["query_id"]): r for r in toolbench.load_queries(test_dir / f"{group}.json")}
        lines[group] = [(l, by_id[str(l["query_id"])]) for l in inference.read_trajectories(path)]
        queries += [toolbench.Query(q, group, docs) for _, q in lines[group]]   # stage 03's prompts
    compare = cfg["inference"]["backend"] == "hf"
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
    report["stamp"] = cfg.get("stamp")
    (out / "first_step.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def table(report: dict):
    """first_step.json as a DataFrame: one row per group and model."""
    import pandas as pd

    rows = [{"group": g, "model": m, **r[m]} for g, r in [*report["groups"].items(), ("overall", report["overall"])]
            for m in ("trained", "untrained") if r[m] is not None]
    return pd.DataFrame(rows)
