"""Evaluation statistics on numpy arrays: AUC, ROC, patient-clustered bootstrap, DeLong, calibration.

Every function here is pure: arrays in, numbers or frozen dataclasses out, no I/O, no torch, no global random
state (randomness comes from a seeded :class:`numpy.random.Generator` built inside the call).

Conventions shared by all functions:

* ``y`` holds ground truth in {0, 1} or NaN. NaN means "label not available for this image" (blank or
  uncertain under an ``ignore`` policy); such images are masked out of that label only.
* ``p`` holds predicted probabilities (any monotone score works for AUC; calibration needs [0, 1]). ``p``
  must be finite wherever ``y`` is not NaN.
* A label whose masked ``y`` holds only one class has no AUC: the result is NaN and a
  :class:`OneClassWarning` is issued, never 0 and never an exception (MONAI's convention).

Why hand-written code instead of a library:

* The DeLong variance and tests (DeLong, DeLong & Clarke-Pearson 1988) are implemented with the fast midrank
  algorithm of Sun & Xu (2014), "Fast implementation of DeLong's algorithm for comparing the areas under
  correlated receiver operating characteristic curves", IEEE Signal Processing Letters 21(11):1389-1393. No
  maintained Python library (scikit-learn, scipy, statsmodels) provides DeLong's variance or the paired test.
* Chest X-ray test sets hold several images per patient, and images of one patient are correlated; an
  image-level bootstrap therefore gives intervals that are too narrow. The bootstrap here resamples
  *patients* with replacement and keeps all of their images (a clustered bootstrap). scipy's ``bootstrap``
  resamples observations, not clusters, and recomputing ``roc_auc_score`` per resample is two orders of
  magnitude too slow for 1,000 resamples x 45k images x several labels; here a resample of patients is
  expressed as integer weights per image (the multiplicity of its patient) and the weighted Mann-Whitney
  AUC of all resamples is computed at once from a single sort of the scores.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import roc_auc_score, roc_curve

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
CIMethod = Literal["logit", "plain"]

#: Resamples processed together by :func:`clustered_bootstrap_auc`. Fixed (not a parameter) so that the
#: random stream, hence the result for a given seed, never depends on a tuning knob.
_BOOT_CHUNK = 64

__all__ = [
    "BootstrapResult",
    "DelongResult",
    "OneClassWarning",
    "PairedTestResult",
    "ReliabilityCurve",
    "RocCurve",
    "SingleImageClassWarning",
    "UnpairedTestResult",
    "auc_per_label",
    "brier_score",
    "clustered_bootstrap_auc",
    "delong",
    "delong_paired_test",
    "expected_calibration_error",
    "holm",
    "midrank",
    "patient_bootstrap_weights",
    "reliability_curve",
    "roc_auc",
    "roc_curve_points",
    "unpaired_auc_test",
    "weighted_auc",
]


class OneClassWarning(UserWarning):
    """A label has only positives or only negatives after masking NaN, so its AUC is undefined (NaN)."""


# ----------------------------------------------------------------------------------------------- helpers


def _as_1d(x: ArrayLike, what: str) -> FloatArray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {arr.shape}")
    return arr


def _masked(y: ArrayLike, p: ArrayLike, name: str) -> tuple[FloatArray, FloatArray]:
    """Drop images whose label is NaN; check what is left. Returns (y, p) as float arrays."""
    ya, pa = _as_1d(y, "y"), _as_1d(p, "p")
    if ya.shape != pa.shape:
        raise ValueError(f"{name}: y and p differ in length ({ya.size} vs {pa.size})")
    keep = ~np.isnan(ya)
    ya, pa = ya[keep], pa[keep]
    if not np.isin(ya, (0.0, 1.0)).all():
        bad = np.unique(ya[~np.isin(ya, (0.0, 1.0))])[:5]
        raise ValueError(f"{name}: y must be 0, 1 or NaN, found {bad.tolist()}")
    if not np.isfinite(pa).all():
        raise ValueError(f"{name}: p is NaN or infinite for {int((~np.isfinite(pa)).sum())} labelled images")
    return ya, pa


def _one_class(y: FloatArray, name: str, what: str = "AUC") -> bool:
    """True (and a warning) when ``y`` (already masked) lacks a class."""
    n_pos = int((y == 1).sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        warnings.warn(
            f"{what} undefined for {name!r}: {n_pos} positive and {n_neg} negative images after masking "
            "NaN labels; returning NaN",
            OneClassWarning,
            stacklevel=3,
        )
        return True
    return False


def _z_quantile(ci: float) -> float:
    """Two-sided standard normal quantile for a ``ci`` confidence level (0.95 -> 1.95996)."""
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    from scipy.stats import norm

    return float(norm.ppf(0.5 + ci / 2.0))


def _two_sided_p(z: float) -> float:
    """Two-sided p-value of a standard normal statistic (erfc keeps precision far in the tail)."""
    return math.erfc(abs(z) / math.sqrt(2.0))


# ----------------------------------------------------------------------------------------------- AUC / ROC


def roc_auc(y: ArrayLike, p: ArrayLike, *, name: str = "label") -> float:
    """Area under the ROC curve of one label, NaN labels masked.

    Args:
        y: Ground truth, shape [N], values 0, 1 or NaN (NaN = not labelled, excluded).
        p: Scores, shape [N]; finite where ``y`` is not NaN.
        name: Label name used in warnings and errors.

    Returns:
        The AUC in [0, 1] (scikit-learn's ``roc_auc_score``, ties counted one half), or NaN with a
        :class:`OneClassWarning` when the labelled images hold a single class.
    """
    ya, pa = _masked(y, p, name)
    if _one_class(ya, name):
        return math.nan
    return float(roc_auc_score(ya, pa))


def auc_per_label(y: ArrayLike, p: ArrayLike, labels: Sequence[str] | None = None) -> FloatArray:
    """AUC of every column of ``y`` [N, L] against the same column of ``p`` [N, L]; NaN where undefined."""
    ya = np.asarray(y, dtype=np.float64)
    pa = np.asarray(p, dtype=np.float64)
    if ya.ndim != 2 or ya.shape != pa.shape:
        raise ValueError(f"y and p must both be [N, L], got {ya.shape} and {pa.shape}")
    names = list(labels) if labels is not None else [f"label {j}" for j in range(ya.shape[1])]
    if len(names) != ya.shape[1]:
        raise ValueError(f"{len(names)} label names for {ya.shape[1]} columns")
    return np.array([roc_auc(ya[:, j], pa[:, j], name=names[j]) for j in range(ya.shape[1])])


@dataclass(frozen=True)
class RocCurve:
    """Points of an ROC curve, from the strictest threshold to the loosest.

    Attributes:
        fpr: False positive rate (1 - specificity) at each threshold, in [0, 1].
        tpr: True positive rate (sensitivity) at each threshold, in [0, 1].
        thresholds: Score thresholds (predict positive when ``p >= threshold``); the first is ``inf``.
        auc: Area under these points; NaN when undefined.
    """

    fpr: FloatArray
    tpr: FloatArray
    thresholds: FloatArray
    auc: float


def roc_curve_points(
    y: ArrayLike, p: ArrayLike, *, name: str = "label", drop_intermediate: bool = True
) -> RocCurve:
    """ROC curve points of one label with NaN labels masked.

    With a single class the curve is undefined: the arrays are empty, ``auc`` is NaN and a
    :class:`OneClassWarning` is issued.
    """
    ya, pa = _masked(y, p, name)
    if _one_class(ya, name, "ROC curve"):
        empty = np.empty(0, dtype=np.float64)
        return RocCurve(empty, empty.copy(), empty.copy(), math.nan)
    fpr, tpr, thr = roc_curve(ya, pa, drop_intermediate=drop_intermediate)
    return RocCurve(
        np.asarray(fpr, dtype=np.float64),
        np.asarray(tpr, dtype=np.float64),
        np.asarray(thr, dtype=np.float64),
        float(roc_auc_score(ya, pa)),
    )


def _group_matrices(
    y: FloatArray, p: FloatArray, rows: IntArray, n_rows: int
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Count matrices [n_rows, G] of positive and negative images per (row, block of scores).

    Blocks partition the ascending scores: a score shared by both classes is a block of its own (its ties
    count one half); consecutive scores held by one class only merge into one block, since no comparison
    happens inside it. This keeps ``G`` near the number of class changes along the sorted scores rather
    than the number of images (about 4 times fewer columns at 15% prevalence). ``rows`` maps each image to
    a row (the image itself for :func:`weighted_auc`, its patient for the bootstrap). Multiplying a weight
    vector over rows by these matrices gives the weighted positives / negatives in each block.
    """
    pos = y == 1
    _, value_idx = np.unique(p, return_inverse=True)  # dense ascending code of each distinct score
    value_idx = value_idx.ravel()
    n_distinct = int(value_idx.max()) + 1 if p.size else 0
    has_pos = np.bincount(value_idx[pos], minlength=n_distinct) > 0
    has_neg = np.bincount(value_idx[~pos], minlength=n_distinct) > 0
    kind = has_pos.astype(np.int8) + 2 * has_neg.astype(np.int8)  # 1 positive only, 2 negative only, 3 both
    new_block = np.r_[True, (kind[1:] != kind[:-1]) | (kind[1:] == 3)] if n_distinct else np.empty(0, bool)
    block_of_value = np.cumsum(new_block) - 1
    value_idx = block_of_value[value_idx]
    n_values = int(block_of_value[-1]) + 1 if n_distinct else 0

    def count(mask: NDArray[np.bool_]) -> sp.csr_matrix:
        data = np.ones(int(mask.sum()), dtype=np.float64)
        return sp.coo_matrix((data, (rows[mask], value_idx[mask])), shape=(n_rows, n_values)).tocsr()

    return count(pos), count(~pos)


def _auc_from_group_weights(g_pos: FloatArray, g_neg: FloatArray) -> FloatArray:
    """Weighted Mann-Whitney AUC from weights at each distinct score, shapes [B, G] -> [B].

    AUC = sum_g W+_g * (W-_{<g} + W-_g / 2) / (W+ * W-): each positive beats the negatives with lower scores
    and ties half of those with the same score. NaN where a resample has no positive or no negative weight.
    """
    below = np.cumsum(g_neg, axis=1) - g_neg
    num = np.einsum("bg,bg->b", g_pos, below + 0.5 * g_neg)
    den = g_pos.sum(axis=1) * g_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = num / den
    auc[den <= 0] = np.nan
    return np.asarray(auc, dtype=np.float64)


def weighted_auc(y: ArrayLike, p: ArrayLike, weights: ArrayLike) -> FloatArray:
    """AUC with non-negative weights per image, for one weight vector [N] or many at once [B, N].

    Equals ``roc_auc_score(y, p, sample_weight=w)``; with integer weights it equals the AUC of the data
    with each image repeated ``w`` times. Images with NaN ``y`` are ignored. Returns an array of shape [B]
    (shape [1] for a single vector); NaN where the weighted data hold a single class (no warning: this is
    the building block of the bootstrap, which counts such resamples instead).
    """
    ya, pa = _as_1d(y, "y"), _as_1d(p, "p")
    w = np.asarray(weights, dtype=np.float64)
    w = w[None, :] if w.ndim == 1 else w
    if w.ndim != 2 or w.shape[1] != ya.size or pa.size != ya.size:
        raise ValueError(f"weights must be [N] or [B, N] with N = {ya.size}, got {np.shape(weights)}")
    if (w < 0).any():
        raise ValueError("weights must be non-negative")
    keep = ~np.isnan(ya)
    ym, pm = _masked(ya, pa, "weighted_auc")
    idx = np.arange(ym.size, dtype=np.int64)
    m_pos, m_neg = _group_matrices(ym, pm, idx, ym.size)
    wk = w[:, keep]
    return _auc_from_group_weights(np.asarray(wk @ m_pos), np.asarray(wk @ m_neg))


# ----------------------------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class BootstrapResult:
    """Patient-clustered bootstrap of per-label AUCs; every array has one entry per label.

    Attributes:
        auc: AUC on the full data (scikit-learn), NaN if the label has one class.
        ci_low: Lower percentile bound of the ``ci`` interval over non-degenerate resamples (NaN if none).
        ci_high: Upper percentile bound.
        se: Standard deviation of the resampled AUCs (bootstrap standard error), NaN if < 2 resamples.
        n_degenerate: Resamples in which the label held one class (AUC undefined, left out of the CI).
        samples: Resampled AUCs, shape [n_boot, L], NaN for degenerate resamples.
        n_boot: Number of resamples drawn.
        ci: Confidence level, e.g. 0.95.
        seed: Seed of the numpy Generator that drew the patients.
        n_patients: Distinct patients (clusters) in the data.
    """

    auc: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray
    se: FloatArray
    n_degenerate: IntArray
    samples: FloatArray
    n_boot: int
    ci: float
    seed: int
    n_patients: int


def clustered_bootstrap_auc(
    y: ArrayLike,
    p: ArrayLike,
    groups: ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    labels: Sequence[str] | None = None,
) -> BootstrapResult:
    """Percentile bootstrap CIs of AUC that resample patients, not images.

    Each resample draws as many patients as there are, with replacement, and keeps all images of every
    drawn patient. Equivalently, image ``i`` gets weight ``c[patient(i)]``, the number of times its patient
    was drawn, and the resample's AUC is the weighted AUC; this is how it is computed, for all labels and a
    chunk of resamples at once. All labels share the same resamples. With one image per patient this is the
    ordinary image-level bootstrap.

    Args:
        y: Ground truth [N] or [N, L] in {0, 1, NaN}; NaN images are left out of that label only.
        p: Scores, same shape as ``y``.
        groups: Patient id per image [N] (any hashable dtype numpy can sort).
        n_boot: Number of resamples (>= 1).
        seed: Seed of the :class:`numpy.random.Generator`; same seed, same intervals.
        ci: Confidence level of the percentile interval.
        labels: Label names for warnings (default ``label 0``, ``label 1``...).

    Returns:
        A :class:`BootstrapResult`. Labels with one class get NaN everywhere, ``n_degenerate == n_boot``
        and a :class:`OneClassWarning`.
    """
    ya = np.asarray(y, dtype=np.float64)
    pa = np.asarray(p, dtype=np.float64)
    if ya.ndim == 1:
        ya, pa = ya[:, None], pa[:, None]
    if ya.ndim != 2 or ya.shape != pa.shape:
        raise ValueError(f"y and p must both be [N] or [N, L], got {np.shape(y)} and {np.shape(p)}")
    g = np.asarray(groups)
    if g.shape != (ya.shape[0],):
        raise ValueError(f"groups must be [N] with N = {ya.shape[0]}, got {g.shape}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    n_labels = ya.shape[1]
    names = list(labels) if labels is not None else [f"label {j}" for j in range(n_labels)]
    if len(names) != n_labels:
        raise ValueError(f"{len(names)} label names for {n_labels} columns")

    _, codes = np.unique(g, return_inverse=True)
    codes = codes.astype(np.int64).ravel()
    n_pat = int(codes.max()) + 1 if codes.size else 0

    point = np.full(n_labels, np.nan)
    mats: list[tuple[sp.csr_matrix, sp.csr_matrix] | None] = []
    for j in range(n_labels):
        keep = ~np.isnan(ya[:, j])
        ym, pm = _masked(ya[:, j], pa[:, j], names[j])
        if _one_class(ym, names[j]):
            mats.append(None)
            continue
        point[j] = float(roc_auc_score(ym, pm))
        mats.append(_group_matrices(ym, pm, codes[keep], n_pat))

    samples = np.full((n_boot, n_labels), np.nan)
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot if any(m is not None for m in mats) else 0, _BOOT_CHUNK):
        b = min(_BOOT_CHUNK, n_boot - start)
        draws = rng.integers(0, n_pat, size=(b, n_pat))  # [b, P] patient indices drawn with replacement
        offsets = (np.arange(b, dtype=np.int64) * n_pat)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=b * n_pat).reshape(b, n_pat)
        counts_f = counts.astype(np.float64)  # [b, P] multiplicity of each patient
        for j, m in enumerate(mats):
            if m is None:
                continue
            g_pos = np.asarray(counts_f @ m[0])  # [b, G] weighted positives per score
            g_neg = np.asarray(counts_f @ m[1])
            samples[start : start + b, j] = _auc_from_group_weights(g_pos, g_neg)

    valid = ~np.isnan(samples)
    n_valid = valid.sum(axis=0)
    alpha = 1.0 - ci
    lo = np.full(n_labels, np.nan)
    hi = np.full(n_labels, np.nan)
    se = np.full(n_labels, np.nan)
    for j in range(n_labels):
        s = samples[valid[:, j], j]
        if s.size:
            lo[j], hi[j] = np.quantile(s, [alpha / 2.0, 1.0 - alpha / 2.0])
        if s.size > 1:
            se[j] = float(np.std(s, ddof=1))
    return BootstrapResult(
        auc=point,
        ci_low=lo,
        ci_high=hi,
        se=se,
        n_degenerate=(n_boot - n_valid).astype(np.int64),
        samples=samples,
        n_boot=n_boot,
        ci=ci,
        seed=seed,
        n_patients=n_pat,
    )


