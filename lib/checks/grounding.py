"""Is a final answer grounded in what the API calls returned? The offline judge's stricter rule.

An answer is grounded when it states an informative value of a successful call's response, the call
being about the query; values the model already had do not count. docs/judging.md, "The grounding
rule", gives the matching. Used by lib/checks/trajectory_checks.py for the offline judge, and by
lib/checks/first_step.py's "values from the query".
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
