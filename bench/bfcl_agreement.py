"""Do our BFCL rules (lib/checks/bfcl_rules.py) give BFCL's own verdicts? Issue 23, item 4.

    .venv/bin/python bench/bfcl_agreement.py [--venv DIR] [--seed 0] [--per-category N] [--json out.json]

Measures agreement, prediction by prediction, between lib.checks.bfcl_rules.check (run here, in the
project's environment) and bfcl-eval's real, unmodified ast_checker (run in a throw-away
environment by bench/bfcl_agreement_theirs.py). That environment (--venv, kept between runs so a
rerun is fast) gets torch==2.13.0 first, so sentence-transformers does not pull torch's CUDA build,
then bfcl-eval with all its dependencies; if that install fails, the exact failure is recorded and
bfcl-eval goes in without dependencies plus, one by one, the modules the checker's import asks for.

Predictions are built with a seeded RNG from BFCL's single-turn questions (lib.checks.bfcl_questions):
every question of simple_python, multiple, parallel, parallel_multiple, live_simple, live_multiple
gets its possible answer back as a prediction, variants that should still match (another allowed
value, calls reordered, a string spelled another way, an int for a whole float, an optional
parameter given) and wrong variants of every kind (name, required or needed parameter dropped,
unknown parameter, wrong type, value not allowed, list reordered, a call missing or extra, no call,
not a call list, unparsable text); the irrelevance questions get no call, text, and calls. Printed
and written (--json): counts per category and kind, agreement, and every disagreement with both reasons.
"""
from __future__ import annotations

import argparse
import collections
import copy
import hashlib
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lib.checks import bfcl_questions, bfcl_rules  # noqa: E402

HERE = Path(__file__).resolve().parent
THEIRS = HERE / "bfcl_agreement_theirs.py"
TORCH = "torch==2.13.0"          # the project's pin; this machine's pip finds its CPU wheel locally
BFCL = f"{bfcl_questions.DISTRIBUTION}=={bfcl_questions.VERSION}"
ANSWERED = ("simple_python", "multiple", "parallel", "parallel_multiple", "live_simple", "live_multiple")
IRRELEVANT = ("irrelevance", "live_irrelevance")
MARKER = "bfcl_agreement_install.json"   # in the venv: how it was installed, read back on reuse


# ---- the throw-away environment -------------------------------------------------------------

def _pip(python: Path, *args: str) -> dict:
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *args], capture_output=True, text=True)
    return {"command": f"pip install {' '.join(args)}", "rc": done.returncode,
            "stderr_tail": "\n".join(line for line in done.stderr.splitlines()
                                     if not line.startswith("WARNING: Location"))[-2000:]}


def _probe(python: Path) -> dict:
    done = subprocess.run([str(python), str(THEIRS), "--probe"], capture_output=True, text=True)
    if done.returncode:
        lines = done.stderr.strip().splitlines() or ["?"]
        # The last frame names the module that wanted it: an undeclared dependency shows whose it is.
        frames = [line.strip() for line in lines if line.strip().startswith('File "')]
        return {"ok": False, "error": lines[-1], "where": frames[-1] if frames else ""}
    return {"ok": True, **json.loads(done.stdout)}


def _missing_module(error: str) -> str | None:
    # "ModuleNotFoundError: No module named 'dotenv'" -> "dotenv"
    if "No module named" not in error:
        return None
    return error.split("No module named")[-1].strip(" '\"").split(".")[0]


# Import names whose distribution is named otherwise.
DISTRIBUTIONS = {"dotenv": "python-dotenv", "yaml": "pyyaml", "bs4": "beautifulsoup4", "serpapi": "google-search-results",
                 "google": "google-genai", "sklearn": "scikit-learn", "PIL": "pillow"}


def _complete(python: Path, steps: list) -> list[str]:
    """Install, one by one, each module the checker's import still lacks; the distributions added."""
    added = []
    for _ in range(30):
        probe = _probe(python)
        module = None if probe["ok"] else _missing_module(probe["error"])
        if module is None:
            return added
        added.append(DISTRIBUTIONS.get(module, module))
        steps.append({**_pip(python, added[-1]), "why": f"{probe['error']}, at {probe['where']}"})
    return added


