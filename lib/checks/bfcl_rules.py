"""BFCL's matching rules: does a predicted call list match one of a question's possible answers?

An independent check of what fine-tuning taught (issue 23): the Berkeley Function Calling
Leaderboard's single-turn questions, scored by the leaderboard's own rules. The rules were read from
BFCL's AST checker, bfcl_eval/eval_checker/ast_eval/ast_checker.py in bfcl-eval 2026.3.23
(gorilla repository, berkeley-function-call-leaderboard/), with the call-list shape and the
irrelevance rule from bfcl_eval/utils.py and eval_checker/eval_runner.py; this is our own code.

A prediction is the decoded call list, `[{name: {param: value}}, ...]`, or the exception its
parser raised. The verdict names the first rule broken, in the order BFCL checks them. Only
Python-typed categories are covered (BFCL's Java and JavaScript conversions are not).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# BFCL's type names in function documents, as Python types ("any" is taken as a string, "tuple"
# as a list because JSON has no tuples).
PYTHON_TYPES = {"string": str, "integer": int, "float": float, "boolean": bool,
                "array": list, "tuple": list, "dict": dict, "any": str}
# Spacing and punctuation BFCL ignores in strings, so "April 1, 2024" matches "april 1 2024".
_IGNORED = re.compile(r"[ ,./\-_*^]")
OPTIONAL = ""           # among a parameter's possible values: the parameter may be left out


@dataclass(frozen=True)
class Verdict:
    correct: bool
    reason: str = ""     # the first rule broken; empty when correct

    def __bool__(self) -> bool:
        return self.correct


RIGHT = Verdict(True)


def wrong(reason: str) -> Verdict:
    return Verdict(False, reason)


def normalise(text: str) -> str:
    """A string as BFCL compares it: spacing and ,./-_*^ removed, lower case, ' read as "."""
    return _IGNORED.sub("", text).lower().replace("'", '"')


def _normalised(value):
    return normalise(value) if isinstance(value, str) else value


def shape_error(prediction) -> str:
    """Why a prediction is not a call list (empty if it is); an empty list is a call list."""
    if isinstance(prediction, BaseException):
        return f"does not parse: {prediction}"
    if not isinstance(prediction, list):
        return f"not a call list: {type(prediction).__name__}"
    for i, call in enumerate(prediction):
        if not (isinstance(call, dict) and len(call) == 1 and isinstance(next(iter(call.values())), dict)):
            return f"not a call list: call {i} is not {{name: {{param: value}}}}: {call!r}"
    return ""


def makes_no_call(prediction) -> bool:
    """BFCL's irrelevance rule: nothing that decodes as a non-empty call list counts as a call."""
    return bool(shape_error(prediction)) or len(prediction) == 0


def check_irrelevance(prediction) -> Verdict:
    """Right when no call is made (the question has no fitting function)."""
    if makes_no_call(prediction):
        return RIGHT
    return wrong(f"made {len(prediction)} call(s) where no function fits: {', '.join(_names(prediction))}")


def _names(calls: list[dict]) -> list[str]:
    return [next(iter(call)) for call in calls]


def check(category: str, functions: list[dict], ground_truth: list[dict] | None, prediction) -> Verdict:
    """A prediction against one BFCL question's possible answer, by the category's rule:
    irrelevance (no call), parallel (the answer's calls in any order), multiple (one call to the
    answer's function, among several offered), simple (exactly one call to the one function)."""
    if "irrelevance" in category:
        return check_irrelevance(prediction)
    problem = shape_error(prediction)
    if problem:
        return wrong(problem)
    if len(prediction) != len(ground_truth):
        return wrong(f"wrong number of calls: {len(prediction)}, expected {len(ground_truth)}")
    if "parallel" in category:
        return _check_any_order(functions, ground_truth, prediction)
    doc = functions[0] if "multiple" not in category else _doc(functions, next(iter(ground_truth[0])))
    if doc is None:
        return wrong(f"no function document named {next(iter(ground_truth[0]))!r}")
    return check_call(doc, ground_truth[0], prediction[0])


def _doc(functions: list[dict], name: str) -> dict | None:
    return next((f for f in functions if f["name"] == name), None)


def _check_any_order(functions: list[dict], ground_truth: list[dict], prediction: list[dict]) -> Verdict:
    # BFCL's order: each expected call in turn takes the first unused predicted call that matches
    # it (first fit, not a best assignment), so a verdict here is the leaderboard's verdict.
    unused = list(range(len(prediction)))
    for i, answer in enumerate(ground_truth):
        name = next(iter(answer))
        doc = _doc(functions, name)
        if doc is None:
            return wrong(f"no function document named {name!r}")
        verdicts = [(j, check_call(doc, answer, prediction[j])) for j in unused]
        match = next((j for j, v in verdicts if v), None)
        if match is None:
            reasons = "; ".join(f"call {j}: {v.reason}" for j, v in verdicts)
            return wrong(f"no predicted call matches expected call {i} ({name}): {reasons}")
        unused.remove(match)
    return RIGHT


