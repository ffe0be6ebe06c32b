"""Tests of cxrgen.metrics: hand-computed cases and cross-checks against scikit-learn and brute force."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from cxrgen import metrics as M

# --------------------------------------------------------------------------------------------- fixtures


def _scored(n: int, seed: int, shift: float = 1.0, prevalence: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Binary labels and scores whose positives are shifted by ``shift`` standard deviations."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(float)
    p = 1.0 / (1.0 + np.exp(-(rng.normal(size=n) + shift * y)))
    return y, p


def _brute_force_delong(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """AUC and variance straight from the structural components of DeLong et al. (1988), O(m n)."""
    x, z = p[y == 1], p[y == 0]
    m, n = x.size, z.size
    psi = np.array([[1.0 if a > b else 0.5 if a == b else 0.0 for b in z] for a in x])  # [m, n]
    auc = psi.mean()
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    s10 = ((v10 - auc) ** 2).sum() / (m - 1)
    s01 = ((v01 - auc) ** 2).sum() / (n - 1)
    return float(auc), float(s10 / m + s01 / n)


# --------------------------------------------------------------------------------------------- AUC / ROC


@pytest.mark.parametrize(
    ("y", "p", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),  # one of four pairs misordered
        ([0, 1], [0.5, 0.5], 0.5),  # a tie counts one half
        ([0, 0, 1], [0.2, 0.5, 0.5], 0.75),  # (1 + 1/2) / 2
        ([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1], 1.0),
        ([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9], 0.0),
    ],
)
def test_roc_auc_hand_cases(y: list[int], p: list[float], expected: float) -> None:
    assert M.roc_auc(y, p) == pytest.approx(expected, abs=1e-15)
    assert M.delong(y, p).auc == pytest.approx(expected, abs=1e-15)
    assert M.weighted_auc(y, p, np.ones(len(y)))[0] == pytest.approx(expected, abs=1e-15)


def test_nan_labels_are_masked_not_counted() -> None:
    y = [0, np.nan, 0, 1, np.nan, 1]
    p = [0.1, 0.99, 0.4, 0.35, 0.0, 0.8]
    assert M.roc_auc(y, p) == pytest.approx(0.75)
    # p may be NaN where y is NaN (nothing to score), not where y is labelled
    assert M.roc_auc([0, 1, np.nan], [0.2, 0.7, np.nan]) == 1.0
    with pytest.raises(ValueError, match="NaN or infinite"):
        M.roc_auc([0, 1, 1], [0.2, 0.7, np.nan])


@pytest.mark.parametrize("y", [[1, 1, 1, np.nan], [0, 0, 0, 0], [np.nan, np.nan]])
def test_one_class_gives_nan_and_warning(y: list[float]) -> None:
    p = np.linspace(0.1, 0.9, len(y))
    with pytest.warns(M.OneClassWarning, match="'Edema'"):
        assert math.isnan(M.roc_auc(y, p, name="Edema"))
    with pytest.warns(M.OneClassWarning):
        assert math.isnan(M.delong(y, p).auc)
    with pytest.warns(M.OneClassWarning):
        curve = M.roc_curve_points(y, p)
    assert curve.fpr.size == 0 and math.isnan(curve.auc)
    with pytest.warns(M.OneClassWarning):
        res = M.clustered_bootstrap_auc(y, p, np.arange(len(y)), n_boot=10)
    assert math.isnan(res.auc[0]) and math.isnan(res.ci_low[0]) and res.n_degenerate[0] == 10


def test_bad_labels_raise() -> None:
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        M.roc_auc([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="differ in length"):
        M.roc_auc([0, 1], [0.1, 0.2, 0.3])


def test_auc_per_label_columns_and_nan() -> None:
    y = np.array([[0, 1], [1, 1], [0, 1], [1, 1]], dtype=float)
    p = np.array([[0.1, 0.3], [0.9, 0.2], [0.2, 0.5], [0.4, 0.1]])
    with pytest.warns(M.OneClassWarning, match="'Edema'"):
        out = M.auc_per_label(y, p, ["Atelectasis", "Edema"])
    assert out[0] == 1.0 and math.isnan(out[1])


def test_roc_curve_points_match_hand_case() -> None:
    curve = M.roc_curve_points([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], drop_intermediate=False)
    np.testing.assert_allclose(curve.tpr, [0.0, 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(curve.fpr, [0.0, 0.0, 0.5, 0.5, 1.0])
    assert curve.auc == pytest.approx(0.75)
    assert np.isinf(curve.thresholds[0])


def test_weighted_auc_equals_sklearn_with_weights_and_repetition() -> None:
    rng = np.random.default_rng(3)
    y, p = _scored(300, seed=3)
    p = np.round(p, 2)  # many ties
    w = rng.integers(0, 4, size=(5, y.size)).astype(float)
    got = M.weighted_auc(y, p, w)
    for b in range(5):
        assert got[b] == pytest.approx(roc_auc_score(y, p, sample_weight=w[b]), abs=1e-12)
        rep = w[b].astype(int)
        assert got[b] == pytest.approx(roc_auc_score(np.repeat(y, rep), np.repeat(p, rep)), abs=1e-12)
    # a weight vector that removes every positive leaves no AUC
    assert math.isnan(M.weighted_auc(y, p, (y == 0).astype(float))[0])


def test_weighted_auc_random_tie_patterns() -> None:
    # small integer scores: runs of one class, values shared by both classes, all-tied data
    rng = np.random.default_rng(17)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        y = rng.integers(0, 2, n).astype(float)
        y[:2] = [0.0, 1.0]
        p = rng.integers(0, int(rng.integers(1, 6)), n).astype(float)
        w = rng.integers(1, 4, n).astype(float)
        assert M.weighted_auc(y, p, w)[0] == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-12)


# --------------------------------------------------------------------------------------------- DeLong


def test_midrank_equals_average_ranks() -> None:
    x = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    np.testing.assert_array_equal(M.midrank(x), [5.0, 1.5, 5.0, 3.0, 5.0, 1.5])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, 500).astype(float)
    np.testing.assert_array_equal(M.midrank(x), rankdata(x, method="average"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_auc_equals_sklearn(seed: int) -> None:
    y, p = _scored(2000, seed=seed)
    if seed == 2:
        p = np.round(p, 2)  # ties
    assert abs(M.delong(y, p).auc - roc_auc_score(y, p)) < 1e-12


def test_delong_variance_hand_case() -> None:
    # positives 0.9, 0.4, 0.6; negatives 0.5, 0.2. V10 = [1, 1/2, 1], V01 = [2/3, 1], AUC = 5/6,
    # S10 = 1/12, S01 = 1/18, var = S10 / 3 + S01 / 2 = 1/18.
    y = [1, 0, 1, 1, 0]
    p = [0.9, 0.5, 0.4, 0.6, 0.2]
    res = M.delong(y, p)
    assert res.auc == pytest.approx(5 / 6, abs=1e-15)
    assert res.variance == pytest.approx(1 / 18, abs=1e-15)
    assert res.se == pytest.approx(math.sqrt(1 / 18))
    assert (res.n_pos, res.n_neg) == (3, 2)


def test_delong_variance_equals_brute_force_with_ties() -> None:
    rng = np.random.default_rng(7)
    y = (rng.random(60) < 0.4).astype(float)
    p = np.round(rng.random(60) * 0.6 + 0.4 * y, 1)  # heavy ties
    auc, var = _brute_force_delong(y, p)
    res = M.delong(y, p)
    assert res.auc == pytest.approx(auc, abs=1e-14)
    assert res.variance == pytest.approx(var, rel=1e-12)


def test_delong_ci_methods() -> None:
    y, p = _scored(500, seed=4)
    logit = M.delong(y, p, ci=0.95, ci_method="logit")
    plain = M.delong(y, p, ci=0.95, ci_method="plain")
    assert plain.ci_low == pytest.approx(plain.auc - 1.959963984540054 * plain.se)
    assert plain.ci_high == pytest.approx(plain.auc + 1.959963984540054 * plain.se)
    lg = math.log(logit.auc / (1 - logit.auc))
    half = 1.959963984540054 * logit.se / (logit.auc * (1 - logit.auc))
    assert logit.ci_low == pytest.approx(1 / (1 + math.exp(-(lg - half))))
    assert logit.ci_low < logit.auc < logit.ci_high
    narrow = M.delong(y, p, ci=0.5)
    assert narrow.ci_high - narrow.ci_low < logit.ci_high - logit.ci_low
    perfect = M.delong([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert (perfect.auc, perfect.variance, perfect.ci_low, perfect.ci_high) == (1.0, 0.0, 1.0, 1.0)


def test_delong_se_agrees_with_bootstrap_se() -> None:
    y, p = _scored(3000, seed=11, shift=1.2)
    dl = M.delong(y, p)
    boot = M.clustered_bootstrap_auc(y, p, np.arange(y.size), n_boot=2000, seed=1)
    assert boot.se[0] == pytest.approx(dl.se, rel=0.15)


def test_paired_test_identical_predictions_p_one() -> None:
    y, p = _scored(500, seed=5)
    res = M.delong_paired_test(y, p, p)
    assert res.p == 1.0 and res.statistic == 0.0 and res.difference == 0.0
    # a monotone transform ranks the same: same AUC, no evidence of a difference
    res = M.delong_paired_test(y, p, p**3)
    assert res.p == pytest.approx(1.0)


def test_paired_test_detects_clearly_better_model() -> None:
    rng = np.random.default_rng(6)
    y = (rng.random(1000) < 0.3).astype(float)
    good = y * 2.0 + rng.normal(size=y.size)
    weak = y * 0.3 + rng.normal(size=y.size)
    res = M.delong_paired_test(y, good, weak)
    assert res.auc_a > res.auc_b
    assert res.statistic > 0 and res.p < 0.001
    swapped = M.delong_paired_test(y, weak, good)
    assert swapped.statistic == pytest.approx(-res.statistic) and swapped.p == pytest.approx(res.p)


def test_paired_test_variance_matches_brute_force() -> None:
    # var(A - B) = var A + var B - 2 cov(A, B), cov from the structural components of both models
    rng = np.random.default_rng(8)
    y = (rng.random(80) < 0.5).astype(float)
    a, b = rng.random(80) + 0.3 * y, rng.random(80) + 0.1 * y
    x_idx, z_idx = np.flatnonzero(y == 1), np.flatnonzero(y == 0)

    def comps(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        psi = (s[x_idx][:, None] > s[z_idx][None, :]) + 0.5 * (s[x_idx][:, None] == s[z_idx][None, :])
        return psi.mean(axis=1), psi.mean(axis=0)

    (a10, a01), (b10, b01) = comps(a), comps(b)
    m, n = x_idx.size, z_idx.size
    d10, d01 = a10 - b10, a01 - b01
    var = d10.var(ddof=1) / m + d01.var(ddof=1) / n
    res = M.delong_paired_test(y, a, b)
    assert res.variance == pytest.approx(var, rel=1e-10)
    expected_p = math.erfc(abs(res.difference / math.sqrt(var)) / math.sqrt(2))
    assert res.p == pytest.approx(expected_p, rel=1e-10)


def test_unpaired_test() -> None:
    res = M.unpaired_auc_test(0.80, 0.02**2, 0.75, 0.015**2)
    assert res.variance == pytest.approx(0.02**2 + 0.015**2)
    assert res.statistic == pytest.approx(0.05 / 0.025)  # sqrt(0.0004 + 0.000225) = 0.025
    assert res.p == pytest.approx(0.04550026389635842, rel=1e-9)  # 2 * (1 - Phi(2))
    assert M.unpaired_auc_test(0.7, 0.0, 0.7, 0.0).p == 1.0
    assert math.isnan(M.unpaired_auc_test(math.nan, 0.1, 0.7, 0.1).p)
    # two independent samples of the same model: no evidence of a difference most of the time
    y1, p1 = _scored(800, seed=21)
    y2, p2 = _scored(800, seed=22)
    d1, d2 = M.delong(y1, p1), M.delong(y2, p2)
    assert M.unpaired_auc_test(d1.auc, d1.variance, d2.auc, d2.variance).p > 0.05


def test_holm_hand_example() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    got = M.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(got, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(M.holm([0.01, np.nan, 0.04]), [0.02, np.nan, 0.04])
    np.testing.assert_allclose(M.holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    assert M.holm([]).size == 0


# --------------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_one_image_per_patient_is_the_plain_bootstrap() -> None:
    y, p = _scored(400, seed=9)
    n_boot = 50  # within one chunk, so the draws line up with a single (n_boot, n) draw
    res = M.clustered_bootstrap_auc(y, p, np.arange(y.size), n_boot=n_boot, seed=123)
    rng = np.random.default_rng(123)
    idx = rng.integers(0, y.size, size=(n_boot, y.size))
    plain = np.array([roc_auc_score(y[i], p[i]) for i in idx])
    np.testing.assert_allclose(res.samples[:, 0], plain, atol=1e-12)
    assert res.auc[0] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert res.ci_low[0] == pytest.approx(np.quantile(plain, 0.025))
    assert res.ci_high[0] == pytest.approx(np.quantile(plain, 0.975))
    assert res.n_patients == y.size and res.n_degenerate[0] == 0


def test_bootstrap_resamples_patients_with_all_their_images() -> None:
    # Patient ids shuffled and non-contiguous: the resample must still take whole patients.
    rng = np.random.default_rng(10)
    n_pat, per = 150, 3
    y_pat, p_pat = _scored(n_pat, seed=10)
    ids = rng.permutation(n_pat) * 7 + 1000  # patient k has id ids[k]
    groups = np.repeat(ids, per)
    y, p = np.repeat(y_pat, per), np.repeat(p_pat, per)
    res = M.clustered_bootstrap_auc(y, p, groups, n_boot=30, seed=0)
    # every image copy of a patient moves together, so the AUC equals that of the patient-level resample
    rng = np.random.default_rng(0)
    draws = rng.integers(0, n_pat, size=(30, n_pat))
    pat_of_code = np.argsort(ids)  # the bootstrap codes patients in sorted-id order
    for b in range(30):
        i = pat_of_code[draws[b]]
        assert res.samples[b, 0] == pytest.approx(roc_auc_score(y_pat[i], p_pat[i]), abs=1e-12)


def test_clustered_interval_wider_than_naive_with_duplicated_images() -> None:
    y_pat, p_pat = _scored(600, seed=12)
    per = 4
    y, p = np.repeat(y_pat, per), np.repeat(p_pat, per)
    patients = np.repeat(np.arange(600), per)
    clustered = M.clustered_bootstrap_auc(y, p, patients, n_boot=500, seed=0)
    naive = M.clustered_bootstrap_auc(y, p, np.arange(y.size), n_boot=500, seed=0)
    w_clustered = clustered.ci_high[0] - clustered.ci_low[0]
    w_naive = naive.ci_high[0] - naive.ci_low[0]
    assert w_clustered > 1.5 * w_naive  # ~ sqrt(4) = 2 times wider in expectation
    assert clustered.auc[0] == naive.auc[0]


def test_bootstrap_multilabel_seeded_and_degenerate_count() -> None:
    y1, p1 = _scored(300, seed=13)
    y2 = np.zeros(300)
    y2[:2] = 1.0  # two positives: many resamples draw neither
    y = np.column_stack([y1, y2])
    p = np.column_stack([p1, p1[::-1]])
    groups = np.arange(300)
    a = M.clustered_bootstrap_auc(y, p, groups, n_boot=200, seed=5, labels=["x", "rare"])
    b = M.clustered_bootstrap_auc(y, p, groups, n_boot=200, seed=5)
    c = M.clustered_bootstrap_auc(y, p, groups, n_boot=200, seed=6)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples[:, 0], c.samples[:, 0])
    assert a.n_degenerate[0] == 0
    expected_rare = np.isnan(a.samples[:, 1]).sum()
    assert a.n_degenerate[1] == expected_rare > 10  # P(no positive) = (1 - 2/300)^300 ~ 0.13 each
    assert a.ci_low[1] <= a.ci_high[1]  # the interval uses the non-degenerate resamples only


def test_bootstrap_masks_nan_labels_per_label() -> None:
    y, p = _scored(500, seed=14)
    y_nan = y.copy()
    y_nan[::5] = np.nan
    res = M.clustered_bootstrap_auc(np.column_stack([y, y_nan]), np.column_stack([p, p]), np.arange(500), n_boot=20)
    keep = ~np.isnan(y_nan)
    assert res.auc[1] == pytest.approx(roc_auc_score(y[keep], p[keep]), abs=1e-12)
    assert res.auc[0] == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_bootstrap_input_checks() -> None:
    with pytest.raises(ValueError, match="n_boot"):
        M.clustered_bootstrap_auc([0, 1], [0.1, 0.9], [0, 1], n_boot=0)
    with pytest.raises(ValueError, match="groups"):
        M.clustered_bootstrap_auc([0, 1], [0.1, 0.9], [0, 1, 2])


# --------------------------------------------------------------------------------------------- calibration


def test_calibration_hand_case() -> None:
    y = [0, 1, 1, 0]
    p = [0.1, 0.9, 0.6, 0.4]
    assert M.brier_score(y, p) == pytest.approx((0.01 + 0.01 + 0.16 + 0.16) / 4)
    # two bins: [0, .5) holds 0.1, 0.4 (mean .25, 0 positive); [.5, 1] holds .9, .6 (mean .75, all positive)
    curve = M.reliability_curve(y, p, n_bins=2)
    np.testing.assert_allclose(curve.mean_predicted, [0.25, 0.75])
    np.testing.assert_allclose(curve.fraction_positive, [0.0, 1.0])
    np.testing.assert_array_equal(curve.count, [2, 2])
    np.testing.assert_allclose(curve.bin_lower, [0.0, 0.5])
    assert M.expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.25)


def test_calibration_edges_empty_bins_and_nan() -> None:
    y = [1, 0, np.nan, 1]
    p = [1.0, 0.0, 0.7, 0.95]  # p == 1 falls in the last bin; the NaN-labelled image is ignored
    curve = M.reliability_curve(y, p, n_bins=10)
    assert curve.count.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert math.isnan(curve.mean_predicted[5]) and math.isnan(curve.fraction_positive[5])
    assert M.expected_calibration_error(y, p, n_bins=10) == pytest.approx((2 / 3) * 0.025)
    assert M.brier_score(y, p) == pytest.approx(0.05**2 / 3)
    # perfectly calibrated constant forecast
    assert M.expected_calibration_error([0, 1, 0, 1], [0.5] * 4) == 0.0
    assert M.brier_score([0, 1, 0, 1], [0.5] * 4) == 0.25
    assert math.isnan(M.brier_score([np.nan], [0.3]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.brier_score([0, 1], [0.5, 1.5])


def test_one_class_calibration_is_defined_without_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert M.brier_score([0, 0], [0.2, 0.4]) == pytest.approx(0.1)


def test_metrics_module_does_not_import_torch() -> None:
    code = "import sys, cxrgen.metrics; sys.exit(int('torch' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