def ensure_venv(venv: Path) -> dict:
    """The environment BFCL's checker runs in: made and installed once, reused after."""
    python = venv / "bin" / "python"
    marker = venv / MARKER
    if python.exists() and marker.exists() and _probe(python)["ok"]:
        return {**json.loads(marker.read_text()), "reused": True, "probe": _probe(python)}
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    steps = [_pip(python, TORCH), _pip(python, BFCL)]
    full = steps[-1]["rc"] == 0
    if not full:
        steps.append(_pip(python, "--no-deps", BFCL))
    added = _complete(python, steps)
    record = {"venv": str(venv),
              "dependencies": ("all bfcl-eval declares, from the package index" if full else
                               "FAILED with its dependencies (see steps); installed --no-deps instead"),
              "added_for_import": added, "steps": steps}
    marker.write_text(json.dumps(record, indent=1))
    return {**record, "reused": False, "probe": _probe(python)}


# ---- predictions ----------------------------------------------------------------------------

def _pick(values: list, rng: random.Random | None):
    values = [v for v in values if v != bfcl_rules.OPTIONAL]
    return values[0] if rng is None else rng.choice(values)


def _concrete(schema: dict, value, rng):
    """A possible answer's chosen value as a model writes it: dicts and lists of dicts hold, per
    key, a list of allowed values; keys that may be left out are."""
    def one(d):
        return {k: _pick(alts, rng) for k, alts in d.items() if bfcl_rules.OPTIONAL not in alts}
    if schema.get("type") == "dict" and isinstance(value, dict):
        return one(value)
    if schema.get("type") in ("array", "tuple") and schema.get("items", {}).get("type") == "dict" \
            and isinstance(value, list) and all(isinstance(d, dict) for d in value):
        return [one(d) for d in value]
    return value


def answer_calls(question, rng=None) -> list[dict]:
    """The possible answer as a call list: the first allowed value of each parameter (a random one
    with rng), optional parameters left out."""
    calls = []
    for answer in question.ground_truth:
        name, params = next(iter(answer.items()))
        doc = _doc(question, name)
        required = doc["parameters"].get("required", [])
        args = {}
        for param, alts in params.items():
            if any(a != bfcl_rules.OPTIONAL for a in alts) and (bfcl_rules.OPTIONAL not in alts or param in required):
                args[param] = _concrete(doc["parameters"]["properties"].get(param, {}), _pick(alts, rng), rng)
        calls.append({name: args})
    return calls


def _doc(question, name: str) -> dict:
    return next(f for f in question.functions if f["name"] == name)


def _args_where(question, calls: list[dict], rng, test) -> tuple[dict, str] | None:
    """A random (args, parameter) among the calls whose value and document pass test(schema, value)."""
    found = []
    for call in calls:
        name, args = next(iter(call.items()))
        properties = _doc(question, name)["parameters"]["properties"]
        found += [(args, p) for p, v in args.items() if p in properties and test(properties[p], v)]
    return rng.choice(found) if found else None


def _is(kind):
    return lambda schema, value: schema.get("type") == kind


def _integral_float(schema, value):
    return schema.get("type") == "float" and type(value) is float and value == int(value)


def _other_type(schema: dict, value):
    # A value of another type than the document's: what a model writes when it quotes a number
    # or passes a scalar for a list.
    kind = schema.get("type")
    if kind in ("integer", "float", "boolean"):
        return str(value).lower()
    if kind in ("string", "any"):
        return 12345
    return "not a " + ("dict" if kind == "dict" else "list")


def _not_allowed(value):
    if type(value) is bool:
        return not value
    if type(value) in (int, float):
        return value + (1 if type(value) is int else 0.5)
    if isinstance(value, str):
        return value + " zzz"
    if isinstance(value, list):
        return value + [value[0]] if value else ["zzz"]
    if isinstance(value, dict):
        return {**value, "zzz_unknown_key": "zzz"}
    return value


def _respelled(value: str, rng) -> str:
    # Spellings BFCL's string rule ignores: case, spacing and the punctuation ,./-_*^
    spell = rng.choice([str.upper, lambda v: v.replace(" ", " - "), lambda v: v + ".", lambda v: v.title() + " "])
    return spell(value) if spell(value) != value else value.upper() + "."