def check_call(doc: dict, answer: dict, call: dict) -> Verdict:
    """One predicted call `{name: {param: value}}` against one expected `{name: {param: [allowed]}}`
    and the function's document: name, required parameters, no unknown one, each value's type and
    value, then every parameter the answer needs present."""
    name, args = next(iter(call.items()))
    if name != doc["name"]:
        return wrong(f"wrong function name: {name!r}, expected {doc['name']!r}")
    allowed = next(iter(answer.values()))
    properties = doc["parameters"]["properties"]
    for param in doc["parameters"].get("required", []):
        if param not in args:
            return wrong(f"missing required parameter {param!r}")
    for param, value in args.items():
        if param not in properties or param not in allowed:
            return wrong(f"unexpected parameter {param!r}")
        verdict = check_value(param, properties[param], allowed[param], value)
        if not verdict:
            return verdict
    for param, values in allowed.items():
        if param not in args and OPTIONAL not in values:
            return wrong(f"parameter {param!r} left out, but the answer needs it")
    return RIGHT


def check_value(param: str, schema: dict, allowed: list, value) -> Verdict:
    """One argument against its documented type and its possible values."""
    kind = schema["type"]
    if kind not in PYTHON_TYPES:
        raise ValueError(f"parameter {param!r} has type {kind!r}, which BFCL's Python rules do not know")
    expected = PYTHON_TYPES[kind]
    if kind == "tuple" and isinstance(value, tuple):
        value = list(value)
    if kind == "float" and type(value) is int:
        value = float(value)        # Python's own int -> float
    items = PYTHON_TYPES[schema["items"]["type"]] if kind in ("array", "tuple") else None
    verdict, is_variable = _type_verdict(param, kind, expected, items, allowed, value)
    if not verdict:
        return verdict
    if is_variable:
        # A possible answer written as another type than the document's (a variable's name)
        # is compared as it stands, without the per-type rules below.
        return _among(param, value, allowed)
    if expected is dict:
        return _dict_among(param, value, allowed)
    if expected is list and items is dict:
        return _dict_list_among(param, value, allowed)
    if expected is str:
        return _among(param, normalise(value), [normalise(a) for a in allowed if isinstance(a, str)])
    if expected is list:
        alternatives = [[_normalised(x) for x in a] for a in allowed]
        return _among(param, [_normalised(x) for x in value], alternatives)
    return _among(param, value, allowed)


def _answer_type(allowed: list) -> type | None:
    # The type of the first possible value that is not the optional marker; None if only optional.
    return next((type(a) for a in allowed if a != OPTIONAL), None)


def _type_verdict(param: str, kind: str, expected: type, items: type | None, allowed: list, value):
    """(verdict, is_variable): the exact type the document names (bool is not an integer), or the
    possible answer's own type; lists checked one level deep against some list possible answer."""
    answer_type = _answer_type(allowed)
    if type(value) is expected:
        if items is None or any(not isinstance(a, list) or _items_typed(value, items, a) for a in allowed):
            return RIGHT, answer_type is not None and answer_type is not expected
        return wrong(f"wrong item type in {param!r}: expected {kind} of {items.__name__}, got {value!r}"), False
    if answer_type is not None and type(value) is answer_type:
        return RIGHT, True
    return wrong(f"wrong type for {param!r}: expected {kind}, got {type(value).__name__} {value!r}"), False


def _items_typed(value: list, items: type, alternative: list) -> bool:
    # One level deep, as BFCL: each item of the exact item type, or of the alternative's own item type.
    answer_type = _answer_type(alternative)
    return all(type(x) is items or (answer_type is not None and type(x) is answer_type) for x in value)


def _among(param: str, value, allowed: list) -> Verdict:
    if value in allowed:
        return RIGHT
    return wrong(f"value of {param!r} not among the possible answers: {value!r}, expected one of {allowed!r}")


def _dict_among(param: str, value: dict, allowed: list) -> Verdict:
    verdicts = [_dict_matches(param, value, a) for a in allowed if a != OPTIONAL]
    if any(verdicts):
        return RIGHT
    return verdicts[0] if verdicts else wrong(f"no possible dict for {param!r}")


def _dict_matches(param: str, value: dict, alternative: dict) -> Verdict:
    # Keys are checked one level deep: a string value normalised, anything else compared as it stands.
    for key, item in value.items():
        if key not in alternative:
            return wrong(f"unexpected key {key!r} in {param!r}")
        if _normalised(item) not in [_normalised(a) for a in alternative[key]]:
            return wrong(f"value of {param}[{key!r}] not among the possible answers: {item!r}, "
                         f"expected one of {alternative[key]!r}")
    for key, values in alternative.items():
        if key not in value and OPTIONAL not in values:
            return wrong(f"missing key {key!r} in {param!r}")
    return RIGHT


def _dict_list_among(param: str, value: list, allowed: list) -> Verdict:
    # A list of dicts matches an alternative of the same length dict by dict, in order; the
    # optional marker stands for the empty list, as BFCL's length test reads it. The reason given
    # is the first alternative's, the one a reader compares with.
    reasons = []
    for alternative in allowed:
        alternative = [] if alternative == OPTIONAL else alternative
        if len(alternative) != len(value):
            reasons.append(f"wrong number of dicts in {param!r}: {len(value)}, expected {len(alternative)}")
            continue
        verdicts = [_dict_matches(param, item, expected) for item, expected in zip(value, alternative)]
        if all(verdicts):
            return RIGHT
        reasons.append(next(v.reason for v in verdicts if not v))
    return wrong(reasons[0] if reasons else f"no possible list of dicts for {param!r}")
