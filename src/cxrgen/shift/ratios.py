"""Patient-clustered intervals of ratios of counts (sensitivity, PPV, a false-positive rate...).

A rate ``sum(num) / sum(den)`` over images becomes, in a bootstrap resample, ``c @ num_p / c @ den_p`` with ``c``
the patient multiplicities of :func:`cxrgen.metrics.patient_resample` and ``num_p``, ``den_p`` the per-patient
sums (the same numbers as dense per-image weights ``w @ num``, exactly when the contributions are integers, at a
fraction of the cost); all rates of a call share the same resamples, so differences of two rates (device vs
none, internal vs external on one set) are paired.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cxrgen.metrics import PatientResample, patient_resample

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class RatioBootstrap:
    """Point values [K] and bootstrap samples [B, K] of K ratios; NaN where a denominator is 0."""

    point: FloatArray
    samples: FloatArray

    def interval(self, ci: float) -> tuple[FloatArray, FloatArray]:
        """Percentile interval per ratio over the resamples where it is defined (NaN when none is)."""
        return percentile_interval(self.samples, ci)


def percentile_interval(samples: FloatArray, ci: float) -> tuple[FloatArray, FloatArray]:
    """Lower and upper percentile bounds per column of ``samples`` [B, K], NaN resamples left out."""
    alpha = 1.0 - ci
    lo = np.full(samples.shape[1], np.nan)
    hi = np.full(samples.shape[1], np.nan)
    for k in range(samples.shape[1]):
        column = samples[:, k]
        column = column[~np.isnan(column)]
        if column.size:
            lo[k], hi[k] = np.quantile(column, [alpha / 2.0, 1.0 - alpha / 2.0])
    return lo, hi


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    return np.where(den > 0, out, np.nan)


def _exact_float(resample: PatientResample, sums_p: FloatArray) -> type[np.floating[Any]]:
    """float32 where every partial sum of a resample's products with ``sums_p`` [P, K] (whole numbers) stays below
    2**24 in size, so that single precision holds each exactly (the same numbers as float64 at half the traffic);
    float64 otherwise."""
    largest = float(resample.counts.max(initial=0)) * float(np.abs(sums_p).sum(axis=0).max(initial=0.0))
    return np.float32 if largest < 2.0**24 else np.float64


def bootstrap_ratios(
    numerators: ArrayLike, denominators: ArrayLike, groups: ArrayLike, *, n_boot: int, seed: int
) -> RatioBootstrap:
    """Ratios ``numerators[k] @ 1 / denominators[k] @ 1`` [K] with patient-bootstrap samples [n_boot, K].

    Args:
        numerators: Per-image contributions [K, N] (e.g. 1 for a true positive).
        denominators: Per-image contributions [K, N] (e.g. 1 for a positive).
        groups: Patient id per image [N].
        n_boot: Resamples; 0 gives an empty [0, K] sample (point values only).
        seed: Seed shared with :func:`cxrgen.metrics.clustered_bootstrap_auc`.
    """
    num = np.atleast_2d(np.asarray(numerators, dtype=np.float64))
    den = np.atleast_2d(np.asarray(denominators, dtype=np.float64))
    if num.shape != den.shape or num.shape[1] != np.shape(groups)[0]:
        raise ValueError(f"numerators {num.shape}, denominators {den.shape} and groups {np.shape(groups)} disagree")
    point = _ratio(num.sum(axis=1), den.sum(axis=1))
    if n_boot == 0 or num.shape[1] == 0:
        return RatioBootstrap(point, np.empty((0, num.shape[0])))
    resample = patient_resample(groups, n_boot=n_boot, seed=seed)
    if np.array_equal(num, np.round(num)) and np.array_equal(den, np.round(den)):
        # Integer contributions (counts of images): per-patient sums give the dense weights' sums exactly.
        k = num.shape[0]
        sums_p = np.hstack([resample.per_patient(num).T, resample.per_patient(den).T])  # [P, 2K]
        dtype = _exact_float(resample, sums_p)
        sums_p = sums_p.astype(dtype)
        chunks = []
        for c in resample.chunks(dtype):
            sums = (c @ sums_p).astype(np.float64)  # [b, 2K] whole numbers, exact in either precision
            chunks.append(_ratio(sums[:, :k], sums[:, k:]))
    else:  # fractional contributions: keep the image-weight products, whose rounding the tests pin
        chunks = [_ratio(w @ num.T, w @ den.T) for w in resample.image_weights()]
    return RatioBootstrap(point, np.vstack(chunks))
