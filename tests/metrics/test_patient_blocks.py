"""The report's fast paths give the same bits as the float paths they replace (issue 30): integer block counts for
resampled AUCs, remembered results, single-precision ratio sums."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxrgen.metrics import clustered_bootstrap_auc, patient_resample
from cxrgen.metrics.auc import _auc_from_group_weights, _group_matrices, labelled_auc, patient_blocks
from cxrgen.metrics.bootstrap import patient_codes, resampled_aucs_of
from cxrgen.shift.ratios import bootstrap_ratios


def scored(seed: int, n: int = 3000, patients: int = 700) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.array([f"p{k:04d}" for k in rng.integers(0, patients, n)], dtype=object)
    y = (rng.random(n) < 0.2).astype(float)
    p = np.round(0.5 * y + rng.random(n), 2)  # many ties, within and across classes
    return y, p, groups


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_integer_blocks_give_the_float_weights_auc_bit_for_bit(dtype: type[np.integer]) -> None:
    y, p, groups = scored(0)
    codes, n_pat = patient_codes(groups)
    counts = patient_resample(groups, n_boot=200, seed=4).counts
    m_pos, m_neg = _group_matrices(y, p, codes, n_pat)
    dense = counts.astype(np.float64)
    expected = _auc_from_group_weights(np.asarray(dense @ m_pos), np.asarray(dense @ m_neg))
    got = patient_blocks(y, p, codes, n_pat).aucs(np.ascontiguousarray(counts.T, dtype=dtype))
    assert np.array_equal(got, expected)


def test_patient_codes_are_numpy_uniques() -> None:
    _, _, groups = scored(1)
    assert np.array_equal(patient_codes(groups)[0], np.unique(groups, return_inverse=True)[1].ravel())
    numbers = np.array([5, 3, 3, 9, 5])
    assert patient_codes(numbers)[0].tolist() == [1, 0, 0, 2, 1]


def test_remembered_aucs_are_the_computed_ones() -> None:
    y, p, groups = scored(2)
    codes, n_pat = patient_codes(groups)
    first = resampled_aucs_of([(y, p, codes)], n_pat, 150, 9)[0]
    again = resampled_aucs_of([(y.copy(), p.copy(), codes.copy())], n_pat, 150, 9)[0]
    assert again is first  # the same content on the same resample: not computed twice
    other = resampled_aucs_of([(y, p[::-1].copy(), codes)], n_pat, 150, 9)[0]
    assert not np.array_equal(other, first)
    boot = clustered_bootstrap_auc(y, p, groups, n_boot=150, seed=9)
    assert np.array_equal(boot.samples[:, 0], first)


def test_single_precision_ratio_sums_equal_double_precision() -> None:
    y, p, groups = scored(3)
    pred = p >= 0.7
    num = np.vstack([(y == 1) & pred, (y == 0) & ~pred]).astype(float)
    den = np.vstack([y == 1, y == 0]).astype(float)
    boot = bootstrap_ratios(num, den, groups, n_boot=120, seed=2)
    resample = patient_resample(groups, n_boot=120, seed=2)
    num_p, den_p = resample.per_patient(num).T, resample.per_patient(den).T
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.vstack([(c @ num_p) / (c @ den_p) for c in resample.chunks()])
    assert np.array_equal(boot.samples, expected, equal_nan=True)


def test_point_auc_is_roc_auc_score_bit_for_bit() -> None:
    for seed in range(200):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(4, 2000))
        y = (rng.random(n) < rng.uniform(0.05, 0.95)).astype(float)
        if y.min() == y.max():
            continue
        p = np.round(rng.random(n), int(rng.integers(1, 7)))  # from heavy ties to none
        assert labelled_auc(y, p) == roc_auc_score(y, p)
