"""Before the labels: a model's AUC, sensitivity, specificity, PPV and NPV at a hospital without labels (issue 24).

Every estimate uses two inputs only: the model's predictions with labels on its *home* validation set, and its
predictions on the *target* images. Target labels are never an argument, so they cannot be read. Intervals are
patient-clustered percentile bootstraps over the target images (:func:`cxrgen.metrics.patient_bootstrap_weights`,
the resamples of the AUC intervals); the home fit (calibration, thresholds, ATC cut-offs) stays fixed.

Methods (the registry :data:`METHODS`; what each estimates is in :data:`PROVIDES`):

* ``cbpe`` -- confidence-based performance estimation (NannyML's CBPE): calibrate at home (temperature scaling,
  :func:`~cxrgen.shift.calibration_shift.fit_temperature`, or isotonic regression), then treat each calibrated
  target probability ``q_i`` as the chance that image ``i`` is positive. The expected confusion matrix at every
  threshold gives the expected ROC curve; its area is computed exactly as expected concordant positive-negative
  pairs over expected positive-negative pairs (self-pairs removed, ties count a half). Prevalence = mean ``q``.
* ``atc`` -- average thresholded confidence (Garg et al. 2022, ICLR): the cut-off ``tau`` on a confidence score is
  chosen so that the share of home images above it equals the home accuracy; the target estimate is the share of
  target images above ``tau``. Confidence = calibrated probability of the predicted class at the home Youden
  threshold (accuracy), ``max(q, 1 - q)`` for AUC (applied to the home AUC as Flühmann et al. 2025 do).
* ``doc`` -- difference of confidences (Guillory et al. 2021, ICCV): home value minus (mean home confidence minus
  mean target confidence), same confidences as ``atc``.
* ``cm_atc`` / ``cm_doc`` -- their confusion-matrix versions (Flühmann et al. 2025, mlm-lab-research/clin_perf_est):
  at a threshold, ATC (or DoC) is applied separately to the predicted positives (home PPV) and the predicted
  negatives (home NPV), which gives target TP, FP, TN, FN, hence sensitivity, specificity, PPV, NPV and prevalence.
  As in the paper, AUC is the trapezoid area of the ROC made of such matrices on a grid of thresholds (the
  quantiles of the pooled home and target scores). Where a cell of the matrix stays empty at every threshold (e.g.
  no target score reaches the home cut-off of the predicted positives: no expected true positive anywhere) the
  curve runs along an edge of the unit square and its area, 0 or 1, comes from the corners added to it: NaN with
  :data:`NO_CURVE` instead (the acquisition world's Consolidation gave CM-ATC an AUC of exactly 0 before).
* ``em_prevalence`` -- Saerens et al. (2002) EM on the calibrated target probabilities
  (:func:`~cxrgen.shift.calibration_shift.em_prior_shift`): the target prevalence, and the prior-corrected
  probabilities' expected confusion matrix, hence AUC, sensitivity and specificity, and
  ``PPV = sens pi / (sens pi + (1 - spec)(1 - pi))`` (NPV alike) with ``pi`` the EM prevalence.
* ``agreement`` -- agreement on the line (Baek et al. 2022, NeurIPS, ALine-S): with several models of one
  configuration (seeds, architectures), the agreement rate of every pair at home and on the target is fitted as a
  line in probit space, ``probit(agr_target) = a probit(agr_home) + b``; each model's target accuracy is
  ``Phi(a probit(acc_home) + b)``. It estimates accuracy at the Youden threshold only (the paper's metric).

The trust flag (:func:`trust_signals`) needs no labels either; it is raised for a model, target and label when
any of its signals passes its limit (each signal is a column of ``estimates.csv``, so the limits can be tuned):

* ``spread`` > :data:`MAX_SPREAD`: the AUC estimates of :data:`SPREAD_METHODS` disagree by more than twice the
  tolerance of 0.05, so at least one of them misses the truth by more than 0.05, whatever the truth. ``atc`` and
  ``cm_atc`` are left out: on weak models their AUC collapses to 0 or 1 (a share above a cut-off), so they
  disagreed with the others on every fold of a six-hospital run and the flag said nothing;
* ``prevalence_odds`` > :data:`MAX_PREVALENCE_ODDS`: the mean calibrated probability on the target (CBPE's
  prevalence) differs from the same mean at home by that odds ratio. EM's prevalence is not used here: on weak
  models it runs to 0 or 1, at home as on the target. The mean moves less than the prevalence it follows (by
  the model's discrimination), hence a limit below EM's former 2;
* ``outside`` > :data:`MAX_OUTSIDE`: that share of the target scores falls outside the home scores' 1st-99th
  percentile range;
* ``score_shift`` > :data:`MAX_SCORE_SHIFT`: the two-sample Kolmogorov-Smirnov statistic ``D`` between the home
  validation scores and the target scores of the label (black-box shift detection on the model's outputs, Rabanser
  et al. 2019, "Failing Loudly"). Its effect size is used, not its p-value, which rejects on any large set. It is
  the signal that rises when a learned shortcut reverses: the device then sits on negatives, whose scores climb
  while the positives' fall, so the score distribution changes shape while its mean (``prevalence_odds``) and
  range (``outside``) barely move (the reversed-shortcut test: D = 0.39 with every other signal below its limit).
  On the six-hospital studies of docs/howto/before-the-labels.md every row with D above the limit and an error
  within 0.05 was flagged by the other signals already: it added hits, no false alarms;
* ``embedding_auc`` > :data:`MAX_EMBEDDING_AUC`: a domain classifier tells the target's images from the home
  validation images (:func:`cxrgen.shift.embedding_distance.domain_auc`); NaN where no embeddings exist.

Every estimate of that model, target and label carries the flag. One more signal is reported, not flagged:
``expected_se``, the Hanley-McNeil standard error of CBPE's AUC with CBPE's expected numbers of positive and
negative images: how far even the labelled AUC of a target this small scatters. Above 0.074 (0.05 over the normal
quartile 0.674) a perfect estimate more often than not misses the labelled AUC by more than 0.05; that is the
target's size, not the estimator's failure (raising the flag on it too tripled the false alarms on the
six-hospital runs, docs/howto/before-the-labels.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from scipy.special import logit
from scipy.stats import ks_2samp, norm
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score

from cxrgen.metrics import patient_bootstrap_weights
from cxrgen.shift.calibration_shift import apply_temperature, em_prior_shift, fit_temperature
from cxrgen.shift.operating_points import RULES, choose_threshold
from cxrgen.shift.ratios import percentile_interval

FloatArray = NDArray[np.float64]
Calibration = Literal["temperature", "isotonic"]
#: (metric, rule): ``rule`` names the home threshold for thresholded metrics, "" for AUC and prevalence.
Key = tuple[str, str]

#: The trust flag's limits (module docstring); the tolerance of an AUC estimate is 0.05.
MAX_SPREAD = 0.10
MAX_PREVALENCE_ODDS = 1.5
MAX_OUTSIDE = 0.10
MAX_SCORE_SHIFT = 0.30
MAX_EMBEDDING_AUC = 0.8
#: ``expected_se`` above which a target is too small to check an AUC estimate within 0.05 (reported, not flagged).
SMALL_TARGET_SE = 0.074
#: Methods whose AUC estimates the ``spread`` signal compares.
SPREAD_METHODS: tuple[str, ...] = ("cbpe", "doc", "cm_doc", "em_prevalence")
#: Thresholds of the confusion-matrix ROC (``cm_atc``, ``cm_doc``).
GRID = 101
_EPS = 1e-6


@dataclass(frozen=True)
class Home:
    """What is fitted on the home validation set of one model and label (labelled images only).

    Attributes:
        y: Labels [M] in {0, 1}.
        p: Raw scores [M].
        q: Calibrated probabilities [M].
        calibrate: Maps raw scores to calibrated probabilities (non-decreasing).
        prevalence: Home prevalence, in (0, 1).
        auc: Home AUC.
        thresholds: Rule (``youden``, ``sensitivity90``) -> raw threshold (predict positive when ``p >= t``).
        score_range: 1st and 99th percentile of the raw home scores.
    """

    y: FloatArray
    p: FloatArray
    q: FloatArray
    calibrate: Callable[[FloatArray], FloatArray]
    prevalence: float
    auc: float
    thresholds: dict[str, float]
    score_range: tuple[float, float]


def fit_home(y: ArrayLike, p: ArrayLike, calibrate: Calibration = "temperature") -> Home | None:
    """Fit the home side of every method on validation predictions; None when a class is missing (nothing to fit).

    Args:
        y: Home validation labels [M] in {0, 1, NaN} (NaN left out).
        p: Home validation scores [M] in [0, 1].
        calibrate: ``temperature`` (one parameter, keeps the ranking strictly) or ``isotonic`` (scikit-learn,
            out-of-range scores clipped).
    """
    ya, pa = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    keep = ~np.isnan(ya)
    ya, pa = ya[keep], pa[keep]
    if ya.size == 0 or ya.min() == ya.max():
        return None
    fn: Callable[[FloatArray], FloatArray]
    if calibrate == "temperature":
        temperature = fit_temperature(ya, pa)

        def fn(scores: FloatArray) -> FloatArray:
            return apply_temperature(scores, temperature)
    elif calibrate == "isotonic":
        iso = IsotonicRegression(y_min=_EPS, y_max=1 - _EPS, out_of_bounds="clip").fit(pa, ya)

        def fn(scores: FloatArray) -> FloatArray:
            return np.asarray(iso.predict(scores), dtype=np.float64)
    else:
        raise ValueError(f"unknown calibration {calibrate!r}; use 'temperature' or 'isotonic'")
    thresholds: dict[str, float] = {rule: choose_threshold(ya, pa, rule) for rule in RULES}
    low, high = np.quantile(pa, [0.01, 0.99])
    q = fn(pa)
    return Home(ya, pa, q, fn, float(ya.mean()), float(roc_auc_score(ya, pa)), thresholds,
                (float(low), float(high)))  # fmt: skip


# ---------------------------------------------------------------- helpers on weights w [B, N]


def _mean(w: FloatArray, x: FloatArray) -> FloatArray:
    """Weighted mean of ``x`` [N] (or [B, N]) per resample [B]; NaN with no weight."""
    total = w.sum(axis=1)
    s = (w * x).sum(axis=1) if x.ndim == 2 else w @ x
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, s / total, np.nan)


def _div(a: FloatArray, b: FloatArray) -> FloatArray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def _rates(tp: FloatArray, fp: FloatArray, tn: FloatArray, fn: FloatArray) -> dict[str, FloatArray]:
    """Sensitivity, specificity, PPV, NPV, accuracy and prevalence from (expected) confusion counts [B]."""
    n = tp + fp + tn + fn
    return {
        "sensitivity": _div(tp, tp + fn),
        "specificity": _div(tn, tn + fp),
        "ppv": _div(tp, tp + fp),
        "npv": _div(tn, tn + fn),
        "accuracy": _div(tp + tn, n),
        "prevalence": _div(tp + fn, n),
    }


def expected_auc(order: ArrayLike, q: ArrayLike, w: ArrayLike | None = None) -> FloatArray:
    """Expected AUC of the ranking ``order`` when image ``i`` is positive with probability ``q_i`` (independently).

    ``sum_{i != j} q_i (1 - q_j) [s_i > s_j] (+ 1/2 on ties) / sum_{i != j} q_i (1 - q_j)``, with image weights
    ``w`` [B, N] (bootstrap multiplicities; a copy of an image is never paired with itself). ``q`` may be [N] or
    [B, N]. Returns [B] (B = 1 without weights).
    """
    s = np.asarray(order, dtype=np.float64)
    qa = np.asarray(q, dtype=np.float64)
    wa = np.ones((1, s.size)) if w is None else np.asarray(w, dtype=np.float64)
    _, codes = np.unique(s, return_inverse=True)
    codes = codes.ravel()
    groups = int(codes.max()) + 1 if codes.size else 0
    member = sp.csr_matrix((np.ones(s.size), (np.arange(s.size), codes)), shape=(s.size, groups))
    pos = np.asarray((wa * qa) @ member)  # [B, G] expected positives per distinct score
    neg = np.asarray((wa * (1.0 - qa)) @ member)
    self_pairs = np.asarray((wa**2 * qa * (1.0 - qa)) @ member)
    below = np.cumsum(neg, axis=1) - neg
    numerator = (pos * below).sum(axis=1) + 0.5 * (pos * neg - self_pairs).sum(axis=1)
    denominator = pos.sum(axis=1) * neg.sum(axis=1) - self_pairs.sum(axis=1)
    return _div(numerator, denominator)


def _expected_matrix(q: FloatArray, predicted: FloatArray, w: FloatArray) -> dict[str, FloatArray]:
    """Rates of the expected confusion matrix of ``predicted`` [N] when image i is positive with chance q_i."""

    def total(x: FloatArray) -> FloatArray:
        return (w * x).sum(axis=1) if x.ndim == 2 else w @ x

    return _rates(total(q * predicted), total((1 - q) * predicted), total((1 - q) * (1 - predicted)),
                  total(q * (1 - predicted)))  # fmt: skip


def _thresholded(rates: dict[str, FloatArray], rule: str) -> dict[Key, FloatArray]:
    out = {(m, rule): rates[m] for m in ("sensitivity", "specificity", "ppv", "npv")}
    if rule == "youden":
        out[("accuracy", rule)] = rates["accuracy"]
    return out


# ---------------------------------------------------------------- the methods: (home, target scores, w) -> {key: [B]}


def _cbpe(home: Home, p: FloatArray, w: FloatArray) -> dict[Key, FloatArray]:
    q = home.calibrate(p)
    out: dict[Key, FloatArray] = {("auc", ""): expected_auc(p, q, w), ("prevalence", ""): _mean(w, q)}
    for rule, t in home.thresholds.items():
        if not math.isnan(t):
            out |= _thresholded(_expected_matrix(q, (p >= t).astype(np.float64), w), rule)
    return out


def _confidence(q: FloatArray, predicted: FloatArray) -> FloatArray:
    """Calibrated probability of the predicted class."""
    return np.where(predicted > 0, q, 1.0 - q)


def _atc_cut(confidence: FloatArray, value: float) -> float:
    """``tau`` with the share of ``confidence >= tau`` equal to ``value`` (ATC's fit at home)."""
    return float(np.quantile(confidence, float(np.clip(1.0 - value, 0.0, 1.0))))


def _home_accuracy(home: Home) -> tuple[FloatArray, float] | None:
    t = home.thresholds["youden"]
    if math.isnan(t):
        return None
    predicted = (home.p >= t).astype(np.float64)
    return _confidence(home.q, predicted), float(np.mean(predicted == home.y))


def _atc(home: Home, p: FloatArray, w: FloatArray) -> dict[Key, FloatArray]:
    q = home.calibrate(p)
    home_conf = np.maximum(home.q, 1 - home.q)
    out = {("auc", ""): _mean(w, (np.maximum(q, 1 - q) >= _atc_cut(home_conf, home.auc)).astype(np.float64))}
    fitted = _home_accuracy(home)
    if fitted is not None:
        conf, acc = fitted
        target = _confidence(q, (p >= home.thresholds["youden"]).astype(np.float64))
        out[("accuracy", "youden")] = _mean(w, (target >= _atc_cut(conf, acc)).astype(np.float64))
    return out


def _doc(home: Home, p: FloatArray, w: FloatArray) -> dict[Key, FloatArray]:
    q = home.calibrate(p)
    home_conf = np.maximum(home.q, 1 - home.q)
    out = {("auc", ""): home.auc - (home_conf.mean() - _mean(w, np.maximum(q, 1 - q)))}
    fitted = _home_accuracy(home)
    if fitted is not None:
        conf, acc = fitted
        target = _confidence(q, (p >= home.thresholds["youden"]).astype(np.float64))
        out[("accuracy", "youden")] = acc - (conf.mean() - _mean(w, target))
    return out


def _cm_counts(home: Home, p: FloatArray, q: FloatArray, w: FloatArray, t: float, kind: str) -> dict[str, FloatArray]:
    """Target TP, FP, TN, FN [B] at raw threshold ``t`` by ATC or DoC per predicted class (CM-ATC, CM-DoC)."""
    home_pos, target_pos = home.p >= t, (p >= t).astype(np.float64)
    target_neg = 1.0 - target_pos
    n_pos, n_neg = w @ target_pos, w @ target_neg
    ppv = float(home.y[home_pos].mean()) if home_pos.any() else math.nan
    npv = float(1 - home.y[~home_pos].mean()) if (~home_pos).any() else math.nan
    if kind == "atc":
        # predicted positives: share with q >= t1 equals the home PPV; predicted negatives: share below t0 = NPV
        t1 = float(np.quantile(home.q[home_pos], 1 - ppv)) if home_pos.any() else math.inf
        t0 = float(np.quantile(home.q[~home_pos], npv)) if (~home_pos).any() else -math.inf
        tp = w @ (target_pos * (q >= t1))
        tn = w @ (target_neg * (q < t0))
    else:
        mean_pos = float(home.q[home_pos].mean()) if home_pos.any() else math.nan
        mean_neg = float((1 - home.q[~home_pos]).mean()) if (~home_pos).any() else math.nan
        ppv_t = np.clip(ppv + _div(w @ (target_pos * q), n_pos) - mean_pos, 0, 1)
        npv_t = np.clip(npv + _div(w @ (target_neg * (1 - q)), n_neg) - mean_neg, 0, 1)
        tp = np.nan_to_num(ppv_t) * n_pos
        tn = np.nan_to_num(npv_t) * n_neg
    return {"tp": tp, "fp": n_pos - tp, "tn": tn, "fn": n_neg - tn}


def _curve_area(tpr: FloatArray, fpr: FloatArray, proper: NDArray[np.bool_]) -> FloatArray:
    """Trapezoid area per column of the ROC points [points, B], undefined points left out; NaN where not
    ``proper``: a cell of the confusion matrix stayed empty at every threshold, so the curve runs along an edge of
    the unit square and its area (0 or 1) is set by the corners (0, 0) and (1, 1) added to it, not by the target."""
    area = np.full(tpr.shape[1], np.nan)
    for j in np.flatnonzero(proper):
        ok = ~(np.isnan(tpr[:, j]) | np.isnan(fpr[:, j]))
        area[j] = np.trapezoid(tpr[ok, j], fpr[ok, j])
    return area


#: Why a ``cm_atc`` / ``cm_doc`` AUC is NaN (:attr:`Estimate.note`).
NO_CURVE = "no ROC curve: a cell of the estimated confusion matrix (TP, FP, TN or FN) is empty at every threshold"


def _cm(kind: str) -> Callable[[Home, FloatArray, FloatArray], dict[Key, FloatArray]]:
    def method(home: Home, p: FloatArray, w: FloatArray) -> dict[Key, FloatArray]:
        q = home.calibrate(p)
        out: dict[Key, FloatArray] = {}
        for rule, t in home.thresholds.items():
            if not math.isnan(t):
                counts = _cm_counts(home, p, q, w, t, kind)
                rates = _rates(counts["tp"], counts["fp"], counts["tn"], counts["fn"])
                out |= _thresholded(rates, rule)
                if rule == "youden":
                    out[("prevalence", "")] = rates["prevalence"]
        grid = np.unique(np.quantile(np.concatenate([home.p, p]), np.linspace(0, 1, GRID)))[::-1]
        b = w.shape[0]
        tpr, fpr = [np.zeros(b)], [np.zeros(b)]
        seen = {cell: np.zeros(b, dtype=bool) for cell in ("tp", "fp", "tn", "fn")}
        for t in grid:  # thresholds decreasing: the curve from (0, 0) towards (1, 1)
            c = _cm_counts(home, p, q, w, float(t), kind)
            tpr.append(_div(c["tp"], c["tp"] + c["fn"]))  # NaN where the matrix holds no expected positive
            fpr.append(_div(c["fp"], c["fp"] + c["tn"]))
            seen = {cell: seen[cell] | (c[cell] > 0) for cell in seen}
        tpr.append(np.ones(b))
        fpr.append(np.ones(b))
        out[("auc", "")] = _curve_area(np.vstack(tpr), np.vstack(fpr), np.all(list(seen.values()), axis=0))
        return out

    return method


def _em(home: Home, p: FloatArray, w: FloatArray, *, tol: float = 1e-8, max_iter: int = 1000) -> dict[Key, FloatArray]:
    """Saerens EM per resample; the point estimate (one unit weight row) is :func:`em_prior_shift`'s."""
    q = np.clip(home.calibrate(p), 1e-12, 1 - 1e-12)
    pi0 = home.prevalence
    if w.shape[0] == 1 and np.all(w == 1):
        shifted = em_prior_shift(q, pi0, tol=tol, max_iter=max_iter)
        prior, adjusted = np.array([shifted.prevalence]), shifted.adjusted[None, :]
    else:
        prior = np.full(w.shape[0], pi0)
        for _ in range(max_iter):
            r, s = (prior / pi0)[:, None], ((1 - prior) / (1 - pi0))[:, None]
            adjusted = r * q / (r * q + s * (1 - q))
            new = np.clip(_mean(w, adjusted), 1e-12, 1 - 1e-12)
            done = np.nanmax(np.abs(new - prior)) < tol
            prior = new
            if done:
                break
        r, s = (prior / pi0)[:, None], ((1 - prior) / (1 - pi0))[:, None]
        adjusted = r * q / (r * q + s * (1 - q))
    out: dict[Key, FloatArray] = {("prevalence", ""): prior, ("auc", ""): expected_auc(p, adjusted, w)}
    for rule, t in home.thresholds.items():
        if math.isnan(t):
            continue
        rates = _expected_matrix(adjusted, (p >= t).astype(np.float64), w)
        sens, spec = rates["sensitivity"], rates["specificity"]
        rates["ppv"] = _div(sens * prior, sens * prior + (1 - spec) * (1 - prior))
        rates["npv"] = _div(spec * (1 - prior), spec * (1 - prior) + (1 - sens) * prior)
        out |= _thresholded(rates, rule)
    return out


Method = Callable[[Home, FloatArray, FloatArray], dict[Key, FloatArray]]
#: Per-model methods (``agreement`` needs several models: :func:`agreement_on_the_line`).
METHODS: dict[str, Method] = {"cbpe": _cbpe, "atc": _atc, "doc": _doc, "cm_atc": _cm("atc"), "cm_doc": _cm("doc"),
                              "em_prevalence": _em}  # fmt: skip
ALL_METHODS: tuple[str, ...] = (*METHODS, "agreement")


def look_up_method(name: str) -> str:
    """``name`` if it is a method, else a ValueError that lists them."""
    if name not in ALL_METHODS:
        raise ValueError(f"unknown estimate method {name!r}; use one of {ALL_METHODS}")
    return name


# ---------------------------------------------------------------- estimates with intervals


@dataclass(frozen=True)
class Estimate:
    """One label-free estimate with its patient-bootstrap interval (NaN bounds when ``n_boot`` is 0) and, where
    it is NaN for a reason of the method's own, ``note``."""

    method: str
    metric: str
    rule: str
    estimate: float
    ci_low: float
    ci_high: float
    note: str = ""


def _boot(fn: Callable[[FloatArray], dict[Key, FloatArray]], n: int, groups: ArrayLike, n_boot: int,
          seed: int, ci: float) -> Iterator[tuple[Key, float, float, float]]:  # fmt: skip
    point = fn(np.ones((1, n)))
    if n_boot:
        chunks = [fn(w) for w in patient_bootstrap_weights(groups, n_boot=n_boot, seed=seed)]
    for key, value in point.items():
        low = high = math.nan
        if n_boot:
            samples = np.concatenate([c[key] for c in chunks])[:, None]
            lo, hi = percentile_interval(samples, ci)
            low, high = float(lo[0]), float(hi[0])
        yield key, float(value[0]), low, high


def estimate_label(
    home: Home,
    p: ArrayLike,
    groups: ArrayLike,
    methods: Sequence[str] = tuple(METHODS),
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> list[Estimate]:
    """Every per-model method's estimates for one label on the target images.

    Args:
        home: :func:`fit_home` of the model's home validation predictions.
        p: Target scores [N] (no labels: there is no argument for them).
        groups: Patient id per target image [N].
        methods: Names in :data:`METHODS` (``agreement`` is skipped here).
        n_boot: Patient resamples (0: no intervals).
        seed: Bootstrap seed (the study's, so the resamples are the AUC intervals').
        ci: Confidence level.
    """
    pa = np.asarray(p, dtype=np.float64)
    out = []
    for name in methods:
        if look_up_method(name) not in METHODS:
            continue
        method = METHODS[name]

        def run(w: FloatArray, method: Method = method) -> dict[Key, FloatArray]:
            return method(home, pa, w)

        for (metric, rule), value, low, high in _boot(run, pa.size, groups, n_boot, seed, ci):
            note = NO_CURVE if name.startswith("cm_") and metric == "auc" and value != value else ""
            out.append(Estimate(name, metric, rule, value, low, high, note))
    return out


def agreement_on_the_line(
    home_predicted: Sequence[ArrayLike],
    home_y: ArrayLike,
    target_predicted: Sequence[ArrayLike],
    groups: ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> list[tuple[float, float, float]] | None:
    """ALine-S (Baek et al. 2022): every model's target accuracy from pairwise agreement, home and target.

    Args:
        home_predicted: Per model, its 0/1 predictions [M] on the same home images (aligned).
        home_y: Home labels [M] in {0, 1}.
        target_predicted: Per model, its 0/1 predictions [N] on the same target images (aligned).
        groups: Patient id per target image [N].

    Returns:
        Per model (estimate, ci_low, ci_high); None with fewer than two models. With one pair the slope is
        fixed at 1 (only the offset is fitted).
    """
    k = len(home_predicted)
    if k < 2 or len(target_predicted) != k:
        return None
    hp = [np.asarray(x, dtype=np.float64) for x in home_predicted]
    tp = np.vstack([np.asarray(x, dtype=np.float64) for x in target_predicted])  # [K, N]
    y = np.asarray(home_y, dtype=np.float64)
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]

    def probit(x: FloatArray) -> FloatArray:
        return np.asarray(norm.ppf(np.clip(x, 1e-4, 1 - 1e-4)), dtype=np.float64)

    home_agree = probit(np.array([np.mean(hp[i] == hp[j]) for i, j in pairs]))  # [pairs]
    home_acc = probit(np.array([np.mean(h == y) for h in hp]))  # [K]
    agree = np.vstack([(tp[i] == tp[j]).astype(np.float64) for i, j in pairs])  # [pairs, N]

    def fn(w: FloatArray) -> dict[Key, FloatArray]:
        target_agree = probit(_div(w @ agree.T, w.sum(axis=1)[:, None]))  # [B, pairs]
        if len(pairs) == 1 or np.ptp(home_agree) == 0:
            slope = np.ones(w.shape[0])
        else:
            x = home_agree - home_agree.mean()
            slope = (target_agree - target_agree.mean(axis=1, keepdims=True)) @ x / (x @ x)
        bias = target_agree.mean(axis=1) - slope * home_agree.mean()
        acc = norm.cdf(slope[:, None] * home_acc[None, :] + bias[:, None])  # [B, K]
        return {(str(m), ""): acc[:, m] for m in range(k)}

    result = {key[0]: (v, lo, hi) for key, v, lo, hi in _boot(fn, tp.shape[1], groups, n_boot, seed, ci)}
    return [result[str(m)] for m in range(k)]


# ---------------------------------------------------------------- the trust flag


@dataclass(frozen=True)
class TrustSignals:
    """Label-free reasons to distrust the estimates of one model, target and label (module docstring).

    Attributes:
        spread: Largest minus smallest AUC estimate over :data:`SPREAD_METHODS` (NaN with fewer than two).
        prevalence_odds: Odds ratio of CBPE's prevalence (mean calibrated probability) on the target to the same
            mean at home, >= 1 either way.
        outside: Share of target scores outside the home scores' 1st-99th percentile range.
        score_shift: Kolmogorov-Smirnov ``D``, home validation scores vs target scores (NaN without target scores).
        expected_se: Hanley-McNeil standard error of CBPE's AUC with CBPE's expected class counts: the noise of
            the target's own (labelled) AUC, foreseen without labels; reported, not a reason.
        embedding_auc: Domain classifier AUC, home validation vs target embeddings; NaN without embeddings.
        reasons: The signals beyond their limits, e.g. ``["spread", "outside"]``; empty: trusted.
    """

    spread: float
    prevalence_odds: float
    outside: float
    score_shift: float
    expected_se: float
    embedding_auc: float
    reasons: tuple[str, ...]

    @property
    def flag(self) -> bool:
        return bool(self.reasons)


def hanley_mcneil_se(auc: float, n_pos: float, n_neg: float) -> float:
    """Hanley & McNeil (1982) standard error of an AUC from its value and class counts (counts below 1 count as 1).

    Capped at 0.5, the AUC's half range: a set without expected positives says nothing.
    """
    if not (auc == auc and n_pos == n_pos and n_neg == n_neg):
        return math.nan
    n_pos, n_neg = max(n_pos, 1.0), max(n_neg, 1.0)
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    return float(min(math.sqrt(max(var, 0.0)), 0.5))


def trust_signals(
    home: Home, p: ArrayLike, estimates: Sequence[Estimate], embedding_auc: float = math.nan
) -> TrustSignals:
    """The flag's signals and the reasons beyond their limits (module docstring).

    Args:
        home: The home fit the estimates used.
        p: Target scores [N].
        estimates: :func:`estimate_label`'s estimates for this target and label (CBPE's needed for the
            prevalence and the expected standard error; without it those two are NaN).
        embedding_auc: :func:`cxrgen.shift.embedding_distance.domain_auc` where embeddings exist.
    """
    pa = np.asarray(p, dtype=np.float64)
    found = {(e.method, e.metric): e.estimate for e in estimates if e.rule == ""}
    aucs = [found[(m, "auc")] for m in SPREAD_METHODS if found.get((m, "auc"), math.nan) == found.get((m, "auc"))]
    spread = max(aucs) - min(aucs) if len(aucs) > 1 else math.nan
    prevalence = found.get(("cbpe", "prevalence"), math.nan)
    odds = expected_se = math.nan
    if prevalence == prevalence:

        def clipped_logit(x: float) -> float:
            return float(logit(np.clip(x, _EPS, 1 - _EPS)))

        odds = math.exp(abs(clipped_logit(prevalence) - clipped_logit(float(np.mean(home.q)))))
        expected_se = hanley_mcneil_se(found.get(("cbpe", "auc"), math.nan), prevalence * pa.size,
                                       (1 - prevalence) * pa.size)  # fmt: skip
    low, high = home.score_range
    outside = float(np.mean((pa < low) | (pa > high))) if pa.size else math.nan
    score_shift = float(ks_2samp(home.p, pa).statistic) if pa.size else math.nan
    reasons = tuple(
        name
        for name, value, limit in (
            ("spread", spread, MAX_SPREAD),
            ("prevalence", odds, MAX_PREVALENCE_ODDS),
            ("outside", outside, MAX_OUTSIDE),
            ("score_shift", score_shift, MAX_SCORE_SHIFT),
            ("embedding", embedding_auc, MAX_EMBEDDING_AUC),
        )
        if value > limit
    )
    return TrustSignals(spread, odds, outside, score_shift, expected_se, embedding_auc, reasons)


def true_values(home: Home, y: ArrayLike, p: ArrayLike) -> dict[Key, float]:
    """The truth each estimate is checked against, where the target has labels (NaN labels left out)."""
    ya, pa = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    keep = ~np.isnan(ya)
    ya, pa = ya[keep], pa[keep]
    if ya.size == 0:
        return {}
    out: dict[Key, float] = {("prevalence", ""): float(ya.mean())}
    out[("auc", "")] = float(roc_auc_score(ya, pa)) if ya.min() != ya.max() else math.nan
    for rule, t in home.thresholds.items():
        if math.isnan(t):
            continue
        pred = (pa >= t).astype(np.float64)
        tp, fp = float(np.sum(pred * ya)), float(np.sum(pred * (1 - ya)))
        fn, tn = float(np.sum((1 - pred) * ya)), float(np.sum((1 - pred) * (1 - ya)))
        rates = _rates(*(np.array([c]) for c in (tp, fp, tn, fn)))
        out |= {key: float(v[0]) for key, v in _thresholded(rates, rule).items()}
    return out


__all__ = [
    "ALL_METHODS",
    "METHODS",
    "Estimate",
    "Home",
    "TrustSignals",
    "agreement_on_the_line",
    "estimate_label",
    "expected_auc",
    "fit_home",
    "hanley_mcneil_se",
    "look_up_method",
    "true_values",
    "trust_signals",
]