def _with_answers(question, calls):
    """(args, allowed values by parameter, required) for each call, the answer's order."""
    for call, answer in zip(calls, question.ground_truth):
        name, args = next(iter(call.items()))
        yield args, next(iter(answer.values())), _doc(question, name)["parameters"].get("required", [])


def _set(calls, rng, picked, make):
    if picked is None:
        return None
    args, param = picked
    if make is None:
        del args[param]
    else:
        args[param] = make(args[param])
    return calls


def _drop(question, calls, rng, test) -> list | None:
    found = [(args, p) for args, allowed, required in _with_answers(question, calls) for p in args
             if test(p, allowed, required)]
    return _set(calls, rng, rng.choice(found) if found else None, None)


def _rename(calls, rng):
    i = rng.randrange(len(calls))
    name, args = next(iter(calls[i].items()))
    calls[i] = {name + "_x": args}
    return calls


def _add_optional(question, calls, rng):
    found = [(args, p, alts) for args, allowed, _ in _with_answers(question, calls) for p, alts in allowed.items()
             if p not in args and any(a != bfcl_rules.OPTIONAL for a in alts)]
    if not found:
        return None
    args, param, alts = rng.choice(found)
    name = next(n for n, a in (next(iter(c.items())) for c in calls) if a is args)
    args[param] = _concrete(_doc(question, name)["parameters"]["properties"].get(param, {}), _pick(alts, None), None)
    return calls


def _unknown(calls, rng):
    next(iter(calls[rng.randrange(len(calls))].values()))["zzz_unknown"] = 1
    return calls


def _reverse_list(calls, rng, question):
    picked = _args_where(question, calls, rng, lambda s, v: isinstance(v, list) and v[::-1] != v)
    return _set(calls, rng, picked, lambda v: v[::-1])


def _unparsable(calls, rng):
    name, args = next(iter(calls[0].items())) if calls else ("f", {})
    param = next(iter(args), "x")
    return {"raw": rng.choice(["I'm sorry, I can't do that with the functions I have.", f"{name}({param}='"])}


# Each kind: (should BFCL count it right?, how to make it from the answer's calls), None where the
# question has nothing to vary. The first group should still match, the rest should not.
KINDS = {
    "answer": (True, lambda q, c, rng: c),
    "other_allowed_value": (True, lambda q, c, rng: _differs(c, answer_calls(q, rng))),
    "calls_reordered": (True, lambda q, c, rng: c[::-1] if len(c) > 1 and c[::-1] != c else None),
    "string_respelled": (True, lambda q, c, rng: _set(c, rng, _args_where(q, c, rng, lambda s, v: s.get("type") == "string"
                                                                          and isinstance(v, str) and v.strip()),
                                                       lambda v: _respelled(v, rng))),
    "int_for_whole_float": (True, lambda q, c, rng: _set(c, rng, _args_where(q, c, rng, _integral_float), int)),
    "optional_given": (True, _add_optional),
    "wrong_name": (False, lambda q, c, rng: _rename(c, rng)),
    "required_dropped": (False, lambda q, c, rng: _drop(q, c, rng, lambda p, allowed, required: p in required)),
    "needed_optional_dropped": (False, lambda q, c, rng: _drop(q, c, rng, lambda p, allowed, required: p not in required
                                                               and bfcl_rules.OPTIONAL not in allowed.get(p, []))),
    "unknown_param": (False, lambda q, c, rng: _unknown(c, rng)),
    "wrong_type": (False, lambda q, c, rng: _wrong_type(q, c, rng)),
    "float_for_int": (False, lambda q, c, rng: _set(c, rng, _args_where(q, c, rng, lambda s, v: s.get("type") == "integer"
                                                                       and type(v) is int), float)),
    "value_not_allowed": (False, lambda q, c, rng: _set(c, rng, _args_where(q, c, rng, lambda s, v: True), _not_allowed)),
    "list_reordered": (False, lambda q, c, rng: _reverse_list(c, rng, q)),
    "call_missing": (False, lambda q, c, rng: _without_one(c, rng)),
    "call_extra": (False, lambda q, c, rng: c + [copy.deepcopy(rng.choice(c))]),
    "no_call": (False, lambda q, c, rng: []),
    "not_a_call_list": (False, lambda q, c, rng: [{"name": n, "arguments": a} for n, a in (next(iter(x.items())) for x in c)]),
    "unparsable": (False, lambda q, c, rng: _unparsable(c, rng)),
}
IRRELEVANCE_KINDS = {
    "no_call": (True, lambda q, rng: []),
    "empty_call": (True, lambda q, rng: [{}]),
    "text": (True, lambda q, rng: _unparsable([], rng)),
    "one_call": (False, lambda q, rng: [{rng.choice(_offered(q)): {}}]),
    "two_calls": (False, lambda q, rng: [{name: {}} for name in rng.sample(_offered(q) * 2, 2)]),
}