def patient_bootstrap_weights(groups: ArrayLike, *, n_boot: int = 1000, seed: int = 0) -> Iterator[FloatArray]:
    """The resamples of :func:`clustered_bootstrap_auc` as image weights, in chunks of [b, N].

    Image ``i`` weighs the number of times its patient was drawn. The draws are those of
    :func:`clustered_bootstrap_auc` with the same ``seed`` (same generator, same chunks), so any statistic
    computed from these weights (sensitivity, a false-positive rate, a difference of two) shares its
    resamples with the AUC intervals: one patient bootstrap for the whole evaluation, not a second one.
    """
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    codes = codes.astype(np.int64).ravel()
    n_pat = int(codes.max()) + 1 if codes.size else 0
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, _BOOT_CHUNK):
        b = min(_BOOT_CHUNK, n_boot - start)
        draws = rng.integers(0, n_pat, size=(b, n_pat))
        offsets = (np.arange(b, dtype=np.int64) * n_pat)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=b * n_pat).reshape(b, n_pat)
        yield counts.astype(np.float64)[:, codes]


# ----------------------------------------------------------------------------------------------- DeLong


def midrank(x: ArrayLike) -> FloatArray:
    """Midranks of ``x`` [N] (1-based; tied values share the mean of the ranks they span).

    This is the ``T`` of Sun & Xu (2014), Algorithm 1; identical to ``scipy.stats.rankdata(x, "average")``.
    """
    xa = _as_1d(x, "x")
    if np.isnan(xa).any():
        raise ValueError("midrank: x contains NaN")
    n = xa.size
    order = np.argsort(xa, kind="mergesort")
    xs = xa[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]]) if n else np.empty(0, dtype=np.int64)
    ends = np.r_[starts[1:], n]  # exclusive end of each run of ties
    mid = (starts + ends - 1) / 2.0 + 1.0
    out = np.empty(n, dtype=np.float64)
    out[order] = np.repeat(mid, ends - starts)
    return out


