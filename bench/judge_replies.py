"""How an LLM judge's real replies came out: how often they parse, what they say, and how its verdicts
compare with another judge's on the same trajectories. Issue 22, item 3.

    .venv/bin/python -m bench.judge_replies outputs/smollm2_weak_judge [--against outputs/smollm2] [--json out.json]

Reads what stage 04 left in the folder: `judge_cache.jsonl` (every request sent and its reply, re-asks
included) and `judgments/<group>.jsonl`. Prints, per judge function (check_answer_status,
parse_answer_status, check_task_solvable):
  - replies: every reply received; parsed: those ToolEval's rule reads a valid label from
    (lib.toolbench.tooleval.parse_reply); as JSON: those that are a JSON object at all;
  - asks: the calls the stage made, and how many of them ended with a label after the re-asks
    (judge.malformed_retries) against how many stayed malformed (counted Unsure); how many were
    re-asked, and in how many the re-ask's reply differed from the first (another seed, same prompt);
  - the labels given, and a few replies that did not parse, as written.
Then the assessments' answer labels, the votes, and, with --against, the per-query pass/fail of the
two judges side by side (the same trajectories: the folders' trajectory files must be identical).
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lib.common import store  # noqa: E402
from lib.toolbench import tooleval  # noqa: E402


def reply_figures(cache: list[dict]) -> dict:
    """Per function: replies, parsed, JSON objects, asks (by index and request), asks that ended
    parsed, labels, and up to three unparsed replies."""
    out = {}
    asks: dict[tuple, list[dict]] = collections.defaultdict(list)
    for rec in cache:
        asks[(rec["function"], rec["index"], json.dumps(rec["messages"], sort_keys=True))].append(rec)
    for function in sorted({rec["function"] for rec in cache}):
        field = tooleval.REPLY_FIELDS[function][0]
        recs = [r for r in cache if r["function"] == function]
        parsed = [tooleval.parse_reply(function, r["reply"]) for r in recs]
        mine = [sorted(a, key=lambda r: r["attempt"]) for k, a in asks.items() if k[0] == function]
        ended = sum(tooleval.parse_reply(function, a[-1]["reply"]) is not None for a in mine)
        out[function] = {
            "replies": len(recs), "parsed": sum(p is not None for p in parsed),
            "as_json": sum(tooleval.json_object(r["reply"].strip()) is not None for r in recs),
            "first_attempt_parsed": sum(tooleval.parse_reply(function, a[0]["reply"]) is not None for a in mine),
            "asks": len(mine), "asks_parsed": ended, "asks_malformed": len(mine) - ended,
            "reasked": sum(len(a) > 1 for a in mine),
            "reask_differed": sum(len({r["reply"] for r in a}) > 1 for a in mine if len(a) > 1),
            "labels": dict(collections.Counter(str(p[field]) for p in parsed if p is not None)),
            "unparsed_kinds": dict(collections.Counter(unparsed_kind(function, r["reply"])
                                                       for r, p in zip(recs, parsed) if p is None)),
            "unparsed_examples": list(dict.fromkeys(r["reply"][:160] for r, p in zip(recs, parsed) if p is None))[:3]}
    return out


def unparsed_kind(function: str, text: str) -> str:
    """What a reply that does not parse is: empty, a JSON object without a valid label, prose that
    names exactly one of the labels (a lenient reader would take it; ToolEval's does not), or other."""
    if not text.strip():
        return "empty"
    if tooleval.json_object(text.strip()) is not None:
        return "JSON, no valid label"
    allowed = tooleval.REPLY_FIELDS[function][1]
    named = {a for a in allowed if re.search(rf"\b{re.escape(str(a))}\b", text, re.IGNORECASE)}
    return "prose naming one label" if len(named) == 1 else "other prose"


def verdicts(folder: Path) -> dict[tuple, dict]:
    return {(rec["group"], str(rec["query_id"])): rec
            for path in sorted((folder / "judgments").glob("*.jsonl")) for rec in store.read_jsonl(path)}


def side_by_side(mine: dict, theirs: dict) -> dict:
    """Per query judged by both: pass/fail of each, and the cross-table."""
    both = sorted(set(mine) & set(theirs))
    table = collections.Counter((mine[k]["passed"], theirs[k]["passed"]) for k in both)
    asked = [k for k in both if not mine[k]["precheck"]]
    return {"queries": len(both), "agree": sum(mine[k]["passed"] == theirs[k]["passed"] for k in both),
            "judge_asked": len(asked),
            "agree_where_asked": sum(mine[k]["passed"] == theirs[k]["passed"] for k in asked),
            "pass_pass": table[(True, True)], "pass_fail": table[(True, False)],
            "fail_pass": table[(False, True)], "fail_fail": table[(False, False)]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.judge_replies", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="an output folder stage 04 judged with an LLM judge")
    parser.add_argument("--against", help="another output folder with the same trajectories, judged otherwise")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    cache = list(store.read_jsonl(folder / "judge_cache.jsonl"))
    if not cache:
        print(f"error: no judge replies in {folder / 'judge_cache.jsonl'}", file=sys.stderr)
        return 2
    figures = {"folder": str(folder), "judge": cache[0]["model"], "served_models":
               dict(collections.Counter(r.get("served_model") for r in cache)), "functions": reply_figures(cache)}
    print(f"{folder}: judge {figures['judge']}, {len(cache)} replies")
    print(f"{'function':22}{'replies':>8}{'parsed':>8}{'JSON':>6}{'asks':>6}{'1st ok':>8}{'ended ok':>9}{'malformed':>10}{'re-asked':>9}{'differed':>9}  labels")
    for function, f in figures["functions"].items():
        print(f"{function:22}{f['replies']:>8}{f['parsed']:>8}{f['as_json']:>6}{f['asks']:>6}"
              f"{f['first_attempt_parsed']:>8}{f['asks_parsed']:>9}{f['asks_malformed']:>10}{f['reasked']:>9}"
              f"{f['reask_differed']:>9}  {f['labels']}")
    for function, f in figures["functions"].items():
        print(f"  {function}, replies that do not parse: {f['unparsed_kinds']}")
        for text in f["unparsed_examples"]:
            print(f"  {function}, not parsed: {text!r}")
    mine = verdicts(folder)
    labels = collections.Counter(a["answer_status"] for rec in mine.values() for a in rec["assessments"]
                                 if not rec["precheck"])
    votes = collections.Counter(a["vote"] + (" (coin)" if a.get("coin") else "")
                                for rec in mine.values() if not rec["precheck"] for a in rec["assessments"])
    figures["answer_labels_where_asked"], figures["votes_where_asked"] = dict(labels), dict(votes)
    figures["passed"] = sum(rec["passed"] for rec in mine.values())
    figures["queries"] = len(mine)
    print(f"judgments: {figures['passed']} of {len(mine)} passed; where the judge was asked, answer labels "
          f"{dict(labels)}, votes {dict(votes)}")
    if args.against:
        figures["against"] = {"folder": args.against, **side_by_side(mine, verdicts(Path(args.against)))}
        a = figures["against"]
        print(f"against {args.against}: {a['agree']} of {a['queries']} queries agree (pass/fail); where this "
              f"judge was asked, {a['agree_where_asked']} of {a['judge_asked']}; this pass & that fail "
              f"{a['pass_fail']}, this fail & that pass {a['fail_pass']}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
