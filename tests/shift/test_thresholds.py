"""Thresholds chosen at home (issue 27): Youden's J in integer counts, and thresholds that cannot be chosen."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cxrgen.shift.operating_points import choose_threshold


def brute_force_youden(y: np.ndarray, p: np.ndarray) -> float:
    """Every candidate threshold (each distinct score, and inf for "nothing positive"), J compared in integers
    (TP * N - FP * P), ties to the highest threshold: the documented rule, enumerated without roc_curve."""
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    best_t, best_j = math.inf, 0  # inf: TP = FP = 0, J = 0
    for t in sorted(set(p.tolist()), reverse=True):
        pred = p >= t
        j = int((pred & (y == 1)).sum()) * n_neg - int((pred & (y == 0)).sum()) * n_pos
        if j > best_j:  # strictly better only: an equal J at a lower threshold loses the tie
            best_t, best_j = t, j
    return best_t


def test_youden_ties_in_floating_point_go_to_the_highest_threshold() -> None:
    # P = 3, N = 6, scores in order pos neg neg pos neg neg pos neg neg: J = 1/3 at (TP, FP) = (1, 0), (2, 2) and
    # (3, 4). In floats 1 - 4/6 = 0.33333333333333337 > 1/3, so argmax(tpr - fpr) took the lowest threshold.
    y = np.array([1, 0, 0, 1, 0, 0, 1, 0, 0], dtype=float)
    p = np.linspace(0.9, 0.1, 9)
    assert brute_force_youden(y, p) == p[0]
    assert choose_threshold(y, p, "youden") == p[0]


def test_youden_equals_the_integer_enumeration_on_random_and_tied_scores() -> None:
    rng = np.random.default_rng(27)
    for trial in range(300):
        n = int(rng.integers(4, 40))
        y = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(float)
        if y.min() == y.max():
            continue
        p = rng.integers(0, 6, size=n) / 5.0 if trial % 2 else rng.random(n)  # half with many tied scores
        assert choose_threshold(y, p, "youden") == brute_force_youden(y, p), (y, p)


def test_a_useless_score_gives_an_infinite_threshold_and_a_missing_class_nan() -> None:
    y = np.array([1, 0, 1, 0], dtype=float)
    p = np.array([0.1, 0.9, 0.2, 0.8])  # inverted: every finite threshold has J <= 0
    assert choose_threshold(y, p, "youden") == math.inf  # predict nothing positive, not "p >= 1"
    assert math.isnan(choose_threshold(np.ones(4), p, "youden"))
    assert math.isnan(choose_threshold([np.nan, np.nan, 0.0], [0.2, 0.3, 0.4], "sensitivity90"))
    with pytest.raises(ValueError, match="unknown threshold rule"):
        choose_threshold(y, p, "f1")  # type: ignore[arg-type]
