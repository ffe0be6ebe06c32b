"""Patient-clustered paired comparisons, the two-stage seed bootstrap, and the DeLong fixes of issue 15."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score

from cxrgen import metrics
from cxrgen.metrics.clustered import _CHUNK, clustered_paired_bootstrap, seed_bootstrap_auc


def _patients(n_patients: int, seed: int, shared: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Patients with 1-4 images; patient effects (one shared by both models, one per model) correlate images."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, n_patients)
    groups = np.repeat(np.arange(n_patients), sizes)
    y = np.repeat(rng.random(n_patients) < 0.3, sizes).astype(float)
    effect = np.repeat(rng.normal(size=(3, n_patients)), sizes, axis=1) * shared  # shared, a's own, b's own
    p_a = effect[0] + effect[1] + y * 1.0 + rng.normal(size=groups.size) * 0.5
    p_b = effect[0] + effect[2] + y * 0.8 + rng.normal(size=groups.size) * 0.5
    return y, p_a, p_b, groups.astype(str)


def _naive_differences(y, p_a, p_b, groups, draws_per_chunk):
    """Reference: build each resample explicitly (concatenate the drawn patients' images), score with sklearn."""
    ids, codes = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(codes == c) for c in range(ids.size)]
    out = []
    for draws in draws_per_chunk:
        for row in draws:
            idx = np.concatenate([members[c] for c in row])
            out.append(roc_auc_score(y[idx], p_a[idx]) - roc_auc_score(y[idx], p_b[idx]))
    return np.array(out)


def test_paired_bootstrap_equals_explicit_patient_resampling_draw_for_draw() -> None:
    y, p_a, p_b, groups = _patients(120, seed=1)
    n_boot = 2 * _CHUNK + 10
    result = clustered_paired_bootstrap(y, p_a, p_b, groups, n_boot=n_boot, seed=7)
    rng = np.random.default_rng(7)
    n_pat = np.unique(groups).size
    chunks = [rng.integers(0, n_pat, size=(min(_CHUNK, n_boot - s), n_pat)) for s in range(0, n_boot, _CHUNK)]
    reference = _naive_differences(y, p_a, p_b, groups, chunks)
    assert result.se == pytest.approx(float(np.std(reference, ddof=1)), rel=1e-10)
    assert result.ci_low == pytest.approx(float(np.quantile(reference, 0.025)), abs=1e-12)
    assert result.difference == pytest.approx(roc_auc_score(y, p_a) - roc_auc_score(y, p_b), abs=1e-12)


@pytest.mark.slow
def test_paired_bootstrap_se_matches_an_independent_naive_bootstrap_within_monte_carlo_error() -> None:
    y, p_a, p_b, groups = _patients(100, seed=2)
    n_boot = 1000
    fast = clustered_paired_bootstrap(y, p_a, p_b, groups, n_boot=n_boot, seed=3)
    rng = np.random.default_rng(12345)  # a different stream, drawn one replicate at a time
    n_pat = np.unique(groups).size
    reference = _naive_differences(y, p_a, p_b, groups, [rng.integers(0, n_pat, size=(n_boot, n_pat))])
    ref_se = float(np.std(reference, ddof=1))
    # Each SE estimate has relative Monte Carlo SD ~ 1/sqrt(2 B); their difference ~ 1/sqrt(B); allow 4 of those.
    assert abs(fast.se - ref_se) < 4.0 * ref_se / math.sqrt(n_boot)
    # The image-level DeLong SE ignores the shared patient effect and is clearly smaller here.
    delong = metrics.delong_paired_test(y, p_a, p_b)
    assert math.sqrt(delong.variance) < 0.9 * fast.se
    assert fast.p == pytest.approx(2 * norm.sf(abs(fast.difference / fast.se)), rel=1e-9)


def test_identical_models_differ_by_zero_with_p_one() -> None:
    y, p_a, _, groups = _patients(60, seed=4)
    result = clustered_paired_bootstrap(y, p_a, p_a.copy(), groups, n_boot=200, seed=0)
    assert (result.difference, result.se, result.statistic, result.p) == (0.0, 0.0, 0.0, 1.0)


