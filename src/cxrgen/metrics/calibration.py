"""Calibration: Brier score, reliability curves and the expected calibration error."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

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