class SingleImageClassWarning(UserWarning):
    """A class holds one image, so DeLong's variance (a sample variance over that class) is undefined (NaN)."""


def _single_image_class(n_pos: int, n_neg: int, name: str) -> bool:
    """True (and a warning) when a class holds exactly one image: DeLong's variance is then undefined."""
    if min(n_pos, n_neg) == 1:
        warnings.warn(
            f"DeLong variance undefined for {name!r}: {n_pos} positive and {n_neg} negative images (a sample "
            "variance needs at least 2 images per class); returning NaN",
            SingleImageClassWarning,
            stacklevel=3,
        )
        return True
    return False


def _placement_values(y: FloatArray, scores: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """AUCs [K] and the placement values V10 [K, m] (positives) and V01 [K, n] (negatives) of K score rows.

    Sun & Xu (2014): V10_i = (T_z(X_i) - T_x(X_i)) / n and V01_j = 1 - (T_z(Y_j) - T_y(Y_j)) / m, with T_z the
    midranks in the pooled sample and T_x, T_y the midranks within each class; AUC = mean(V10).
    """
    pos = y == 1
    m, n = int(pos.sum()), int((~pos).sum())
    k = scores.shape[0]
    v10 = np.empty((k, m))
    v01 = np.empty((k, n))
    aucs = np.empty(k)
    for r in range(k):
        s = scores[r]
        tz = midrank(s)
        aucs[r] = (tz[pos].sum() - m * (m + 1) / 2.0) / (m * n)
        v10[r] = (tz[pos] - midrank(s[pos])) / n
        v01[r] = 1.0 - (tz[~pos] - midrank(s[~pos])) / m
    return aucs, v10, v01


def _delong_components(y: FloatArray, scores: FloatArray) -> tuple[FloatArray, FloatArray, int, int]:
    """AUCs [K] and their DeLong covariance [K, K] for K score rows [K, N] on the same labelled images.

    Sun & Xu (2014): with m positives X and n negatives Y, T_z the midranks in the pooled sample and
    T_x, T_y the midranks within each class, the structural components are
    V10_i = (T_z(X_i) - T_x(X_i)) / n and V01_j = 1 - (T_z(Y_j) - T_y(Y_j)) / m; AUC = mean(V10);
    Cov = S10 / m + S01 / n with S10, S01 the sample covariances (ddof=1) of the components across models.
    """
    aucs, v10, v01 = _placement_values(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10, ddof=1))  # callers ensure m, n >= 2 (_single_image_class)
    s01 = np.atleast_2d(np.cov(v01, ddof=1))
    return aucs, s10 / m + s01 / n, m, n


