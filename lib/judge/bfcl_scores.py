"""Beside stage 04: BFCL's answers scored by BFCL's rules, no judge (issue 23, item 3).

Each answer line of stage 03 (lib/infer/bfcl_answers.py) is read back into BFCL's call list
(lib/checks/bfcl_prompts.py: the first step, or every call before Finish in the parallel
categories) and checked against the question's possible answers (lib/checks/bfcl_rules.py). A step
that does not parse is a wrong answer with its reason (for irrelevance, no call: right, BFCL's
rule), never an error that stops the stage. Writes bfcl_verdicts.jsonl (one line a question, with
the rule broken) and bfcl_scores.csv (accuracy per category with its Wilson 95% interval, and all
categories pooled); both are made again from the answers on every run.
"""
from __future__ import annotations

import collections
import re
from pathlib import Path

from lib.common import config, stats, store, tables
from lib.common.settings import Profile
from lib.checks import bfcl_prompts, bfcl_rules
from lib.infer import bfcl_answers, untrained

VERDICTS = "bfcl_verdicts.jsonl"
SCORES = "bfcl_scores.csv"
POOLED = "all (pooled)"
COLUMNS = ["category", "n", "correct", "accuracy", "ci_low", "ci_high", "parsed", "unanswered"]


def verdict(question, line: dict) -> dict:
    """One answer line scored: the calls read from its steps (or why they do not parse) and the
    first BFCL rule they break."""
    prediction = bfcl_prompts.prediction_for(question, line["steps"])
    result = bfcl_rules.check(question.category, question.functions, question.ground_truth, prediction)
    parsed = not isinstance(prediction, BaseException)
    return {"id": question.id, "category": question.category, "correct": result.correct,
            "reason": result.reason, "calls": prediction if parsed else None,
            "parse_error": None if parsed else str(prediction), "ended": line.get("ended")}


def kind(reason: str) -> str:
    """The rule a reason names, without its particulars ("wrong function name: 'f', expected 'g'"
    -> "wrong function name"), for counting why answers fail."""
    return re.split(r"[:'(]", reason, maxsplit=1)[0].strip() or reason


def score_row(category: str, verdicts: list[dict], unanswered: int) -> dict:
    n, correct = len(verdicts), sum(v["correct"] for v in verdicts)
    low, high = stats.wilson(correct, n)
    return {"category": category, "n": n, "correct": correct,
            "accuracy": stats.percent(correct / n) if n else float("nan"),
            "ci_low": stats.percent(low), "ci_high": stats.percent(high),
            # Answers whose every step parses (what fine-tuning on the format teaches first).
            "parsed": sum(v["parse_error"] is None for v in verdicts), "unanswered": unanswered}


def score(cfg: Profile, log=print) -> list[dict] | None:
    """Score the profile's BFCL answers; returns bfcl_scores.csv's rows (None when bfcl is off).
    Questions of the sample without an answer (stage 03 stopped before them) are not scored and
    are counted as unanswered, with a warning."""
    if not cfg.bfcl.enabled:
        return None
    out = config.path(cfg, cfg.output_dir)
    folder = out / bfcl_answers.FOLDER
    if not folder.is_dir():
        raise FileNotFoundError(f"no BFCL answers in {folder}: run stage 03 (notebook 03) first")
    questions = bfcl_answers.selected(cfg)
    rows, everything = [], []
    for category, asked in questions.items():
        lines = bfcl_answers.read_answers(folder, category, [q.id for q in asked])
        verdicts = [verdict(q, lines[q.id]) for q in asked if q.id in lines]
        unanswered = len(asked) - len(verdicts)
        if unanswered and log:
            log(f"WARNING: bfcl {category}: {unanswered} of {len(asked)} questions have no answer in "
                f"{folder / (category + '.jsonl')} (stage 03 did not finish them); scored without them")
        rows.append(score_row(category, verdicts, unanswered))
        everything += verdicts
    rows.append(score_row(POOLED, everything, sum(r["unanswered"] for r in rows)))
    store.rewrite_jsonl(out / VERDICTS, everything)
    tables.write_csv(out / SCORES, rows, COLUMNS)
    if log:
        pooled = rows[-1]
        log(f"[bfcl] {pooled['correct']} of {pooled['n']} questions right ({pooled['accuracy']}%) by BFCL's rules")
    return rows


def score_untrained(cfg: Profile, log=print) -> list[dict] | None:
    """The untrained model's answers scored the same way, when stage 03 made them."""
    if not untrained.enabled(cfg) or not (untrained.output_dir(cfg) / bfcl_answers.FOLDER).is_dir():
        return None
    return score(untrained.settings(cfg), log=log)


def read_verdicts(output_dir: Path) -> list[dict]:
    return store.read_jsonl(Path(output_dir) / VERDICTS)


def failures(verdicts: list[dict]) -> dict[str, collections.Counter]:
    """{category: Counter of the rule each wrong answer broke}."""
    out: dict[str, collections.Counter] = {}
    for v in verdicts:
        if not v["correct"]:
            out.setdefault(v["category"], collections.Counter())[kind(v["reason"])] += 1
    return out


def example(cfg: Profile, category: str | None = None) -> tuple:
    """(question, answer line) to score by hand in notebook 04: the first answered question of
    `category` (default: the first configured category with an answer)."""
    folder = config.path(cfg, cfg.output_dir) / bfcl_answers.FOLDER
    for name, asked in bfcl_answers.selected(cfg).items():
        if category in (None, name):
            lines = bfcl_answers.read_answers(folder, name, [q.id for q in asked])
            found = next((q for q in asked if q.id in lines), None)
            if found:
                return found, lines[found.id]
    raise FileNotFoundError(f"no BFCL answers in {folder}{' for ' + category if category else ''}: "
                            "run stage 03 (notebook 03) first")
