"""More data or more diverse data? The size-vs-sources regression and the re-tested union claim (issue 25).

Every run of a size-matched or learning-curve design gives, per external test set and label, an AUC at a known
training size ``n`` and number of sources ``k``. :func:`fit_size_diversity` regresses the logit AUC on
``log2 n`` and ``k`` with one intercept per (test set, label, architecture) cell, so only differences within a
cell inform the two slopes:

    logit AUC = cell + b_k * k + b_n * log2 n [+ u_combination] + error

``u_combination`` is a random intercept per source combination (statsmodels ``MixedLM``) when the design has at
least ``min_combinations`` of them; with fewer, the fit is OLS with standard errors clustered by combination
(heteroskedasticity-robust when there is one). Runs of one combination share sources, so they are not independent.

Intervals count patients and seeds as well as combinations. Each run's AUC is recomputed on patient resamples
drawn once per test set and shared by every run on it (DESIGN 9), and with several training seeds each replicate
also redraws the seeds with replacement (paired: the same seeds for every run); the slopes are refitted on each
replicate by weighted least squares. The reported standard error is ``sqrt(se_model**2 + sd_bootstrap**2)``:
the model's error already holds part of the test and seed noise, so the sum is conservative, never narrower
than either. Intervals are normal on the logit scale and mapped to AUC at the design's mean AUC:
"AUC change per added source at fixed size" is ``expit(L + b_k) - expit(L)``, "per doubling of size" likewise
with ``b_n``, ``L`` the mean fitted logit AUC.

:func:`union_vs_size` re-tests the claim that training on a union of hospitals helps "by exposing the model to
a mix of different datasets": the union's external gain over the mean of its single sources (logit AUC, same
test images, same patient resamples) against the gain its size alone predicts, ``b_n * (log2 n_union - mean
log2 n_single)``. The excess is what size does not explain.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

log = logging.getLogger(__name__)

#: A logit of an AUC of 0 or 1 is infinite; AUCs are clipped to this distance from them.
EPS = 1e-4
#: Source combinations needed before the combination effect is fitted as a random effect.
MIN_COMBINATIONS = 5
TERMS = {"k": "AUC change per added source at fixed size", "log2_n": "AUC change per doubling of size"}
FIT_COLUMNS = ["n", "k", "combination", "test_set", "label", "arch", "seed", "auc"]


def logit(auc: np.ndarray | pd.Series | float) -> np.ndarray:
    """Logit of AUCs clipped to [EPS, 1 - EPS] (NaN stays NaN)."""
    a = np.clip(np.asarray(auc, dtype=np.float64), EPS, 1 - EPS)
    return np.log(a / (1 - a))


def expit(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def verdict(low: float, high: float, what: str) -> str:
    """A plain sentence from a 95 % interval of an AUC change."""
    if math.isnan(low) or math.isnan(high):
        return f"{what}: not estimable"
    if low > 0:
        return f"{what} raises external AUC (interval above 0)"
    if high < 0:
        return f"{what} lowers external AUC (interval below 0)"
    return f"{what}: no clear effect (interval includes 0)"


@dataclass(frozen=True)
class SizeDiversityFit:
    """The fitted slopes.

    Attributes:
        effects: one row per term (``k``, ``log2_n``): ``effect`` (the sentence), ``logit_coef``, ``se_model``,
            ``se_boot``, ``se``, ``logit_low``, ``logit_high``, ``auc_change``, ``auc_low``, ``auc_high``,
            ``verdict``.
        model: ``mixed`` (random combination intercept), ``ols-cluster`` or ``ols-hc1``.
        mean_logit: mean fitted logit AUC, where AUC changes are read.
        n_rows, n_combinations, n_seeds, n_boot: what the fit saw.
    """

    effects: pd.DataFrame
    model: str
    mean_logit: float
    n_rows: int
    n_combinations: int
    n_seeds: int
    n_boot: int

    def coef(self, term: str) -> float:
        return float(self.effects.set_index("term").loc[term, "logit_coef"])

    def se(self, term: str) -> float:
        return float(self.effects.set_index("term").loc[term, "se"])


def _design(frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """[rows, 2 + cells]: ``k``, ``log2 n``, then one indicator per (test set, label, arch) cell."""
    cells = frame["test_set"].astype(str) + "|" + frame["label"].astype(str) + "|" + frame["arch"].astype(str)
    dummies = pd.get_dummies(cells, dtype=np.float64)
    x = np.column_stack([frame["k"].to_numpy(float), np.log2(frame["n"].to_numpy(float)), dummies.to_numpy()])
    return x, ["k", "log2_n", *dummies.columns]


def _model_fit(
    y: np.ndarray, x: np.ndarray, combos: np.ndarray, min_combinations: int, m: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """Coefficients and standard errors of the first ``m`` columns, and the model used."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    _, codes = np.unique(combos, return_inverse=True)
    n_groups = int(codes.max()) + 1
    if n_groups >= min_combinations:
        try:
            with warnings.catch_warnings():
                # A boundary (zero) combination variance is a legitimate answer here, not a failure.
                warnings.simplefilter("ignore", ConvergenceWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                fitted = sm.MixedLM(y, x, groups=codes).fit(reml=True)
            params = np.asarray(fitted.fe_params)[:m]
            ses = np.asarray(fitted.bse_fe)[:m]
            if np.all(np.isfinite(ses)):
                return params, ses, "mixed"
        except (np.linalg.LinAlgError, ValueError) as exc:
            log.warning("size vs sources: the mixed model failed (%s); OLS with clustered errors instead", exc)
    ols = sm.OLS(y, x)
    if n_groups >= 2:
        fitted = ols.fit(cov_type="cluster", cov_kwds={"groups": codes})
        return np.asarray(fitted.params)[:m], np.asarray(fitted.bse)[:m], "ols-cluster"
    fitted = ols.fit(cov_type="HC1")
    return np.asarray(fitted.params)[:m], np.asarray(fitted.bse)[:m], "ols-hc1"


def _seed_weights(seeds: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, rows] weights: how often each row's seed was drawn when seeds are redrawn with replacement."""
    unique, codes = np.unique(seeds, return_inverse=True)
    if len(unique) < 2:
        return np.ones((n_boot, len(seeds)))
    draws = rng.integers(0, len(unique), size=(n_boot, len(unique)))
    counts = np.stack([np.bincount(row, minlength=len(unique)) for row in draws]).astype(np.float64)
    return counts[:, codes]


def fit_size_diversity(
    frame: pd.DataFrame,
    boot: np.ndarray | None = None,
    *,
    ci: float = 0.95,
    seed: int = 0,
    min_combinations: int = MIN_COMBINATIONS,
) -> SizeDiversityFit:
    """Regress external logit AUC on ``k`` and ``log2 n`` (module docstring).

    Args:
        frame: one row per (run, seed, external test set, label): ``n`` (training images), ``k`` (sources),
            ``combination`` (e.g. ``chexpert+nih``), ``test_set``, ``label``, ``arch``, ``seed``, ``auc``. Rows
            with NaN AUC are dropped.
        boot: [rows, B] AUC of each row on B patient resamples shared within each test set (NaN allowed), or
            None (then the interval is the model's alone).
        ci: interval level.
        seed: seed of the seed redraws.
        min_combinations: combinations needed for the mixed model.
    """
    missing = [c for c in FIT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"size vs sources: frame lacks column(s) {', '.join(missing)}")
    keep = frame["auc"].notna().to_numpy()
    data = frame.loc[keep].reset_index(drop=True)
    x, _ = _design(data)
    y = logit(data["auc"].to_numpy())
    combos = data["combination"].astype(str).to_numpy()
    n_combos = len(set(combos))
    # A term whose column never varies (a learning curve alone has k = 1) is not identified: left out, NaN.
    identified = [j for j, column in enumerate(("k", "n")) if data[column].nunique() >= 2]
    cols = [*identified, *range(2, x.shape[1])]
    params, ses, model = np.full(2, np.nan), np.full(2, np.nan), "none"
    if not identified or len(data) < len(cols) + 2:
        log.warning("size vs sources: %d usable rows cannot separate size from sources; NaN", len(data))
    else:
        fitted, fitted_se, model = _model_fit(y, x[:, cols], combos, min_combinations, len(identified))
        params[identified], ses[identified] = fitted, fitted_se
    se_boot = np.zeros(2)
    n_boot = 0
    if boot is not None and model != "none":
        b = np.asarray(boot, dtype=np.float64)[keep]
        n_boot = b.shape[1]
        weights = _seed_weights(data["seed"].to_numpy(), n_boot, np.random.default_rng([seed, 25]))
        coefs = np.full((n_boot, 2), np.nan)
        for r in range(n_boot):
            yb = logit(b[:, r])
            ok = np.isfinite(yb) & (weights[r] > 0)
            sw = np.sqrt(weights[r][ok])[:, None]
            solution = np.linalg.lstsq(x[ok][:, cols] * sw, yb[ok] * sw[:, 0], rcond=None)[0]
            coefs[r, identified] = solution[: len(identified)]
        se_boot = np.nanstd(coefs, axis=0, ddof=1)
    se = np.sqrt(ses**2 + se_boot**2)
    z = float(stats.norm.ppf(0.5 + ci / 2))
    fitted_mean = float(np.mean(y))
    rows = []
    for j, term in enumerate(("k", "log2_n")):
        coef, low, high = params[j], params[j] - z * se[j], params[j] + z * se[j]
        change = [float(expit(fitted_mean + v) - expit(fitted_mean)) for v in (coef, low, high)]
        what = "adding a source at fixed size" if term == "k" else "doubling the training set"
        rows.append({
            "term": term, "effect": TERMS[term], "logit_coef": coef, "se_model": ses[j],
            "se_boot": se_boot[j], "se": se[j], "logit_low": low, "logit_high": high, "auc_change": change[0],
            "auc_low": change[1], "auc_high": change[2], "verdict": verdict(change[1], change[2], what),
        })  # fmt: skip
    return SizeDiversityFit(
        effects=pd.DataFrame(rows), model=model, mean_logit=fitted_mean, n_rows=len(data),
        n_combinations=n_combos, n_seeds=int(data["seed"].nunique()), n_boot=n_boot,
    )  # fmt: skip


def union_vs_size(
    union: pd.DataFrame,
    singles: pd.DataFrame,
    fit: SizeDiversityFit,
    *,
    ci: float = 0.95,
) -> pd.DataFrame:
    """The union's external gain over its single sources against the gain its size alone predicts.

    Args:
        union: the union run's rows on one or more (test set, label, arch) cells: ``test_set, label, arch, n, auc``
            and ``boot`` (an array per row of its AUC on the shared patient resamples of that test set, or None);
            seeds averaged already.
        singles: the same columns for each single-source run on the same cells (the sources of the union).
        fit: the size slope ``log2_n`` comes from here.
        ci: interval level.

    Returns:
        One row per cell: ``test_set, label, arch, n_union, n_single`` (mean over sources), ``observed_gain``,
        ``size_predicted_gain``, ``excess`` (all AUC at the single sources' mean logit), ``excess_logit``,
        ``excess_low``, ``excess_high`` (logit), ``verdict``.
    """
    z = float(stats.norm.ppf(0.5 + ci / 2))
    slope, slope_se = fit.coef("log2_n"), fit.se("log2_n")
    rows = []
    for (test_set, label, arch), mine in union.groupby(["test_set", "label", "arch"], sort=True):
        alone = singles[(singles["test_set"] == test_set) & (singles["label"] == label) & (singles["arch"] == arch)]
        if alone.empty:
            continue
        base = float(np.mean(logit(alone["auc"].to_numpy())))
        gain = float(logit(mine["auc"].iloc[0])) - base
        d_log_n = math.log2(float(mine["n"].iloc[0])) - float(np.mean(np.log2(alone["n"].to_numpy(float))))
        predicted = slope * d_log_n
        var_gain = 0.0
        b_union = mine["boot"].iloc[0]
        if b_union is not None and all(b is not None for b in alone["boot"]):
            gains = logit(np.asarray(b_union)) - np.mean([logit(np.asarray(b)) for b in alone["boot"]], axis=0)
            var_gain = float(np.nanvar(gains, ddof=1))
        se = math.sqrt(var_gain + (d_log_n * slope_se) ** 2)
        excess = gain - predicted
        low, high = excess - z * se, excess + z * se
        if math.isnan(excess):
            text = "not testable (an AUC is undefined or there is no size slope)"
        elif math.isnan(low):
            text = "not testable (no interval)"
        elif low > 0:
            text = "the union gains more than its size predicts: a diversity effect"
        elif high < 0:
            text = "the union gains less than its size predicts"
        else:
            text = "the union's gain is what its size predicts (excess interval includes 0)"
        rows.append({
            "test_set": test_set, "label": label, "arch": arch, "n_union": int(mine["n"].iloc[0]),
            "n_single": float(np.mean(alone["n"])), "observed_gain": float(expit(base + gain) - expit(base)),
            "size_predicted_gain": float(expit(base + predicted) - expit(base)),
            "excess": float(expit(base + excess) - expit(base)), "excess_logit": excess, "excess_low": low,
            "excess_high": high, "verdict": text,
        })  # fmt: skip
    return pd.DataFrame(rows)