@dataclass(frozen=True)
class DelongResult:
    """AUC of one label with DeLong's variance and a normal-approximation confidence interval.

    Attributes:
        auc: AUC in [0, 1] (equals scikit-learn's), NaN if one class.
        variance: DeLong variance of the AUC (AUC units squared).
        se: Standard error, ``sqrt(variance)``.
        ci_low: Lower bound of the ``ci`` interval; ``ci_method`` says how it was built.
        ci_high: Upper bound.
        ci: Confidence level.
        ci_method: ``logit`` (interval on logit(AUC) with the delta-method SE ``se / (auc (1 - auc))``,
            back-transformed, so it stays inside (0, 1)) or ``plain`` (``auc +- z se`` clipped to [0, 1]).
        n_pos: Positive images used.
        n_neg: Negative images used.
    """

    auc: float
    variance: float
    se: float
    ci_low: float
    ci_high: float
    ci: float
    ci_method: CIMethod
    n_pos: int
    n_neg: int


def delong(
    y: ArrayLike, p: ArrayLike, *, ci: float = 0.95, ci_method: CIMethod = "logit", name: str = "label"
) -> DelongResult:
    """AUC, DeLong variance and confidence interval of one label (NaN labels masked).

    DeLong treats images as independent; with several images per patient prefer the clustered bootstrap
    interval (:func:`clustered_bootstrap_auc`) and report this one beside it. At AUC 0 or 1 the variance is
    0 and both interval methods return ``(auc, auc)``. One class: all NaN and a :class:`OneClassWarning`.
    """
    z = _z_quantile(ci)
    ya, pa = _masked(y, p, name)
    n_pos = int((ya == 1).sum())
    n_neg = int(ya.size - n_pos)
    if _one_class(ya, name):
        nan = math.nan
        return DelongResult(nan, nan, nan, nan, nan, ci, ci_method, n_pos, n_neg)
    if _single_image_class(n_pos, n_neg, name):
        auc = roc_auc(ya, pa, name=name)
        return DelongResult(auc, math.nan, math.nan, math.nan, math.nan, ci, ci_method, n_pos, n_neg)
    aucs, cov, _, _ = _delong_components(ya, pa[None, :])
    auc = float(aucs[0])
    var = max(float(cov[0, 0]), 0.0)
    se = math.sqrt(var)
    if ci_method == "logit":
        if 0.0 < auc < 1.0:
            lg = math.log(auc / (1.0 - auc))
            half = z * se / (auc * (1.0 - auc))
            lo, hi = 1.0 / (1.0 + math.exp(-(lg - half))), 1.0 / (1.0 + math.exp(-(lg + half)))
        else:
            lo = hi = auc
    elif ci_method == "plain":
        lo, hi = max(0.0, auc - z * se), min(1.0, auc + z * se)
    else:
        raise ValueError(f"ci_method must be 'logit' or 'plain', got {ci_method!r}")
    return DelongResult(auc, var, se, lo, hi, ci, ci_method, n_pos, n_neg)


