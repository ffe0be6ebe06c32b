"""Thresholds chosen at home (issue 27): Youden's J in integer counts; a threshold that cannot be chosen is NaN with
status "no threshold" in every analysis that needs one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cxrgen.shift.borderline import borderline_trend, threshold_errors
from cxrgen.shift.operating_points import NO_THRESHOLD, choose_threshold, operating_point
from cxrgen.shift.shortcut import device_shortcut


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


# A validation set without a positive: no threshold can be chosen, and every analysis built on it says so.
VAL_Y, VAL_P = np.zeros(50), np.linspace(0.0, 1.0, 50)


def _test_set(n: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(8)
    y = (rng.random(n) < 0.3).astype(float)
    device = (rng.random(n) < 0.3).astype(float)
    p = np.clip(rng.normal(0.3 + 0.4 * y + 0.25 * device, 0.15), 0, 1)  # a planted shortcut
    return y, p, device, np.arange(n) // 2


def test_operating_point_without_a_threshold_is_nan_with_status() -> None:
    threshold = choose_threshold(VAL_Y, VAL_P, "youden")
    assert math.isnan(threshold)
    y, p, _, patients = _test_set()
    point = operating_point(y, p, patients, threshold, n_boot=50)
    assert point.status == NO_THRESHOLD and (point.tp, point.fp, point.tn, point.fn) == (None, None, None, None)
    assert all(math.isnan(v) for triple in point.values.values() for v in triple)
    assert operating_point(y, p, patients, 0.5, n_boot=50).status == "ok"


def test_shortcut_without_a_threshold_is_not_a_zero_rate_and_not_detected() -> None:
    # Before issue 27: "p >= NaN" is False everywhere, so both false-positive rates were 0, the difference 0 with
    # interval [0, 0], and the planted shortcut came out "ok, not detected".
    y, p, device, patients = _test_set()
    assert device_shortcut(y, p, device, patients, 0.5, n_boot=100).detected  # the shortcut is there
    result = device_shortcut(y, p, device, patients, choose_threshold(VAL_Y, VAL_P, "youden"), n_boot=100)
    assert result.status == NO_THRESHOLD and not result.detected
    for triple in (result.fpr_device, result.fpr_no_device, result.difference):
        assert all(math.isnan(v) for v in triple)
    negatives = y == 0
    assert (result.n_neg_device, result.n_neg_no_device) == (
        int((negatives & (device == 1)).sum()), int((negatives & (device == 0)).sum()))


def test_borderline_without_a_threshold_fits_no_error_rate() -> None:
    # Before issue 27 the error indicator of "p >= NaN" was y itself: the positives were fitted as errors.
    rng = np.random.default_rng(9)
    n = 600
    ctr = rng.uniform(0.35, 0.65, n)
    y = (ctr > 0.5).astype(float)
    p = np.clip(ctr + rng.normal(0, 0.05, n), 0, 1)
    patients = np.arange(n)
    expected = ((p >= 0.5) != (y == 1)).astype(float)  # the definition of an error at a chosen threshold
    np.testing.assert_array_equal(threshold_errors(y, p, 0.5), expected)
    threshold = choose_threshold(VAL_Y, VAL_P, "youden")
    errors = threshold_errors(y, p, threshold)
    assert np.isnan(errors).all()
    trend = borderline_trend(errors, ctr, patients, n_boot=50, threshold=threshold)
    assert trend.status == NO_THRESHOLD and (trend.bands["status"] == NO_THRESHOLD).all()
    assert trend.bands["error_rate"].isna().all() and math.isnan(trend.slope[0]) and math.isnan(trend.p)
    fitted = borderline_trend(threshold_errors(y, p, 0.5), ctr, patients, n_boot=50, threshold=0.5)
    assert fitted.status == "ok" and int(fitted.bands["errors"].sum()) == int(expected.sum())
