"""lib/common/stats.py: Wilson intervals, StableToolBench's per-run mean, agreement of repeated labels."""
from __future__ import annotations

import math

import pytest

from lib.common import stats


def test_mean_score_runs_is_stabletoolbenchs_per_run_mean():
    runs = stats.mean_score_runs([[1, 0.5, 0, 1], [0, 0, 0, 0], [1, 1, 0.5]], 4)
    assert runs == pytest.approx([2 / 3, 0.5, 0.5 / 3, 1 / 3])       # a missing run scores 0


def _wilson_by_quadratic(k, n, z=1.959963984540054):
    # The interval's ends are the p with |k/n - p| = z sqrt(p(1-p)/n): solve a p^2 + b p + c = 0.
    phat = k / n
    a, b, c = 1 + z * z / n, -(2 * phat + z * z / n), phat * phat
    disc = math.sqrt(b * b - 4 * a * c)
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


def test_wilson_interval_known_values():
    low, high = stats.wilson(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    for k, n in [(0, 10), (10, 10), (77, 100), (155, 200), (1, 3)]:
        assert stats.wilson(k, n) == pytest.approx(_wilson_by_quadratic(k, n), abs=1e-12)
    assert stats.wilson(0, 10)[0] == 0.0 and round(stats.wilson(0, 10)[1], 4) == 0.2775
    assert all(x != x for x in stats.wilson(0, 0))          # no trials: no interval


def test_wilson_in_percent_is_the_same_interval():
    lo, hi = stats.wilson_percent(9, 20)
    assert (round(lo, 2), round(hi, 2)) == (25.82, 65.79)
    assert stats.wilson_percent(0, 10)[0] == 0.0 and stats.wilson_percent(10, 10)[1] == pytest.approx(100.0)


def test_fleiss_kappa_matches_the_textbook_example_and_agreement():
    # Fleiss (1971) as tabulated on Wikipedia: 10 subjects, 14 raters, 5 categories -> 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    labels = [[c for c, count in enumerate(row) for _ in range(count)] for row in table]
    assert stats.fleiss_kappa(labels, categories=range(5)) == pytest.approx(0.2099, abs=1e-4)
    assert stats.pairwise_agreement([["Solved"] * 4]) == 1.0
    assert stats.pairwise_agreement([["Solved", "Solved", "Unsure", "Unsure"]]) == pytest.approx(2 / 6)
    assert math.isnan(stats.fleiss_kappa([["Solved"] * 4, ["Solved"] * 4]))    # no variation


def test_percent_and_the_population_std_of_the_runs():
    assert stats.percent(0.775) == 77.5 and stats.percent(2 / 3) == 66.67
    assert math.isnan(stats.percent(float("nan")))
    assert stats.population_std([0.5, 1.0]) == 0.25 and stats.population_std([0.3] * 4) == 0.0


def test_fleiss_kappa_by_default_over_the_labels_that_occur():
    labels = [["Solved", "Solved", "Unsure"], ["Unsolved", "Unsolved", "Unsolved"], ["Solved", "Unsure", "Unsure"]]
    assert stats.fleiss_kappa(labels) == pytest.approx(
        stats.fleiss_kappa(labels, categories=("Solved", "Unsolved", "Unsure", "never given")))
