"""Shared array types and input checks of the statistics wing: NaN masking, one-class labels, normal quantiles."""

from __future__ import annotations

import math
import warnings
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


IntArray = NDArray[np.int64]


CIMethod = Literal["logit", "plain"]


class OneClassWarning(UserWarning):
    """A label has only positives or only negatives after masking NaN, so its AUC is undefined (NaN)."""


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