def _offered(question) -> list[str]:
    # Some live_irrelevance questions offer no function at all; a call is still a call.
    return [f["name"] for f in question.functions] or ["unoffered_function"]


def _differs(calls, other):
    return other if other != calls else None


def _without_one(calls, rng):
    if len(calls) < 2:
        return None         # one call less is no call: the "no_call" kind
    del calls[rng.randrange(len(calls))]
    return calls


def _wrong_type(question, calls, rng):
    picked = _args_where(question, calls, rng, lambda s, v: True)
    if picked is None:
        return None
    args, param = picked
    name = next(n for n, a in (next(iter(c.items())) for c in calls) if a is args)
    args[param] = _other_type(_doc(question, name)["parameters"]["properties"][param], args[param])
    return calls


def build_predictions(seed: int, per_category: int | None) -> tuple[dict, list[dict]]:
    """(questions by id, predictions): each prediction names its question, kind, the verdict its
    kind should get and its output, {"calls": [...]} or {"raw": text}."""
    rng = random.Random(seed)
    questions, predictions = {}, []
    for category in ANSWERED + IRRELEVANT:
        for q in bfcl_questions.read(category)[:per_category]:
            questions[q.id] = q
            kinds = IRRELEVANCE_KINDS if category in IRRELEVANT else KINDS
            for kind, (intended, make) in kinds.items():
                out = make(q, rng) if category in IRRELEVANT else make(q, copy.deepcopy(answer_calls(q)), rng)
                if out is not None:
                    predictions.append({"question": q.id, "category": category, "kind": kind, "intended": intended,
                                        "output": out if isinstance(out, dict) else {"calls": out}})
    return questions, predictions


# ---- verdicts and agreement -----------------------------------------------------------------

def our_verdict(question, output: dict) -> dict:
    # Our rules take the decoder's exception for text that does not parse; the texts here are
    # made not to parse, and BFCL's side reports whether its decoder agreed (its "decoded").
    prediction = ValueError(f"does not parse: {output['raw']!r}") if "raw" in output else output["calls"]
    try:
        verdict = bfcl_rules.check(question.category, question.functions, question.ground_truth, prediction)
    except Exception as e:          # a crash is a verdict to report, not a reason to stop
        return {"valid": None, "reason": f"crash {type(e).__name__}: {e}"}
    return {"valid": verdict.correct, "reason": verdict.reason}


def bfcl_verdicts(venv: Path, questions: dict, predictions: list[dict]) -> dict:
    """BFCL's verdicts, from its own checker in the throw-away environment."""
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "predictions.json", Path(tmp) / "verdicts.json"
        source.write_text(json.dumps({"questions": {i: {"category": q.category, "functions": q.functions,
                                                        "ground_truth": q.ground_truth} for i, q in questions.items()},
                                      "predictions": predictions}))
        subprocess.run([str(venv / "bin" / "python"), str(THEIRS), str(source), str(target)], check=True)
        return json.loads(target.read_text())


def _tally(rows: list[dict], key) -> dict:
    out = collections.defaultdict(lambda: collections.Counter())
    for row in rows:
        c = out[key(row)]
        c["n"] += 1
        c["agree"] += row["ours"]["valid"] == row["bfcl"]["valid"]
        c["ours_right"] += row["ours"]["valid"] is True
        c["bfcl_right"] += row["bfcl"]["valid"] is True
        c["as_intended"] += row["bfcl"]["valid"] == row["intended"]
    return {k: dict(v) for k, v in out.items()}


