"""One patient resample per test set, drawn once and shared by every analysis on it (DESIGN.md section 9)."""

from __future__ import annotations

import numpy as np
import pytest

from cxrgen.metrics import clustered_bootstrap_auc, patient_bootstrap_weights, patient_resample, weighted_auc
from cxrgen.shift.operating_points import operating_point
from cxrgen.shift.protocols import paired_protocol_difference
from cxrgen.shift.ratios import bootstrap_ratios


def one_test_set(seed: int = 0, n: int = 400, patients: int = 120) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.array([f"p{k:03d}" for k in rng.integers(0, patients, n)])
    y = (rng.random(n) < 0.35).astype(float)
    p = np.round(0.6 * y + rng.random(n), 2)  # ties on purpose
    return y, p, groups


def test_two_analyses_on_one_test_set_see_identical_draws() -> None:
    _, _, groups = one_test_set()
    first = patient_resample(groups, n_boot=200, seed=7)
    second = patient_resample(groups[::-1], n_boot=200, seed=7)  # another analysis, images in another order
    assert second.counts is first.counts  # drawn once, then shared
    assert first.counts.shape == (200, len(set(groups)))
    assert (first.counts.sum(axis=1) == first.n_patients).all()  # P patients drawn per resample
    other = patient_resample(groups, n_boot=200, seed=8)
    assert not np.array_equal(other.counts, first.counts)


def test_every_analysis_reads_the_resample_the_auc_intervals_use() -> None:
    y, p, groups = one_test_set(1)
    resample = patient_resample(groups, n_boot=130, seed=3)
    dense = np.vstack(list(patient_bootstrap_weights(groups, n_boot=130, seed=3)))
    assert np.array_equal(dense, resample.counts[:, resample.codes])
    # AUC intervals: the resampled AUCs are the weighted AUCs under these counts
    boot = clustered_bootstrap_auc(y, p, groups, n_boot=130, seed=3)
    assert np.allclose(boot.samples[:, 0], weighted_auc(y, p, dense), rtol=0, atol=1e-12)
    # operating point: sensitivity per resample = patient-weighted true positives / positives
    point = operating_point(y, p, groups, 0.7, n_boot=130, seed=3, ci=0.9)
    sens = (dense @ ((p >= 0.7) & (y == 1))) / (dense @ (y == 1))
    lo, hi = np.quantile(sens, [0.05, 0.95])
    assert point.values["sensitivity"][1:] == (pytest.approx(lo, abs=0), pytest.approx(hi, abs=0))
    # protocol difference: both AUCs on the same resamples
    y_alt = y.copy()
    y_alt[::7] = 1.0
    diff = paired_protocol_difference(y, y_alt, p, groups, n_boot=130, seed=3, ci=0.9)
    samples = weighted_auc(y_alt, p, dense) - weighted_auc(y, p, dense)
    assert (diff["ci_low"], diff["ci_high"]) == tuple(np.quantile(samples, [0.05, 0.95]))


def test_per_patient_ratios_equal_dense_weights_draw_for_draw() -> None:
    y, p, groups = one_test_set(2)
    num = np.vstack([(p >= 0.5) & (y == 1), (p < 0.5) & (y == 0)]).astype(float)
    den = np.vstack([y == 1, y == 0]).astype(float)
    dense = np.vstack(list(patient_bootstrap_weights(groups, n_boot=100, seed=0)))
    expected = (dense @ num.T) / (dense @ den.T)
    assert np.array_equal(bootstrap_ratios(num, den, groups, n_boot=100, seed=0).samples, expected)
