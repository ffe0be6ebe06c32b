"""What AUC to expect at the next hospital: a random-effects meta-analysis of external AUCs on the logit scale.

DESIGN.md section 9: with three or more external hospitals, pool the logit AUCs (within-hospital variances from
the patient-clustered bootstrap) with a random-effects model and give the pooled AUC with its interval, tau²,
I² and the 95 % prediction interval for a new hospital,

    mu_hat +- t_{k-2, 0.975} * sqrt(tau² + se(mu_hat)²)

(Higgins, Thompson & Spiegelhalter 2009, J R Stat Soc A 172:137-159; t with k-2 degrees of
freedom because mu and tau² are both estimated). The pooling, tau² (DerSimonian-Laird, as in that paper) and I²
come from ``statsmodels.stats.meta_analysis.combine_effects``; only the prediction interval, which statsmodels
does not provide, is computed here on top of its tau² and standard error.

statsmodels returns the DerSimonian-Laird moment estimate ``(Q - (k-1)) / c`` untruncated, negative whenever
Q < k - 1 (homogeneous hospitals), and ``I² = 1 - (k-1)/Q`` likewise. DerSimonian & Laird (1986, Control Clin
Trials 7:177-188) truncate at 0, as metafor and every meta-analysis package do: with tau² = 0 the random-effects
weights are the fixed-effect ones, so the pooled mean and its standard error are statsmodels' fixed-effect
values; I² is ``max(0, (Q - (k-1)) / Q)`` (Higgins & Thompson 2002, Stat Med 21:1539-1558), 0 when Q = 0.

Metrics know no torch, and this module knows no files: frames in, frames out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.special import expit, logit
from scipy.stats import norm
from scipy.stats import t as student_t
from statsmodels.stats.meta_analysis import combine_effects

__all__ = [
    "MIN_HOSPITALS",
    "NOT_ESTIMABLE",
    "MetaResult",
    "coverage_table",
    "leave_one_out_coverage",
    "logit_variance",
    "next_hospital_table",
    "random_effects",
]

#: A prediction interval needs k - 2 >= 1 degrees of freedom.
MIN_HOSPITALS = 3
NOT_ESTIMABLE = f"not estimable (needs at least {MIN_HOSPITALS} hospitals)"


@dataclass(frozen=True)
class MetaResult:
    """Random-effects (DerSimonian-Laird) pooling of k estimates on the scale they were given.

    Attributes:
        k: Number of estimates (hospitals).
        pooled: Random-effects pooled estimate mu_hat.
        se: Its standard error.
        ci_low: Lower bound of the normal ``ci`` interval of mu.
        ci_high: Upper bound.
        tau2: Between-hospital variance (DerSimonian-Laird), truncated at 0.
        i2: I², the share of the total variation due to heterogeneity, in [0, 1] (truncated at 0).
        pi_low: Lower bound of the prediction interval for a new hospital (t, k-2 df); NaN when k < 3.
        pi_high: Upper bound.
    """

    k: int
    pooled: float
    se: float
    ci_low: float
    ci_high: float
    tau2: float
    i2: float
    pi_low: float
    pi_high: float


def random_effects(effects: ArrayLike, variances: ArrayLike, *, ci: float = 0.95) -> MetaResult:
    """Pool ``effects`` [k] with within-study ``variances`` [k]; prediction interval with t on k-2 df.

    Raises:
        ValueError: fewer than 2 estimates, or a variance that is not finite and positive.
    """
    eff = np.asarray(effects, dtype=np.float64)
    var = np.asarray(variances, dtype=np.float64)
    if eff.ndim != 1 or eff.shape != var.shape or eff.size < 2:
        raise ValueError(f"need at least 2 effects with one variance each, got {eff.shape} and {var.shape}")
    if not (np.isfinite(eff).all() and np.isfinite(var).all() and (var > 0).all()):
        raise ValueError(f"effects must be finite and variances finite and > 0, got {eff} and {var}")
    with np.errstate(invalid="ignore", divide="ignore"):  # its untruncated RE side may take sqrt(< 0); unused then
        res = combine_effects(eff, var, method_re="dl", alpha=1.0 - ci)
    k = int(eff.size)
    tau2 = max(0.0, float(res.tau2))
    if tau2 > 0.0:
        pooled, se = float(res.mean_effect_re), float(res.sd_eff_w_re)
    else:  # truncated: the random-effects weights 1 / (v + 0) are the fixed-effect ones
        pooled, se = float(res.mean_effect_fe), float(res.sd_eff_w_fe)
    half_ci = float(norm.ppf(0.5 + ci / 2.0)) * se
    lo, hi = pooled - half_ci, pooled + half_ci
    q = float(res.q)
    i2 = max(0.0, (q - (k - 1)) / q) if q > 0.0 else 0.0
    pi_low = pi_high = math.nan
    if k >= MIN_HOSPITALS:
        half = float(student_t.ppf(0.5 + ci / 2.0, k - 2)) * math.sqrt(tau2 + se**2)
        pi_low, pi_high = pooled - half, pooled + half
    return MetaResult(k, pooled, se, lo, hi, tau2, i2, pi_low, pi_high)


def logit_variance(auc: ArrayLike, se: ArrayLike) -> np.ndarray:
    """Variance of logit(AUC) from the AUC's standard error by the delta method: se² / (AUC (1 - AUC))²."""
    a = np.asarray(auc, dtype=np.float64)
    s = np.asarray(se, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(s**2 / (a * (1.0 - a)) ** 2, dtype=np.float64)


NEXT_HOSPITAL_COLUMNS: tuple[str, ...] = (
    "configuration",
    "arch",
    "label",
    "k",
    "hospitals",
    "pooled_auc",
    "ci_low",
    "ci_high",
    "tau2",
    "i2",
    "pi_low",
    "pi_high",
    "note",
)


def _usable(group: pd.DataFrame) -> pd.DataFrame:
    ok = group["auc"].between(0.0, 1.0, inclusive="neither") & (group["boot_se"] > 0)
    return group[ok.fillna(False)]


def next_hospital_table(auc: pd.DataFrame, *, ci: float = 0.95) -> pd.DataFrame:
    """Per (configuration, arch, label): the meta-analysis of its external AUCs, back on the AUC scale.

    ``auc`` holds ``auc.csv`` rows (``configuration, arch, kind, test_set, label, auc, boot_se``); one row per
    external test set (several seeds are expected to be averaged before). ``tau2`` is on the logit scale;
    fewer than three usable hospitals give NaN numbers and :data:`NOT_ESTIMABLE` in ``note``.
    """
    rows: list[dict[str, object]] = []
    external = auc[auc["kind"] == "external"]
    for (conf, arch, label), group in external.groupby(["configuration", "arch", "label"], sort=False):
        use = _usable(group)
        row: dict[str, object] = {"configuration": conf, "arch": arch, "label": label, "k": len(use),
                                  "hospitals": ", ".join(map(str, use["test_set"]))}
        if len(use) < MIN_HOSPITALS:
            row.update(dict.fromkeys(NEXT_HOSPITAL_COLUMNS[5:-1], math.nan), note=NOT_ESTIMABLE)
        else:
            res = random_effects(logit(use["auc"].to_numpy()), logit_variance(use["auc"], use["boot_se"]), ci=ci)
            row.update(
                pooled_auc=float(expit(res.pooled)), ci_low=float(expit(res.ci_low)),
                ci_high=float(expit(res.ci_high)), tau2=res.tau2, i2=res.i2, pi_low=float(expit(res.pi_low)),
                pi_high=float(expit(res.pi_high)), note="",
            )
        rows.append(row)
    return pd.DataFrame(rows, columns=list(NEXT_HOSPITAL_COLUMNS))


def leave_one_out_coverage(
    aucs: Sequence[float], ses: Sequence[float], hospitals: Sequence[str], *, ci: float = 0.95
) -> pd.DataFrame:
    """For each hospital: the prediction interval computed from the others, and whether its AUC fell inside.

    This is the check of a leave-one-hospital-out design: one prediction per held-out hospital. The prediction
    interval of :func:`random_effects` is for a new hospital's *true* logit AUC (variance tau² + se(mu)²); the
    held-out AUC is an estimate with its own sampling variance v_i (its bootstrap SE, delta method), so the interval
    it is compared with is ``mu +- t_{k-2} sqrt(tau² + se(mu)² + v_i)`` (issue 27); without v_i a small or noisy
    hospital falls outside too often and the check under-covers. Hospitals left with fewer than three others get
    no interval (``inside`` is NA). Returns columns ``hospital, auc, pi_low, pi_high, inside, k``, ``pi_low`` and
    ``pi_high`` being that widened interval on the AUC scale.
    """
    a = np.asarray(aucs, dtype=np.float64)
    s = np.asarray(ses, dtype=np.float64)
    rows = []
    for i, name in enumerate(hospitals):
        others = np.arange(a.size) != i
        if int(others.sum()) < MIN_HOSPITALS:
            rows.append({"hospital": name, "auc": a[i], "pi_low": math.nan, "pi_high": math.nan,
                         "inside": pd.NA, "k": int(others.sum())})
            continue
        res = random_effects(logit(a[others]), logit_variance(a[others], s[others]), ci=ci)
        own = float(logit_variance(a[i], s[i]))
        half = float(student_t.ppf(0.5 + ci / 2.0, res.k - 2)) * math.sqrt(res.tau2 + res.se**2 + own)
        lo, hi = float(expit(res.pooled - half)), float(expit(res.pooled + half))
        rows.append({"hospital": name, "auc": a[i], "pi_low": lo, "pi_high": hi, "inside": bool(lo <= a[i] <= hi),
                     "k": res.k})
    out = pd.DataFrame(rows)
    out["inside"] = out["inside"].astype("boolean")
    return out


def coverage_table(auc: pd.DataFrame, *, ci: float = 0.95) -> pd.DataFrame:
    """:func:`leave_one_out_coverage` for every (configuration, arch, label) with 4 or more external hospitals.

    One training set tested on k external hospitals gives k held-out checks, each against the interval from the
    other k - 1 (at least 3). Columns: ``configuration, arch, label`` then those of :func:`leave_one_out_coverage`.
    """
    frames = []
    external = auc[auc["kind"] == "external"]
    for (conf, arch, label), group in external.groupby(["configuration", "arch", "label"], sort=False):
        use = _usable(group)
        if len(use) <= MIN_HOSPITALS:
            continue
        checks = leave_one_out_coverage(use["auc"].tolist(), use["boot_se"].tolist(), use["test_set"].tolist(), ci=ci)
        checks.insert(0, "label", label)
        checks.insert(0, "arch", arch)
        checks.insert(0, "configuration", conf)
        frames.append(checks)
    columns = ["configuration", "arch", "label", "hospital", "auc", "pi_low", "pi_high", "inside", "k"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
