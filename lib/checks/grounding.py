"""Is a final answer grounded in what the API calls returned? The offline judge's stricter rule.

A well-formed answer ("The weather in Paris is sunny.") is not a solved task unless it reports what
the tools said. Rule: an answer is *grounded* when at least one informative value of at least one
successful call's response appears in it, both sides normalised:

- values: the leaves of the observation's `response` (parsed when it is JSON text or a Python repr,
  as ToolBench's responses are written; else the text itself), strings and numbers; booleans and nulls say nothing and are skipped;
- informative: a string of at least 3 characters that is not only punctuation, a number with at
  least 2 digits or a fractional part (a lone "5" or "ok" matches too many answers by chance);
- normalised: case-folded, whitespace collapsed; numbers compared as numbers, so "1,234.50",
  "1234.5" and 1234.5 are the same value, in the answer and in the response alike.

Only leaf values are compared, never keys: an answer naming the response's fields but not their
values is not grounded. Values the model already had (in the query or the call's Action Input,
echoed back by the API) are not evidence of a result and are skipped.

A call's result counts only when the call is about the query: each of its required arguments is
stated in the query or in an earlier observation (`stated_in`, same normalisation), so an answer that
reports the weather of a city the user never asked about is not grounded. Used by lib/checks/trajectory_checks.py
for every profile's offline judge, and by lib/checks/first_step.py's "values from the query".
"""
from __future__ import annotations

import ast
import json
import re

# A number on its own or before a unit ("20C", "5km"), with or without thousands separators.
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d,.]\d)(?!\d)")
MIN_TEXT = 3


def normalise_text(text: str) -> str:
    return " ".join(str(text).casefold().split())


def as_number(value) -> str | None:
    """A number, or a string that is one ('1,234.50'), normalised ('1234.5'); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return f"{float(value):.10g}"
    text = str(value).strip()
    return f"{float(text.replace(',', '')):.10g}" if NUMBER.fullmatch(text) else None


def numbers_in(text: str) -> set[str]:
    return {as_number(m) for m in NUMBER.findall(text)}


def _parsed(value):
    """An object or list written as JSON text or as a Python repr (ToolBench's responses are), as a
    value; any other text (a number such as "1,234.50" included) stays text."""
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except (json.JSONDecodeError, ValueError):
            pass
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return value
    return value


def leaf_values(value) -> list:
    """The strings and numbers of a JSON value, depth first (JSON text inside strings is parsed)."""
    value = _parsed(value)
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in leaf_values(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in leaf_values(v)]
    if isinstance(value, bool) or value is None:
        return []
    return [value]


def response_of(observation: str):
    """The `response` of a ToolBench observation ({"error": ..., "response": ...}); the text itself
    when it is not that object."""
    obs = _parsed(observation)
    return obs.get("response") if isinstance(obs, dict) and "response" in obs else obs


def informative(value) -> bool:
    number = as_number(value)
    if number is not None:
        return len(re.sub(r"\D", "", number)) >= 2 or "." in number
    text = normalise_text(value)
    return len(text) >= MIN_TEXT and any(ch.isalnum() for ch in text)


def stated_in(value, text: str) -> bool:
    """Is `value` stated in `text`: numbers as numbers, anything else as normalised text (an empty
    value is stated nowhere)."""
    number = as_number(value)
    if number is not None:
        return number in numbers_in(text)
    norm = normalise_text(value if isinstance(value, str) else json.dumps(value))
    return bool(norm) and norm in normalise_text(text)


def _stated(value, text: str, numbers: set[str]) -> str | None:
    number = as_number(value)
    if number is not None:
        return number if number in numbers else None
    return normalise_text(value) if normalise_text(value) in text else None


def matched_values(answer: str, observations: list[str], given: str = "") -> list[str]:
    """The informative response values (normalised) that the answer states; empty: not grounded.

    `given`: what the model had before calling (the query, the call's Action Input). A response
    value that only echoes it (the city asked about) is no evidence of a result and is skipped."""
    text, numbers = normalise_text(answer), numbers_in(answer)
    known, known_numbers = normalise_text(given), numbers_in(given)
    found = set()
    for observation in observations:
        for value in leaf_values(response_of(observation)):
            if informative(value) and _stated(value, known, known_numbers) is None:
                found.add(_stated(value, text, numbers))
    return sorted(found - {None})