def test_delong_paired_variance_does_not_cancel_for_nearly_identical_models() -> None:
    """The audit's reproducer: 200,000 images, one rank-adjacent positive/negative pair swapped."""
    rng = np.random.default_rng(0)
    n = 200_000
    y = (rng.random(n) < 0.10).astype(float)
    p_a = rng.normal(size=n) + 1.5 * y
    order = np.argsort(p_a)
    ys = y[order]
    k = int(np.flatnonzero((ys[:-1] == 1) & (ys[1:] == 0))[0])  # a positive just below a negative
    i, j = order[k], order[k + 1]
    p_b = p_a.copy()
    p_b[i], p_b[j] = p_a[j], p_a[i]
    test = metrics.delong_paired_test(y, p_a, p_b)
    assert math.isfinite(test.statistic) and 0.0 < test.p < 1.0
    pos = y == 1
    m, n_neg = int(pos.sum()), int((~pos).sum())

    def placements(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r_all = rankdata(p)
        return (r_all[pos] - rankdata(p[pos])) / n_neg, 1.0 - (r_all[~pos] - rankdata(p[~pos])) / m

    v10a, v01a = placements(p_a)
    v10b, v01b = placements(p_b)
    var = np.var(v10a - v10b, ddof=1) / m + np.var(v01a - v01b, ddof=1) / n_neg
    z_ref = (roc_auc_score(y, p_a) - roc_auc_score(y, p_b)) / math.sqrt(var)
    assert test.statistic == pytest.approx(z_ref, abs=1e-6)
    assert test.statistic == pytest.approx(-0.71, abs=0.02)
    assert test.difference == pytest.approx(-1.0 / (m * n_neg), rel=1e-6)


def test_a_class_with_one_image_has_undefined_delong_variance() -> None:
    y = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
    p = np.array([0.9, 0.1, 0.4, 0.2, 0.95])
    with pytest.warns(metrics.SingleImageClassWarning, match="1 positive and 4 negative"):
        single = metrics.delong(y, p)
    assert single.auc == pytest.approx(0.75) and math.isnan(single.variance) and math.isnan(single.ci_low)
    with pytest.warns(metrics.SingleImageClassWarning):
        paired = metrics.delong_paired_test(y, p, p[::-1])
    assert math.isnan(paired.variance) and math.isnan(paired.p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        two = metrics.delong(np.r_[y, 1.0], np.r_[p, 0.5])  # two positives: defined, no warning
    assert two.variance > 0


def test_seed_bootstrap_reports_seed_sd_and_widens_with_training_noise() -> None:
    y, p_a, _, groups = _patients(200, seed=5, shared=0.3)
    rng = np.random.default_rng(9)
    seeds = np.vstack([p_a + rng.normal(size=p_a.size) * s for s in (0.2, 1.0, 2.0)])
    three = seed_bootstrap_auc(y, seeds, groups, n_boot=400, seed=1)
    per_seed = [roc_auc_score(y, row) for row in seeds]
    assert three.auc == pytest.approx(float(np.mean(per_seed)), abs=1e-12)
    assert three.seed_sd == pytest.approx(float(np.std(per_seed, ddof=1)), abs=1e-12)
    assert three.training_variance_counted and three.n_seeds == 3
    one = seed_bootstrap_auc(y, seeds[1], groups, n_boot=400, seed=1)
    assert not one.training_variance_counted and math.isnan(one.seed_sd)
    assert (three.ci_high - three.ci_low) > 1.3 * (one.ci_high - one.ci_low)


def test_paired_seeds_share_their_draws() -> None:
    y, p_a, p_b, groups = _patients(100, seed=6)
    rng = np.random.default_rng(2)
    noise = rng.normal(size=(2, p_a.size)) * 1.5
    # Seed i of a and seed i of b share their training noise: pairing seeds cancels it.
    paired = clustered_paired_bootstrap(y, p_a + noise, p_b + noise, groups, n_boot=300, seed=0)
    unpaired = clustered_paired_bootstrap(y, p_a + noise, p_b + noise[::-1][:1], groups, n_boot=300, seed=0)
    assert paired.seeds_paired and not unpaired.seeds_paired
    assert paired.se < unpaired.se


def test_two_stage_bootstrap_keeps_the_seed_variance_with_three_seeds() -> None:
    # Issue 27. The reference is the variance decomposition of the two-stage bootstrap: given a patient resample b
    # with seed AUCs x_b1..x_bS, the seed stage should add the textbook variance of a mean, s_b² / S (s_b² the
    # sample variance, ddof=1); plain resampling of S seeds adds (S - 1)/S of it, a third lost with S = 3.
    from cxrgen.metrics.clustered import resampled_aucs

    y, p_a, _, groups = _patients(200, seed=5, shared=0.3)
    rng = np.random.default_rng(9)
    seeds = np.vstack([p_a + rng.normal(size=p_a.size) * s for s in (0.2, 1.0, 2.0)])
    n_boot = 6000
    result = seed_bootstrap_auc(y, seeds, groups, n_boot=n_boot, seed=1)
    _, samples, _ = resampled_aucs(y, seeds, groups, n_boot=n_boot, seed=1)  # the same patient resamples
    patient_part = float(np.var(samples.mean(axis=1), ddof=1))
    seed_part = float(np.mean(np.var(samples, axis=1, ddof=1))) / 3
    assert seed_part > 2 * patient_part  # the seed component dominates, so a shrunk one would show
    expected = math.sqrt(patient_part + seed_part)
    assert result.se == pytest.approx(expected, rel=0.04)
    shrunk = math.sqrt(patient_part + seed_part * 2 / 3)
    assert abs(result.se - expected) < abs(result.se - shrunk) / 3
