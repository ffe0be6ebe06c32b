"""Calibration under shift: temperature scaling fitted at home, and EM prior-shift correction away.

Both maps are strictly increasing in ``p``, so they leave every AUC unchanged; what they change is judged by
Brier score and ECE (DESIGN.md section 9).

* Temperature scaling (Guo et al. 2017): ``p' = sigmoid(logit(p) / T)`` with ``T`` minimizing the validation
  log-loss (``scipy.optimize.minimize_scalar`` on ``log T``).
* Prior shift (Saerens, Latinne & Decaestecker 2002, "Adjusting the outputs of a classifier to new a priori
  probabilities: a simple procedure", Neural Computation 14(1)): EM that estimates the test set's prevalence
  from the predictions alone and reweights the posteriors by the ratio of new to training priors. No
  maintained library implements it for binary outputs; it is a dozen lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit

FloatArray = NDArray[np.float64]
_EPS = 1e-12


def _logits(p: ArrayLike) -> FloatArray:
    return np.asarray(logit(np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)), dtype=np.float64)


def fit_temperature(y: ArrayLike, p: ArrayLike) -> float:
    """Temperature ``T > 0`` minimizing the log-loss of ``sigmoid(logit(p) / T)`` on labelled images.

    ``T > 1`` softens overconfident probabilities. NaN labels are left out; NaN when no image is labelled
    or a class is missing (nothing to calibrate against).
    """
    ya = np.asarray(y, dtype=np.float64)
    keep = ~np.isnan(ya)
    ya, z = ya[keep], _logits(np.asarray(p, dtype=np.float64)[keep])
    if ya.size == 0 or ya.min() == ya.max():
        return math.nan

    def loss(log_t: float) -> float:
        q = np.clip(expit(z / math.exp(log_t)), _EPS, 1.0 - _EPS)
        return float(-np.mean(ya * np.log(q) + (1.0 - ya) * np.log1p(-q)))

    result = minimize_scalar(loss, bounds=(math.log(0.01), math.log(100.0)), method="bounded",
                             options={"xatol": 1e-8})  # fmt: skip
    return float(math.exp(result.x))


def apply_temperature(p: ArrayLike, temperature: float) -> FloatArray:
    """``sigmoid(logit(p) / T)``; strictly increasing in ``p`` for any finite ``T > 0``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return np.asarray(expit(_logits(p) / temperature), dtype=np.float64)


@dataclass(frozen=True)
class PriorShift:
    """Result of the EM prior-shift adjustment on one test set and label.

    Attributes:
        prevalence: Estimated test prevalence, in (0, 1).
        adjusted: Corrected probabilities [N].
        iterations: EM steps run.
        converged: Whether the prevalence moved less than ``tol`` in the last step.
    """

    prevalence: float
    adjusted: FloatArray
    iterations: int
    converged: bool


def em_prior_shift(p: ArrayLike, train_prevalence: float, *, tol: float = 1e-8, max_iter: int = 1000) -> PriorShift:
    """Estimate a test set's prevalence from its probabilities alone and correct them (Saerens et al. 2002).

    Iterates ``p_i' = r p_i / (r p_i + s (1 - p_i))`` with ``r = pi' / pi``, ``s = (1 - pi') / (1 - pi)``
    and ``pi' = mean(p')``, starting at ``pi' = pi`` (the training prevalence the model's outputs reflect).

    Args:
        p: Probabilities [N] of the model on the unlabelled test images, in [0, 1].
        train_prevalence: Prevalence of the set the probabilities are calibrated to (e.g. validation), in (0, 1).
        tol: Stop when the prevalence moves less than this.
        max_iter: At most this many steps.
    """
    pa = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    if not 0.0 < train_prevalence < 1.0:
        raise ValueError(f"train_prevalence must be in (0, 1), got {train_prevalence}")
    if pa.size == 0:
        return PriorShift(math.nan, pa, 0, False)
    prior = train_prevalence
    adjusted = pa
    for step in range(1, max_iter + 1):
        ratio_pos = prior / train_prevalence
        ratio_neg = (1.0 - prior) / (1.0 - train_prevalence)
        adjusted = ratio_pos * pa / (ratio_pos * pa + ratio_neg * (1.0 - pa))
        new_prior = float(np.clip(adjusted.mean(), _EPS, 1.0 - _EPS))
        if abs(new_prior - prior) < tol:
            return PriorShift(new_prior, adjusted, step, True)
        prior = new_prior
    return PriorShift(prior, adjusted, max_iter, False)
