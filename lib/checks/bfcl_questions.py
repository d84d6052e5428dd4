"""BFCL's single-turn questions and possible answers, read from the installed bfcl-eval wheel.

The data ships in bfcl-eval (Apache-2.0) under bfcl_eval/data/: one JSON object a line per
category, BFCL_v4_<category>.json (id, question: turns of messages, function: the documents
offered) and possible_answer/BFCL_v4_<category>.json (id, ground_truth); the irrelevance
categories have no possible answers. The wheel is installed without its dependencies and read as
package data, never imported for its code. File layout as read from bfcl_eval/utils.py
(load_dataset_entry, load_ground_truth_entry) in bfcl-eval 2026.3.23.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass

from lib.common.settings import BFCL_CATEGORIES

PACKAGE = "bfcl_eval"
DISTRIBUTION = "bfcl-eval"
VERSION = "2026.3.23"        # the version whose files and rules lib/checks/bfcl_rules.py was written against
PREFIX = "BFCL_v4"
CATEGORIES = BFCL_CATEGORIES      # the single-turn, Python-typed ones (a profile's bfcl.categories)
INSTALL = f"pip install --no-deps {DISTRIBUTION}=={VERSION}"


class BfclDataError(RuntimeError):
    """BFCL's data is missing, of another version, or not as this version writes it."""


@dataclass(frozen=True)
class Question:
    id: str
    category: str
    turns: list           # each turn a list of {"role", "content"} messages
    functions: list       # the function documents offered
    ground_truth: list | None   # [{name: {param: [allowed values]}}]; None for irrelevance


def has_answers(category: str) -> bool:
    return "irrelevance" not in category


def _data_root():
    import importlib.metadata
    import importlib.resources
    try:
        installed = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise BfclDataError(f"{DISTRIBUTION} is not installed; BFCL's questions need `{INSTALL}`") from None
    if installed != VERSION:
        raise BfclDataError(f"{DISTRIBUTION} {installed} is installed; the BFCL rules here were written "
                            f"for {VERSION}: `{INSTALL}`")
    try:
        return importlib.resources.files(PACKAGE) / "data"
    except ModuleNotFoundError:
        raise BfclDataError(f"{DISTRIBUTION} {installed} is registered but its package {PACKAGE!r} is "
                            f"not importable: `{INSTALL}`") from None


def files(category: str, root=None) -> list:
    """The files a category reads: questions, then possible answers where it has them."""
    if category not in CATEGORIES:
        raise BfclDataError(f"unknown BFCL category {category!r}; known: {', '.join(CATEGORIES)}")
    root = _data_root() if root is None else root
    name = f"{PREFIX}_{category}.json"
    return [root / name] + ([root / "possible_answer" / name] if has_answers(category) else [])


def check_installed(categories=CATEGORIES, root=None) -> None:
    """Fail before any generation if a file is missing, naming each and the version expected."""
    root = _data_root() if root is None else root
    missing = [str(f) for c in categories for f in files(c, root) if not f.is_file()]
    if missing:
        raise BfclDataError(f"BFCL {VERSION} file(s) missing: {', '.join(missing)} (`{INSTALL}`)")


def _lines(path) -> list[dict]:
    if not path.is_file():
        raise BfclDataError(f"BFCL {VERSION} file missing: {path} (`{INSTALL}`)")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise BfclDataError(f"{path}, line {number}: not JSON ({e.msg}); is it BFCL {VERSION}'s?") from None
    return rows


def read(category: str, root=None) -> list[Question]:
    """A category's questions, each with its possible answer, matched by id."""
    paths = files(category, root)
    questions = _lines(paths[0])
    answers = {a.get("id"): a for a in _lines(paths[1])} if has_answers(category) else {}
    out = []
    for row in questions:
        if not {"id", "question", "function"} <= row.keys():
            raise BfclDataError(f"{paths[0]}: a line lacks id, question or function: {str(row)[:120]}")
        if has_answers(category) and "ground_truth" not in answers.get(row["id"], {}):
            raise BfclDataError(f"{paths[1]}: no possible answer for {row['id']!r}")
        truth = answers[row["id"]]["ground_truth"] if has_answers(category) else None
        out.append(Question(row["id"], category, row["question"], row["function"], truth))
    return out


def sample(questions: list[Question], k: int | None, seed: int) -> list[Question]:
    """The first `k` of a seeded shuffle of a category's questions, in file order (None: all).
    The shuffle depends on the seed and the category only, so a larger sample holds a smaller one
    and a run asked for more questions resumes the answers it has."""
    if k is None or k >= len(questions):
        return list(questions)
    order = list(range(len(questions)))
    random.Random(f"bfcl {seed} {questions[0].category}").shuffle(order)
    return [questions[i] for i in sorted(order[:k])]
