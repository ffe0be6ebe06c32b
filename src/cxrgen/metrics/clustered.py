"""Patient-clustered comparisons of AUCs: the paired bootstrap and the two-stage (seeds, then patients) bootstrap.

DESIGN.md section 9: the patient is the unit of independence and training randomness counts. A paired comparison
draws one patient resample per replicate and applies it to both models, so the correlation of the two models on
the same patients is kept; with several training seeds each replicate also draws seeds with replacement (the
same seed draws on both sides when both sides have the same seeds) and averages their AUCs.

Why hand-written: no maintained library (scipy, scikit-learn, statsmodels, arch) resamples clusters for a pair
of AUCs; ``scipy.stats.bootstrap`` resamples observations. A patient resample is expressed as integer weights per
image (its patient's multiplicity) and every model's weighted Mann-Whitney AUC is computed for a chunk of
resamples at once from one sort per model (:mod:`cxrgen.metrics` builds the count matrices).

The p-value is two-sided from the normal approximation ``difference / se`` with ``se`` the bootstrap standard
error (Obuchowski-style Wald test with a clustered variance); the interval is the percentile interval of the
resampled differences. Percentile p-values from 1,000 resamples cannot go below 0.001, too coarse for Holm over
dozens of tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cxrgen.metrics._arrays import _masked, _one_class, _two_sided_p
from cxrgen.metrics.auc import labelled_auc
from cxrgen.metrics.bootstrap import _BOOT_CHUNK, generator_after_draws, patient_codes, resampled_aucs_of

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Resamples drawn together (those of :func:`cxrgen.metrics.patient_resample`); fixed so that the random stream
#: never depends on a tuning knob.
_CHUNK = _BOOT_CHUNK

__all__ = ["ClusteredPairedResult", "SeedBootstrapResult", "clustered_paired_bootstrap", "resampled_aucs",
           "seed_bootstrap_auc"]


def _scores_2d(p: ArrayLike, n: int, what: str) -> FloatArray:
    arr = np.asarray(p, dtype=np.float64)
    arr = arr[None, :] if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[1] != n:
        raise ValueError(f"{what} must be [N] or [S, N] with N = {n}, got shape {np.shape(p)}")
    return arr


def resampled_aucs(
    y: ArrayLike, scores: ArrayLike, groups: ArrayLike, *, n_boot: int, seed: int, name: str = "label"
) -> tuple[FloatArray, FloatArray, np.random.Generator]:
    """AUCs of K score rows on the full data [K] and on ``n_boot`` shared patient resamples [n_boot, K].

    Every replicate draws as many patients as there are, with replacement, and applies the same draw to all K
    rows. Images with NaN ``y`` are left out. Returns the generator too, so that callers draw seeds from the
    same stream (one ``seed`` fixes the whole result). A label with one class gives NaN (with a warning).
    """
    ya = np.asarray(y, dtype=np.float64)
    if ya.ndim != 1:
        raise ValueError(f"y must be one-dimensional, got shape {ya.shape}")
    sc = _scores_2d(scores, ya.size, "scores")
    g = np.asarray(groups)
    if g.shape != ya.shape:
        raise ValueError(f"groups must be [N] with N = {ya.size}, got {g.shape}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")
    keep = ~np.isnan(ya)
    codes, n_pat = patient_codes(g[keep])
    k = sc.shape[0]
    point = np.full(k, np.nan)
    samples = np.full((n_boot, k), np.nan)
    ym = _masked(ya, sc[0], name)[0]
    if _one_class(ym, name):
        return point, samples, np.random.default_rng(seed)
    scored = []
    for r in range(k):
        pm = _masked(ya, sc[r], name)[1]
        point[r] = labelled_auc(ym, pm)
        scored.append((ym, pm, codes))
    # The draws of clustered_bootstrap_auc on the same patients (same generator, same chunks), drawn once.
    samples[:] = np.column_stack(resampled_aucs_of(scored, n_pat, n_boot, seed))
    return point, samples, generator_after_draws(n_pat, n_boot, seed)


def _drawn_means(samples: FloatArray, draws: IntArray) -> FloatArray:
    """Mean over the drawn seeds of each replicate, the seed deviations rescaled by sqrt(S / (S - 1)).

    Drawing S of S seeds with replacement gives a mean whose variance is (S - 1) / S times the usual s² / S (the
    plug-in variance divides by S, not S - 1): a third of the seed variance lost with 3 seeds. As for residuals in
    Davison & Hinkley (1997, Bootstrap Methods and their Application, section 3.3 and 3.8), each replicate's drawn
    deviations from its own seed mean are inflated by sqrt(S / (S - 1)), so the seed component of the bootstrap
    variance is s² / S. ``samples`` [B, S] AUC per replicate and seed, ``draws`` [B, S] seed indices.
    """
    n_seeds = samples.shape[1]
    drawn = np.take_along_axis(samples, draws, axis=1).mean(axis=1)
    if n_seeds == 1:
        return np.asarray(drawn, dtype=np.float64)
    centre = samples.mean(axis=1)
    return np.asarray(centre + math.sqrt(n_seeds / (n_seeds - 1)) * (drawn - centre), dtype=np.float64)


def _seed_means(samples: FloatArray, n_seeds: int, rng: np.random.Generator) -> tuple[IntArray, FloatArray]:
    """Second stage: per replicate draw ``n_seeds`` seeds with replacement; returns (draws [B, S], mean AUC [B]),
    the means from :func:`_drawn_means` (seed variance not shrunk)."""
    n_boot = samples.shape[0]
    if n_seeds == 1:
        return np.zeros((n_boot, 1), dtype=np.int64), samples[:, 0]
    draws = rng.integers(0, n_seeds, size=(n_boot, n_seeds), dtype=np.int64)
    return draws, _drawn_means(samples, draws)


@dataclass(frozen=True)
class SeedBootstrapResult:
    """Mean AUC over training seeds with a two-stage (seeds, then patients) percentile interval.

    Attributes:
        auc: Mean over seeds of each seed's AUC on the full test set.
        seed_sd: Standard deviation of the seeds' AUCs (ddof=1); NaN with one seed.
        ci_low: Lower percentile bound of the ``ci`` interval of the resampled means.
        ci_high: Upper bound.
        se: Standard deviation of the resampled means.
        n_seeds: Training seeds combined.
        training_variance_counted: False with one seed: the interval then holds patient variance only.
    """

    auc: float
    seed_sd: float
    ci_low: float
    ci_high: float
    se: float
    n_seeds: int
    training_variance_counted: bool


def seed_bootstrap_auc(
    y: ArrayLike,
    p_seeds: ArrayLike,
    groups: ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    name: str = "label",
) -> SeedBootstrapResult:
    """Two-stage bootstrap of the seed-averaged AUC of one label; ``p_seeds`` is [S, N] (one row per seed)."""
    ya = np.asarray(y, dtype=np.float64)
    sc = _scores_2d(p_seeds, ya.size, "p_seeds")
    point, samples, rng = resampled_aucs(ya, sc, groups, n_boot=n_boot, seed=seed, name=name)
    n_seeds = sc.shape[0]
    _, means = _seed_means(samples, n_seeds, rng)
    ok = means[~np.isnan(means)]
    alpha = 1.0 - ci
    lo, hi = (np.quantile(ok, [alpha / 2, 1 - alpha / 2]) if ok.size else (math.nan, math.nan))
    return SeedBootstrapResult(
        auc=float(np.mean(point)),
        seed_sd=float(np.std(point, ddof=1)) if n_seeds > 1 else math.nan,
        ci_low=float(lo),
        ci_high=float(hi),
        se=float(np.std(ok, ddof=1)) if ok.size > 1 else math.nan,
        n_seeds=n_seeds,
        training_variance_counted=n_seeds > 1,
    )


@dataclass(frozen=True)
class ClusteredPairedResult:
    """Patient-clustered paired comparison of two models (or seed sets) on the same images.

    Attributes:
        auc_a: AUC of side a (mean over its seeds).
        auc_b: AUC of side b.
        difference: ``auc_a - auc_b``.
        se: Bootstrap standard error of the difference (patients, and seeds when there are several).
        ci_low: Lower percentile bound of the resampled differences.
        ci_high: Upper bound.
        statistic: ``difference / se``.
        p: Two-sided normal p-value of ``statistic``; 1 when ``se`` is 0 and the difference is 0.
        n_boot: Replicates drawn (those where a label held one class are left out).
        seeds_paired: True when both sides had the same number of seeds and shared their seed draws.
    """

    auc_a: float
    auc_b: float
    difference: float
    se: float
    ci_low: float
    ci_high: float
    statistic: float
    p: float
    n_boot: int
    seeds_paired: bool


def clustered_paired_bootstrap(
    y: ArrayLike,
    p_a: ArrayLike,
    p_b: ArrayLike,
    groups: ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    name: str = "label",
) -> ClusteredPairedResult:
    """Paired patient-clustered bootstrap of ``AUC(a) - AUC(b)`` on rows aligned image by image.

    ``p_a`` and ``p_b`` are [N] or [S, N] (one row per training seed). One patient resample per replicate is
    shared by both sides; with the same number of seeds on both sides the seed draws are shared too (seed i of
    a is paired with seed i of b), otherwise each side draws its own seeds.
    """
    ya = np.asarray(y, dtype=np.float64)
    sa = _scores_2d(p_a, ya.size, "p_a")
    sb = _scores_2d(p_b, ya.size, "p_b")
    point, samples, rng = resampled_aucs(ya, np.vstack([sa, sb]), groups, n_boot=n_boot, seed=seed, name=name)
    k_a, k_b = sa.shape[0], sb.shape[0]
    paired_seeds = k_a == k_b
    draws_a, mean_a = _seed_means(samples[:, :k_a], k_a, rng)
    other = samples[:, k_a:]
    mean_b = _drawn_means(other, draws_a) if paired_seeds else _seed_means(other, k_b, rng)[1]
    auc_a, auc_b = float(np.mean(point[:k_a])), float(np.mean(point[k_a:]))
    diff = auc_a - auc_b
    d = (mean_a - mean_b)[~np.isnan(mean_a - mean_b)]
    nan = math.nan
    if d.size < 2:
        return ClusteredPairedResult(auc_a, auc_b, diff, nan, nan, nan, nan, nan, int(d.size), paired_seeds)
    alpha = 1.0 - ci
    lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
    se = float(np.std(d, ddof=1))
    if se == 0.0:
        stat, p = (0.0, 1.0) if diff == 0.0 else (math.copysign(math.inf, diff), 0.0)
    else:
        stat = diff / se
        p = _two_sided_p(stat)
    return ClusteredPairedResult(auc_a, auc_b, diff, se, float(lo), float(hi), stat, p, int(d.size), paired_seeds)