@dataclass(frozen=True)
class PairedTestResult:
    """DeLong's test of two models scored on the same images (H0: equal AUC).

    Attributes:
        auc_a: AUC of model a.
        auc_b: AUC of model b.
        difference: ``auc_a - auc_b``.
        variance: DeLong variance of the difference (accounts for the correlation of the two models).
        statistic: z = difference / sqrt(variance); 0 when the variance is 0 and the AUCs are equal.
        p: Two-sided p-value; 1 when the variance of the difference is 0 and the AUCs are equal
            (e.g. identical predictions), NaN when the label has one class.
        n_pos: Positive images used.
        n_neg: Negative images used.
    """

    auc_a: float
    auc_b: float
    difference: float
    variance: float
    statistic: float
    p: float
    n_pos: int
    n_neg: int


def delong_paired_test(
    y: ArrayLike, p_a: ArrayLike, p_b: ArrayLike, *, name: str = "label"
) -> PairedTestResult:
    """Paired DeLong test comparing the AUCs of two models on the same images (rows aligned).

    Images with NaN ``y`` are masked for both models. One class: NaN and a :class:`OneClassWarning`.
    """
    ya = _as_1d(y, "y")
    pa, pb = _as_1d(p_a, "p_a"), _as_1d(p_b, "p_b")
    if not ya.size == pa.size == pb.size:
        raise ValueError(f"{name}: y, p_a and p_b differ in length ({ya.size}, {pa.size}, {pb.size})")
    ym, pam = _masked(ya, pa, name)
    _, pbm = _masked(ya, pb, name)
    n_pos = int((ym == 1).sum())
    n_neg = int(ym.size - n_pos)
    if _one_class(ym, name):
        nan = math.nan
        return PairedTestResult(nan, nan, nan, nan, nan, nan, n_pos, n_neg)
    if _single_image_class(n_pos, n_neg, name):
        nan = math.nan
        a_auc, b_auc = roc_auc(ym, pam, name=name), roc_auc(ym, pbm, name=name)
        return PairedTestResult(a_auc, b_auc, a_auc - b_auc, nan, nan, nan, n_pos, n_neg)
    aucs, v10, v01 = _placement_values(ym, np.vstack([pam, pbm]))
    diff = float(aucs[0] - aucs[1])
    # var(V10a - V10b) / m + var(V01a - V01b) / n: the variance of the difference from the differences of the
    # placement values themselves. Forming c00 + c11 - 2 c01 instead cancels catastrophically when the two
    # models are nearly identical (two variances of ~1e-5 whose difference is ~1e-12).
    var = float(np.var(v10[0] - v10[1], ddof=1) / n_pos + np.var(v01[0] - v01[1], ddof=1) / n_neg)
    if var == 0.0:
        if diff == 0.0:
            return PairedTestResult(float(aucs[0]), float(aucs[1]), diff, var, 0.0, 1.0, n_pos, n_neg)
        stat = math.copysign(math.inf, diff)
        return PairedTestResult(float(aucs[0]), float(aucs[1]), diff, var, stat, 0.0, n_pos, n_neg)
    stat = diff / math.sqrt(var)
    return PairedTestResult(float(aucs[0]), float(aucs[1]), diff, var, stat, _two_sided_p(stat), n_pos, n_neg)


