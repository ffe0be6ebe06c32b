"""DeLong's AUC variance and tests (single, paired, unpaired), midranks, and Holm's correction."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from cxrgen.metrics._arrays import CIMethod, FloatArray, _as_1d, _masked, _one_class, _two_sided_p, _z_quantile
from cxrgen.metrics.auc import roc_auc


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
