"""Thresholds chosen at home, applied unchanged away: sensitivity, specificity, PPV and NPV with intervals.

A model ships with a threshold picked on its training hospital's validation set. AUC cannot tell whether
that threshold still delivers the promised sensitivity elsewhere; these numbers can. Predict positive when
``p >= threshold`` (scikit-learn's ``roc_curve`` convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_curve

from cxrgen.shift.ratios import bootstrap_ratios

Rule = Literal["youden", "sensitivity90"]
RULES: tuple[Rule, ...] = ("youden", "sensitivity90")
METRICS: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv")
#: Status of an analysis whose threshold could not be chosen (a validation set without one class).
NO_THRESHOLD = "no threshold"


def _labelled(y: ArrayLike, p: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    ya = np.asarray(y, dtype=np.float64)
    pa = np.asarray(p, dtype=np.float64)
    keep = ~np.isnan(ya)
    return ya[keep], pa[keep]


def choose_threshold(y: ArrayLike, p: ArrayLike, rule: Rule, *, target: float = 0.9) -> float:
    """The threshold of ``rule`` on validation data (predict positive when ``p >= threshold``).

    ``youden``: maximizes Youden's J = sensitivity + specificity - 1 = TP/P - FP/N, compared in integer counts as
    ``TP * N - FP * P`` (scikit-learn's ``roc_curve`` gives the counts at every distinct score): equal J values stay
    equal, where ``tpr - fpr`` in floating point can differ in the last bit (1/3 - 0 vs 1 - 4/6) and pick a
    threshold at random among equals. Ties are broken by the rule "the highest threshold", i.e. the fewest
    positive calls (the most specific of the equally good thresholds). ``sensitivity90``: the highest threshold
    whose sensitivity reaches ``target`` (0.9), i.e. the most specific one that keeps the promise.

    Returns:
        The threshold; ``inf`` (nothing is called positive) when no finite threshold is useful, i.e. when J is
        at most 0 everywhere. NaN when it cannot be chosen: no labelled image, or one class missing (the
        analyses that use it then report status "no threshold").
    """
    ya, pa = _labelled(y, p)
    if ya.size == 0 or ya.min() == ya.max():
        return math.nan
    fpr, tpr, thr = roc_curve(ya, pa, drop_intermediate=False)  # thr[0] = inf: nothing positive
    n_pos, n_neg = int((ya == 1).sum()), int((ya == 0).sum())
    if rule == "youden":
        tp, fp = np.rint(tpr * n_pos).astype(np.int64), np.rint(fpr * n_neg).astype(np.int64)
        j = int(np.argmax(tp * n_neg - fp * n_pos))  # thresholds decrease: argmax = the first = the highest
    elif rule == "sensitivity90":
        j = int(np.flatnonzero(tpr >= target)[0])
    else:
        raise ValueError(f"unknown threshold rule {rule!r}; use one of {RULES}")
    return float(thr[j])


@dataclass(frozen=True)
class OperatingPoint:
    """Rates at one threshold; each metric with its patient-clustered interval.

    Attributes:
        threshold: The threshold applied.
        values: ``sensitivity, specificity, ppv, npv`` -> (value, ci_low, ci_high); NaN where undefined
            (no positive, no negative, no predicted positive or negative).
        tp, fp, tn, fn: Image counts of the confusion matrix; None without a threshold (no matrix exists).
    """

    threshold: float
    values: dict[str, tuple[float, float, float]]
    tp: int | None
    fp: int | None
    tn: int | None
    fn: int | None

    @property
    def status(self) -> str:
        """``ok``, or :data:`NO_THRESHOLD` when the threshold could not be chosen (NaN): every value is NaN."""
        return NO_THRESHOLD if math.isnan(self.threshold) else "ok"


def operating_point(
    y: ArrayLike,
    p: ArrayLike,
    groups: ArrayLike,
    threshold: float,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> OperatingPoint:
    """Sensitivity, specificity, PPV and NPV of ``p >= threshold`` with patient-bootstrap intervals.

    Args:
        y: Truth [N] in {0, 1, NaN}; NaN images are left out.
        p: Probabilities [N].
        groups: Patient id per image [N].
        threshold: Applied unchanged (NaN gives NaN everywhere).
        n_boot: Resamples (0: no intervals, bounds NaN).
        seed: Bootstrap seed (the same resamples as the AUC intervals).
        ci: Confidence level.
    """
    ya = np.asarray(y, dtype=np.float64)
    keep = ~np.isnan(ya)
    ya = ya[keep]
    pa = np.asarray(p, dtype=np.float64)[keep]
    ga = np.asarray(groups)[keep]
    pos, pred = ya == 1, pa >= threshold
    tp, fp = pos & pred, ~pos & pred
    tn, fn = ~pos & ~pred, pos & ~pred
    counts: dict[str, int | None] = {
        name: int(mask.sum()) for name, mask in (("tp", tp), ("fp", fp), ("tn", tn), ("fn", fn))
    }
    if math.isnan(threshold):  # NaN, not the counts of "p >= NaN" (nothing positive)
        nan3 = (math.nan, math.nan, math.nan)
        return OperatingPoint(threshold, dict.fromkeys(METRICS, nan3), **dict.fromkeys(counts))
    numerators = np.vstack([tp, tn, tp, tn])
    denominators = np.vstack([pos, ~pos, pred, ~pred])
    boot = bootstrap_ratios(numerators, denominators, ga, n_boot=n_boot, seed=seed)
    lo, hi = boot.interval(ci) if n_boot else (np.full(4, np.nan), np.full(4, np.nan))
    values = {m: (float(boot.point[k]), float(lo[k]), float(hi[k])) for k, m in enumerate(METRICS)}
    return OperatingPoint(threshold, values, **counts)