@dataclass(frozen=True)
class UnpairedTestResult:
    """z test of two AUCs measured on independent test sets (H0: equal AUC).

    Attributes:
        auc_a: AUC a.
        auc_b: AUC b.
        difference: ``auc_a - auc_b``.
        variance: ``var_a + var_b`` (independence: no covariance term).
        statistic: z = difference / sqrt(variance).
        p: Two-sided p-value; 1 if both variances are 0 and the AUCs equal, NaN if any input is NaN.
    """

    auc_a: float
    auc_b: float
    difference: float
    variance: float
    statistic: float
    p: float


def unpaired_auc_test(auc_a: float, var_a: float, auc_b: float, var_b: float) -> UnpairedTestResult:
    """Compare two independent AUCs with a z test on their (e.g. DeLong) variances.

    Use for models evaluated on different images. If the two sets share images, the two AUCs are usually
    positively correlated and this test is conservative; use :func:`delong_paired_test` when the sets
    coincide.
    """
    diff = auc_a - auc_b
    var = var_a + var_b
    if any(math.isnan(v) for v in (auc_a, var_a, auc_b, var_b)):
        return UnpairedTestResult(auc_a, auc_b, diff, var, math.nan, math.nan)
    if var_a < 0 or var_b < 0:
        raise ValueError(f"variances must be >= 0, got {var_a} and {var_b}")
    if var == 0.0:
        if diff == 0.0:
            return UnpairedTestResult(auc_a, auc_b, diff, var, 0.0, 1.0)
        return UnpairedTestResult(auc_a, auc_b, diff, var, math.copysign(math.inf, diff), 0.0)
    stat = diff / math.sqrt(var)
    return UnpairedTestResult(auc_a, auc_b, diff, var, stat, _two_sided_p(stat))


