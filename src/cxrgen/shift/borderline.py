"""Do errors concentrate near the borderline? Error rate against the true distance |CTR - 0.5| (synthetic truth).

The paper judged its misclassified Cardiomegaly images "borderline" by eye. Where the synthetic writer recorded
each image's true cardiothoracic ratio, the claim becomes testable: the error rate per distance band, and the
least-squares slope of the error indicator on the distance, with a patient-bootstrap interval (a negative slope:
errors fall away from the borderline). No truth exists for real data; there the analysis is not run. Errors
need a threshold: without one (NaN: the validation set lacked a class) no error is known, so nothing is fitted
and every row says "no threshold" (before issue 27, "p >= NaN" called every image negative and the positives
were fitted as errors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from cxrgen.metrics import patient_bootstrap_weights
from cxrgen.shift.operating_points import NO_THRESHOLD
from cxrgen.shift.ratios import bootstrap_ratios, percentile_interval

#: Upper edges of the |CTR - 0.5| bands.
BANDS: tuple[float, ...] = (0.025, 0.05, 0.1, math.inf)
BORDERLINE = 0.5


@dataclass(frozen=True)
class BorderlineTrend:
    """Error rates per band and the slope of error on distance.

    Attributes:
        bands: ``band, n_images, errors, error_rate, ci_low, ci_high`` per band.
        slope: Change of the error rate per unit of |CTR - 0.5| (weighted least squares), with its interval.
        p: Two-sided bootstrap p-value of slope = 0 (twice the share of resamples on the other side of 0).
        status: ``ok``, or ``no threshold`` (every number NaN); also a column of ``bands``, as is ``n_boot``
            (the resolution of ``p``: 0 means below 1 / n_boot, shown as such by
            :func:`cxrgen.report.pvalues.bootstrap_p_text`).
    """

    bands: pd.DataFrame
    slope: tuple[float, float, float]
    p: float
    status: str = "ok"


def threshold_errors(y: ArrayLike, p: ArrayLike, threshold: float) -> np.ndarray:
    """1.0 where ``p >= threshold`` disagrees with ``y``, 0.0 where it agrees, NaN where ``y`` is NaN; all NaN when
    the threshold is NaN (no error can be known without one)."""
    ya = np.asarray(y, dtype=np.float64)
    if math.isnan(threshold):
        return np.full(ya.shape, np.nan)
    wrong = (np.asarray(p, dtype=np.float64) >= threshold) != (ya == 1)
    return np.where(np.isnan(ya), np.nan, wrong.astype(np.float64))


def _weighted_slopes(x: np.ndarray, e: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Least-squares slopes of ``e`` on ``x`` for each weight row of ``w`` [B, N]."""
    sw = w.sum(axis=1)
    mx, me = (w @ x) / sw, (w @ e) / sw
    cov = (w @ (x * e)) / sw - mx * me
    var = (w @ (x * x)) / sw - mx * mx
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, cov / var, np.nan)


def borderline_trend(
    error: ArrayLike,
    ctr: ArrayLike,
    groups: ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    threshold: float | None = None,
) -> BorderlineTrend:
    """Error rate by |CTR - 0.5| band and its trend; images with NaN CTR (laterals) are left out.

    ``threshold``, when given, is the one behind ``error`` (:func:`threshold_errors`); NaN gives NaN bands, slope
    and p with status "no threshold" whatever ``error`` holds.
    """
    ea = np.asarray(error, dtype=np.float64)
    ca = np.asarray(ctr, dtype=np.float64)
    lower = (0.0, *BANDS[:-1])
    names = [f"{a:g}-{b:g}" if math.isfinite(b) else f">={a:g}" for a, b in zip(lower, BANDS, strict=True)]
    if threshold is not None and math.isnan(threshold):
        nan_bands = pd.DataFrame({
            "band": names, "n_images": 0, "errors": math.nan, "error_rate": math.nan, "ci_low": math.nan,
            "ci_high": math.nan, "status": NO_THRESHOLD, "n_boot": n_boot,
        })  # fmt: skip
        return BorderlineTrend(nan_bands, (math.nan, math.nan, math.nan), math.nan, NO_THRESHOLD)
    keep = ~np.isnan(ca) & ~np.isnan(ea)
    ea, distance, ga = ea[keep], np.abs(ca[keep] - BORDERLINE), np.asarray(groups)[keep]
    members = np.vstack([(distance >= lo) & (distance < hi) for lo, hi in zip(lower, BANDS, strict=True)])
    boot = bootstrap_ratios(members * ea, members, ga, n_boot=n_boot, seed=seed)
    lo, hi = boot.interval(ci) if n_boot else (np.full(len(BANDS), np.nan), np.full(len(BANDS), np.nan))
    bands = pd.DataFrame({
        "band": names, "n_images": members.sum(axis=1), "errors": (members * ea).sum(axis=1),
        "error_rate": boot.point, "ci_low": lo, "ci_high": hi, "status": "ok", "n_boot": n_boot,
    })  # fmt: skip
    point = float(_weighted_slopes(distance, ea, np.ones((1, distance.size)))[0]) if distance.size else math.nan
    if n_boot < 1 or distance.size == 0:
        return BorderlineTrend(bands, (point, math.nan, math.nan), math.nan)
    samples = np.concatenate(
        [_weighted_slopes(distance, ea, w) for w in patient_bootstrap_weights(ga, n_boot=n_boot, seed=seed)]
    )
    s_lo, s_hi = percentile_interval(samples[:, None], ci)
    valid = samples[~np.isnan(samples)]
    p = min(1.0, 2.0 * min(float((valid <= 0).mean()), float((valid >= 0).mean()))) if valid.size else math.nan
    return BorderlineTrend(bands, (point, float(s_lo[0]), float(s_hi[0])), p)
