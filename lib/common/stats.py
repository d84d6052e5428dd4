"""Statistics of stage 04, pure functions with no lib imports: Wilson intervals for a pass rate (and
percentages), StableToolBench's per-run mean score and its spread, and the agreement of repeated
judge labels (mean pairwise agreement, Fleiss' kappa)."""
from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (as fractions). No trials, no interval: (nan, nan),
    printed "nan" as the rate itself is (a 0-100 interval would read as a measurement)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def wilson_percent(successes: float, n: int) -> tuple[float, float]:
    """wilson's 95% interval in percent, unrounded (the tables round as they print)."""
    low, high = wilson(successes, n)
    return (100 * low, 100 * high)


def percent(fraction: float) -> float:
    """A fraction in percent, rounded to 2 places; nan stays nan."""
    return round(100 * fraction, 2) if fraction == fraction else fraction


def mean_score_runs(per_query_scores: list[list[float]], runs: int) -> list[float]:
    """StableToolBench: the pass rate of each run (mean over queries); a missing run scores 0."""
    if not per_query_scores:
        return [0.0] * runs
    return [sum(q[r] if r < len(q) else 0.0 for q in per_query_scores) / len(per_query_scores)
            for r in range(runs)]


def population_std(values: list[float]) -> float:
    """Standard deviation over the values themselves (numpy's default, ddof=0)."""
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def pairwise_agreement(labels: list[list[str]]) -> float:
    """Mean over items of the share of agreeing pairs among the repeated labels."""
    shares = []
    for item in labels:
        k = len(item)
        if k < 2:
            continue
        agree = sum(item[i] == item[j] for i in range(k) for j in range(i + 1, k))
        shares.append(agree / (k * (k - 1) / 2))
    return sum(shares) / len(shares) if shares else float("nan")


def fleiss_kappa(labels: list[list], categories=None) -> float:
    """Fleiss' kappa; every item needs the same number (>= 2) of ratings. NaN when undefined.
    `categories` defaults to the labels that occur (a category no item was given changes nothing)."""
    items = [item for item in labels if len(item) >= 2]
    if not items or len({len(i) for i in items}) != 1:
        return float("nan")
    if categories is None:
        categories = list(dict.fromkeys(label for item in items for label in item))
    k = len(items[0])
    counts = [[item.count(c) for c in categories] for item in items]
    p_items = [(sum(c * c for c in row) - k) / (k * (k - 1)) for row in counts]
    p_bar = sum(p_items) / len(items)
    p_cat = [sum(row[j] for row in counts) / (len(items) * k) for j in range(len(categories))]
    p_e = sum(p * p for p in p_cat)
    return float("nan") if p_e >= 1 else (p_bar - p_e) / (1 - p_e)
