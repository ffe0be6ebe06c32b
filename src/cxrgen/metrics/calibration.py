"""Calibration: Brier score, reliability curves, expected calibration error, O/E, calibration slope and intercept."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit

from cxrgen.metrics._arrays import FloatArray, IntArray, _masked


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


@dataclass(frozen=True)
class CalibrationFit:
    """Observed/expected and the logistic recalibration of one label, each with a Wald interval at ``ci``.

    Attributes:
        o_e: Observed over expected events, sum(y) / sum(p) (1 is calibrated in the large); interval
            exp(log(O/E) +- z / sqrt(O)) (Debray et al., BMJ 2017).
        slope: Calibration slope b of logit P(y=1) = a + b logit(p) (1 is ideal; below 1: too extreme).
        intercept: Calibration intercept (calibration-in-the-large) a of logit P(y=1) = a + logit(p), logit(p)
            as an offset (0 is ideal; above 0: risks underestimated).
        n: Labelled images.
        note: Why a statistic is NaN ("" when all are estimated).
    """

    o_e: tuple[float, float, float]
    slope: tuple[float, float, float]
    intercept: tuple[float, float, float]
    n: int
    note: str = ""


_NAN3 = (math.nan, math.nan, math.nan)
#: Probabilities are clipped to [EPS, 1 - EPS] before the logit (a probability of exactly 0 or 1 has none).
EPS = 1e-12


def _logistic(y: FloatArray, x: FloatArray | None, offset: FloatArray) -> tuple[FloatArray, FloatArray] | None:
    """Maximum likelihood of logit P(y=1) = beta0 [+ beta1 x] + offset by Newton-Raphson; (beta, SE) or None.

    None when it does not converge (separation: the slope runs off to infinity).
    """
    design = np.ones((y.size, 1)) if x is None else np.column_stack([np.ones(y.size), x])
    beta = np.zeros(design.shape[1])
    for _ in range(100):
        eta = design @ beta + offset
        mu = expit(eta)  # 1 / (1 + exp(-eta)), without an overflow warning far below 0
        weight = mu * (1.0 - mu)
        info = design.T @ (design * weight[:, None])  # Fisher information
        try:
            step = np.linalg.solve(info, design.T @ (y - mu))
        except np.linalg.LinAlgError:
            return None
        beta = beta + step
        if not np.all(np.isfinite(beta)) or np.max(np.abs(beta)) > 1e3:
            return None
        if np.max(np.abs(step)) < 1e-10:
            eta = design @ beta + offset
            mu = expit(eta)
            info = design.T @ (design * (mu * (1.0 - mu))[:, None])
            return beta, np.sqrt(np.diag(np.linalg.inv(info)))
    return None


def calibration_fit(y: ArrayLike, p: ArrayLike, *, ci: float = 0.95, name: str = "label") -> CalibrationFit:
    """O/E, calibration slope and calibration intercept with Wald intervals (Van Calster et al., 2019).

    The slope is the coefficient of logit(p) in a logistic regression of the outcome on logit(p) with an
    intercept; the intercept is that of a logistic regression with logit(p) as an offset. Both are what
    statsmodels' ``Logit`` / ``GLM(..., offset=...)`` compute. NaN labels are masked. Undefined (NaN, with
    ``note``): no labelled image, one class (no slope, no intercept), no event (no O/E interval), or a fit
    that does not converge (perfect separation).
    """
    ya, pa = _calib_inputs(y, p, name)
    n = int(ya.size)
    if n == 0:
        return CalibrationFit(_NAN3, _NAN3, _NAN3, 0, "no labelled image")
    z = NormalDist().inv_cdf(0.5 + ci / 2.0)
    observed, expected = float(ya.sum()), float(pa.sum())
    if observed > 0 and expected > 0:
        ratio = observed / expected
        half = z / math.sqrt(observed)
        o_e = (ratio, ratio * math.exp(-half), ratio * math.exp(half))
    else:
        o_e = (observed / expected if expected > 0 else math.nan, math.nan, math.nan)
    if observed in (0.0, float(n)):
        return CalibrationFit(o_e, _NAN3, _NAN3, n, "one class: slope and intercept undefined")
    clipped = np.clip(pa, EPS, 1.0 - EPS)
    lp = np.log(clipped / (1.0 - clipped))
    notes = []
    fit = _logistic(ya, lp, np.zeros(n)) if np.ptp(lp) > 0 else None
    if fit is None:
        slope = _NAN3
        notes.append("slope not estimable (constant scores or separation)")
    else:
        b, se = float(fit[0][1]), float(fit[1][1])
        slope = (b, b - z * se, b + z * se)
    fit0 = _logistic(ya, None, lp)
    if fit0 is None:
        intercept = _NAN3
        notes.append("intercept not estimable")
    else:
        a, se0 = float(fit0[0][0]), float(fit0[1][0])
        intercept = (a, a - z * se0, a + z * se0)
    return CalibrationFit(o_e, slope, intercept, n, "; ".join(notes))