def holm(pvalues: ArrayLike) -> FloatArray:
    """Holm's step-down adjusted p-values for one family of tests, in the input order.

    With the m non-NaN p-values sorted ascending, p_(i) becomes max_{j<=i} min(1, (m - j + 1) p_(j)).
    Reject H_(i) at level alpha iff the adjusted value is <= alpha (controls the family-wise error rate).
    NaN p-values (untestable labels) stay NaN and do not count in m.
    """
    pa = _as_1d(pvalues, "pvalues")
    out = np.full(pa.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(pa))
    if ok.size == 0:
        return out
    if ((pa[ok] < 0) | (pa[ok] > 1)).any():
        raise ValueError("p-values must be in [0, 1]")
    order = ok[np.argsort(pa[ok], kind="mergesort")]
    m = order.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * pa[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


# ----------------------------------------------------------------------------------------------- calibration


def _calib_inputs(y: ArrayLike, p: ArrayLike, name: str) -> tuple[FloatArray, FloatArray]:
    ya, pa = _masked(y, p, name)
    if ((pa < 0) | (pa > 1)).any():
        raise ValueError(f"{name}: probabilities must be in [0, 1] for calibration")
    return ya, pa


def brier_score(y: ArrayLike, p: ArrayLike, *, name: str = "label") -> float:
    """Mean squared difference between probability and outcome, in [0, 1] (lower is better).

    NaN labels are masked; NaN when no image is labelled. Unlike AUC it is defined with one class.
    """
    ya, pa = _calib_inputs(y, p, name)
    if ya.size == 0:
        return math.nan
    return float(np.mean((pa - ya) ** 2))


@dataclass(frozen=True)
class ReliabilityCurve:
    """Reliability diagram on equal-width probability bins; one entry per bin.

    Attributes:
        bin_lower: Lower edge of each bin (bins are [lower, upper), the last one closed at 1).
        bin_upper: Upper edge.
        mean_predicted: Mean probability of the images in the bin (NaN for an empty bin).
        fraction_positive: Observed fraction of positives in the bin (NaN for an empty bin).
        count: Labelled images in the bin.
    """

    bin_lower: FloatArray
    bin_upper: FloatArray
    mean_predicted: FloatArray
    fraction_positive: FloatArray
    count: IntArray


def reliability_curve(y: ArrayLike, p: ArrayLike, *, n_bins: int = 10, name: str = "label") -> ReliabilityCurve:
    """Observed positive rate against mean predicted probability, per equal-width bin of [0, 1]."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    ya, pa = _calib_inputs(y, p, name)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.minimum((pa * n_bins).astype(np.int64), n_bins - 1)  # p == 1 belongs to the last bin
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    sum_p = np.bincount(idx, weights=pa, minlength=n_bins)
    sum_y = np.bincount(idx, weights=ya, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(count > 0, sum_p / count, np.nan)
        frac = np.where(count > 0, sum_y / count, np.nan)
    return ReliabilityCurve(edges[:-1], edges[1:], mean_p, frac, count)


def expected_calibration_error(
    y: ArrayLike, p: ArrayLike, *, n_bins: int = 10, name: str = "label"
) -> float:
    """Expected calibration error: sum over bins of (n_bin / n) * |fraction positive - mean probability|.

    Equal-width bins on [0, 1] (see :func:`reliability_curve`); in probability units, 0 is perfect.
    NaN when no image is labelled.
    """
    curve = reliability_curve(y, p, n_bins=n_bins, name=name)
    n = int(curve.count.sum())
    if n == 0:
        return math.nan
    filled = curve.count > 0
    gaps = np.abs(curve.fraction_positive[filled] - curve.mean_predicted[filled])
    return float(np.sum(curve.count[filled] / n * gaps))
