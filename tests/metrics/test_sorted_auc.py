"""Subset AUCs read from one descending sort of a label's scores equal ``roc_auc_score`` on the subset, to the bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxrgen.metrics import OneClassWarning, roc_auc
from cxrgen.metrics.auc import SortedScores, labelled_auc


def _case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scores with many ties (few distinct values, sometimes rounded continuous) and labels with some NaN."""
    n = int(rng.integers(2, 400))
    if rng.random() < 0.5:
        p = rng.integers(0, int(rng.integers(1, 12)), n) / 7.0
    else:
        p = np.round(rng.random(n), int(rng.integers(1, 4)))
    y = (rng.random(n) < rng.uniform(0.05, 0.95)).astype(float)
    y[rng.random(n) < 0.1] = np.nan
    return y, p


def test_subset_of_the_global_order_is_the_subset_sorted_alone() -> None:
    """Why the one sort serves every subset: a stable sort restricted to a subsequence keeps the ties' order."""
    rng = np.random.default_rng(1)
    for _ in range(200):
        _, p = _case(rng)
        order = np.argsort(p, kind="mergesort")[::-1]
        mask = rng.random(p.size) < 0.5
        alone = np.flatnonzero(mask)[np.argsort(p[mask], kind="mergesort")[::-1]]
        np.testing.assert_array_equal(order[mask[order]], alone)


def test_subset_auc_equals_roc_auc_score_exactly() -> None:
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(500):
        y, p = _case(rng)
        scores = SortedScores(p)
        mask = rng.random(p.size) < rng.uniform(0.2, 1.0)
        keep = mask & ~np.isnan(y)
        if len(np.unique(y[keep])) != 2:
            continue
        expected = roc_auc_score(y[keep], p[keep])
        assert scores.auc(y, mask) == expected
        assert scores.auc(y, np.flatnonzero(mask)) == expected
        assert labelled_auc(y[keep], p[keep]) == expected
        assert roc_auc(y[mask], p[mask]) == expected
        checked += 1
    assert checked > 400


def test_one_class_subset_is_nan_with_the_warning() -> None:
    y = np.array([1.0, 0.0, 1.0, np.nan, 1.0])
    p = np.array([0.3, 0.3, 0.9, 0.1, 0.2])
    with pytest.warns(OneClassWarning):
        assert math.isnan(SortedScores(p).auc(y, np.array([True, False, True, True, True])))


def test_errors_match_roc_auc() -> None:
    scores = SortedScores(np.array([0.1, np.nan, 0.4]))
    with pytest.raises(ValueError, match="p is NaN"):
        scores.auc(np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="y must be 0, 1 or NaN"):
        SortedScores(np.zeros(3)).auc(np.array([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="differ in length"):
        SortedScores(np.zeros(3)).auc(np.zeros(2))