def compare(questions: dict, predictions: list[dict], theirs: dict) -> dict:
    rows = [{**p, "ours": our_verdict(questions[p["question"]], p["output"]), "bfcl": v}
            for p, v in zip(predictions, theirs["verdicts"], strict=True)]
    agree = sum(r["ours"]["valid"] == r["bfcl"]["valid"] for r in rows)
    raw = [r for r in rows if "raw" in r["output"]]
    return {
        "predictions": len(rows), "agree": agree, "agreement_percent": round(100 * agree / len(rows), 4),
        "bfcl_model_name": theirs["model_name"],
        "by_category": _tally(rows, lambda r: r["category"]),
        "by_kind": _tally(rows, lambda r: ("irrelevance:" if r["category"] in IRRELEVANT else "") + r["kind"]),
        "by_category_and_kind": {c: dict(collections.Counter(r["kind"] for r in rows if r["category"] == c))
                                 for c in ANSWERED + IRRELEVANT},
        "bfcl_error_types": dict(collections.Counter(r["bfcl"]["error_type"] or "(right)" for r in rows).most_common()),
        "crashes": {"ours": sum(r["ours"]["valid"] is None for r in rows),
                    "bfcl": sum(r["bfcl"]["valid"] is None for r in rows)},
        "raw_texts_bfcl_decoder_failed_on": f"{sum(r['bfcl']['decoded'] is False for r in raw)} of {len(raw)}",
        "disagreements": [{k: r[k] for k in ("question", "category", "kind", "output", "ours", "bfcl")}
                          for r in rows if r["ours"]["valid"] != r["bfcl"]["valid"]],
        # Not disagreements: both checkers judged these otherwise than the kind meant (BFCL's data
        # or its first-fit matching); listed so each can be read.
        "not_as_the_kind_intends": [{"question": r["question"], "kind": r["kind"], "bfcl_right": r["bfcl"]["valid"],
                                     "ours": r["ours"]["reason"][:200], "bfcl": r["bfcl"]["error_type"]}
                                    for r in rows if r["bfcl"]["valid"] != r["intended"]],
    }


def _print(report: dict) -> None:
    print(f"{report['predictions']} predictions, {report['agree']} agree: {report['agreement_percent']}%"
          f" (BFCL {report['install']['probe'].get('bfcl-eval')}, torch {report['install']['probe'].get('torch')})")
    for title in ("by_category", "by_kind"):
        print(f"\n{title.replace('_', ' ')}: n, agree, ours right, BFCL right, BFCL as the kind intends")
        for name, c in report[title].items():
            print(f"  {name:38} {c['n']:6} {c['agree']:6} {c['ours_right']:6} {c['bfcl_right']:6} {c['as_intended']:6}")
    print(f"\ncrashes: {report['crashes']}; BFCL's decoder failed on {report['raw_texts_bfcl_decoder_failed_on']} texts")
    print(f"disagreements: {len(report['disagreements'])}")
    for d in report["disagreements"]:
        print(f"  {d['question']} {d['kind']}: ours {d['ours']} | BFCL {d['bfcl']} | {json.dumps(d['output'])[:300]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "toolsft-bfcl-agreement-venv",
                        help="the throw-away environment for bfcl-eval (made if missing, reused if there)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-category", type=int, default=None, help="only the first N questions of each category")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    bfcl_questions.check_installed()
    install = ensure_venv(args.venv.resolve())
    if not install["probe"]["ok"]:
        print(f"BFCL's checker does not import in {args.venv}: {install['probe']['error']}", file=sys.stderr)
        return 1
    questions, predictions = build_predictions(args.seed, args.per_category)
    digest = hashlib.sha256(json.dumps(predictions, sort_keys=True).encode()).hexdigest()
    report = {"bfcl_eval": bfcl_questions.VERSION, "seed": args.seed, "per_category": args.per_category,
              "predictions_sha256": digest, "install": install,
              **compare(questions, predictions, bfcl_verdicts(args.venv, questions, predictions))}
    _print(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0 if report["agree"] == report["predictions"] else 2


if __name__ == "__main__":
    sys.exit(main())
