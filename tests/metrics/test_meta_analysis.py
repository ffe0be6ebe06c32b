"""The next-hospital meta-analysis: equal to statsmodels and to a published worked example."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit
from scipy.stats import t as student_t
from statsmodels.stats.meta_analysis import combine_effects

from cxrgen.metrics.meta_analysis import (
    NOT_ESTIMABLE,
    coverage_table,
    leave_one_out_coverage,
    logit_variance,
    next_hospital_table,
    random_effects,
)

# Kacker (2004), "Combining information from interlaboratory evaluations using a random effects model",
# Metrologia 41:132-136: 9 laboratories. The DerSimonian-Laird fit by R metafor 2.x, `rma(y, v, method="DL")`,
# as published in statsmodels' own test results (statsmodels/stats/tests/results/results_meta.py, `exk1_dl`).
KACKER_Y = [61.0, 61.4, 62.21, 62.3, 62.34, 62.6, 62.7, 62.84, 65.9]
KACKER_V = [0.2025, 1.2100, 0.0900, 0.2025, 0.3844, 0.5625, 0.0676, 0.0225, 1.8225]
METAFOR_DL_B = 62.3901386044504
METAFOR_DL_SE = 0.245749668040304
METAFOR_DL_TAU2 = 0.288049246973751
METAFOR_DL_I2 = 67.744403741711 / 100  # metafor reports percent
METAFOR_DL_CI = (61.9084781058787, 62.8717991030221)


def test_pooled_estimate_tau2_and_i2_match_the_published_metafor_fit() -> None:
    res = random_effects(KACKER_Y, KACKER_V)
    assert res.k == 9
    assert res.pooled == pytest.approx(METAFOR_DL_B, abs=1e-4)
    assert res.se == pytest.approx(METAFOR_DL_SE, abs=1e-4)
    assert res.tau2 == pytest.approx(METAFOR_DL_TAU2, abs=1e-4)
    assert res.i2 == pytest.approx(METAFOR_DL_I2, abs=1e-4)
    assert (res.ci_low, res.ci_high) == pytest.approx(METAFOR_DL_CI, abs=1e-4)
    # Higgins, Thompson & Spiegelhalter (2009) prediction interval on the published mu, se and tau²: t, k - 2 = 7 df.
    half = student_t.ppf(0.975, 7) * math.sqrt(METAFOR_DL_TAU2 + METAFOR_DL_SE**2)
    assert (res.pi_low, res.pi_high) == pytest.approx((METAFOR_DL_B - half, METAFOR_DL_B + half), abs=1e-4)



# The hypothetical antihypertensive meta-analysis of Riley, Higgins & Deeks (2011), BMJ 342:d549, as shipped in
# the R package pimeta (nshi-stat/pimeta, data/sbp.RData: 10 studies, y and sigmak), and pimeta's published
# Higgins-Thompson-Spiegelhalter output for it (DerSimonian-Laird tau², t on k - 2 df), from its documentation
# (`htsdl(sbp$y, sbp$sigmak)`): an independently computed prediction interval, not our own formula.
SBP_Y = [0.0, 0.1, -0.4, -0.8, -0.63, 0.22, -0.34, -0.51, 0.03, -0.81]
SBP_SE = [0.42347717, 0.21939179, 0.02551067, 0.19898325, 0.30102594, 0.30102594, 0.07142988, 0.10204269,
          0.12245123, 0.30102594]  # fmt: skip
PIMETA_HTS_MU, PIMETA_HTS_PI, PIMETA_HTS_TAU2 = -0.3340597, (-0.7597777, 0.09165839), 0.02824971


def test_prediction_interval_matches_a_published_worked_example() -> None:
    res = random_effects(SBP_Y, np.square(SBP_SE))
    assert res.pooled == pytest.approx(PIMETA_HTS_MU, abs=1e-4)
    assert res.tau2 == pytest.approx(PIMETA_HTS_TAU2, abs=1e-4)
    assert (res.pi_low, res.pi_high) == pytest.approx(PIMETA_HTS_PI, abs=1e-4)

def test_equal_to_statsmodels_on_logit_aucs() -> None:
    aucs = np.array([0.81, 0.77, 0.86, 0.74, 0.80])
    ses = np.array([0.012, 0.02, 0.015, 0.03, 0.01])
    eff, var = logit(aucs), logit_variance(aucs, ses)
    res = random_effects(eff, var)
    ref = combine_effects(eff, var, method_re="dl")
    assert res.pooled == pytest.approx(ref.mean_effect_re, abs=1e-12)
    assert res.tau2 == pytest.approx(ref.tau2, abs=1e-12)
    assert res.i2 == pytest.approx(ref.i2, abs=1e-12)
    assert res.pi_high - res.pi_low > res.ci_high - res.ci_low  # a new hospital varies more than the mean


def _auc_rows(hospitals: dict[str, tuple[float, float]], label: str = "Edema") -> pd.DataFrame:
    return pd.DataFrame(
        [{"configuration": "both", "arch": "densenet121", "kind": "external", "test_set": name, "label": label,
          "auc": auc, "boot_se": se} for name, (auc, se) in hospitals.items()]
        + [{"configuration": "both", "arch": "densenet121", "kind": "internal", "test_set": "chexpert",
            "label": label, "auc": 0.95, "boot_se": 0.01}]
    )


def test_next_hospital_table_back_transforms_and_refuses_two_hospitals() -> None:
    three = _auc_rows({"mimic": (0.8, 0.01), "padchest": (0.75, 0.02), "vindr": (0.85, 0.015)})
    row = next_hospital_table(three).iloc[0]
    res = random_effects(logit([0.8, 0.75, 0.85]), logit_variance([0.8, 0.75, 0.85], [0.01, 0.02, 0.015]))
    assert row["k"] == 3 and row["hospitals"] == "mimic, padchest, vindr"
    assert row["pooled_auc"] == pytest.approx(expit(res.pooled), abs=1e-12)
    assert row["pi_low"] == pytest.approx(expit(res.pi_low), abs=1e-12) and row["note"] == ""
    two = next_hospital_table(_auc_rows({"mimic": (0.8, 0.01), "padchest": (0.75, 0.02)})).iloc[0]
    assert two["k"] == 2 and two["note"] == NOT_ESTIMABLE and math.isnan(two["pooled_auc"])


def test_leave_one_out_coverage_on_synthetic_hospitals() -> None:
    # Five hospitals; the fifth is far off the others and must fall outside the interval computed without it.
    aucs = [0.80, 0.82, 0.78, 0.81, 0.55]
    ses = [0.01, 0.012, 0.011, 0.01, 0.01]
    names = ["a", "b", "c", "d", "e"]
    checks = leave_one_out_coverage(aucs, ses, names)
    assert checks["k"].tolist() == [4] * 5
    assert bool(checks.set_index("hospital").loc["e", "inside"]) is False
    res = random_effects(logit(aucs[:4]), logit_variance(aucs[:4], ses[:4]))
    half = student_t.ppf(0.975, 2) * math.sqrt(res.tau2 + res.se**2 + float(logit_variance(0.55, 0.01)))
    assert checks.iloc[4]["pi_low"] == pytest.approx(expit(res.pooled - half), abs=1e-12)
    table = coverage_table(_auc_rows(dict(zip(names, zip(aucs, ses, strict=True), strict=True))))
    assert len(table) == 5 and table["inside"].sum() == int(checks["inside"].sum())
    three = coverage_table(_auc_rows(dict(zip(names[:3], list(zip(aucs, ses, strict=True))[:3], strict=True))))
    assert three.empty  # 3 hospitals leave 2 for the interval: no check


def _hand_written_dl(y: np.ndarray, v: np.ndarray, ci: float = 0.95) -> dict[str, float]:
    """DerSimonian & Laird (1986) as printed: Q, tau² = max(0, (Q - (k-1)) / c), I² = max(0, (Q - (k-1)) / Q)."""
    k = y.size
    w = 1.0 / v
    mu_fe = float(np.sum(w * y) / np.sum(w))
    q = float(np.sum(w * (y - mu_fe) ** 2))
    c = float(np.sum(w) - np.sum(w**2) / np.sum(w))
    tau2 = max(0.0, (q - (k - 1)) / c)
    w_re = 1.0 / (v + tau2)
    mu = float(np.sum(w_re * y) / np.sum(w_re))
    se = math.sqrt(1.0 / float(np.sum(w_re)))
    half = student_t.ppf(0.5 + ci / 2.0, k - 2) * math.sqrt(tau2 + se**2)
    return {"q": q, "tau2": tau2, "i2": max(0.0, (q - (k - 1)) / q), "pooled": mu, "se": se,
            "pi_low": mu - half, "pi_high": mu + half}


def test_homogeneous_hospitals_truncate_tau2_and_i2_at_zero() -> None:
    # Issue 27: three external AUCs 0.861, 0.862, 0.860 with realistic bootstrap SEs; Q << k - 1, so the untruncated
    # DerSimonian-Laird tau² is negative and sqrt(tau² + se²) used to raise "math domain error".
    aucs = np.array([0.861, 0.862, 0.860])
    eff, var = logit(aucs), logit_variance(aucs, [0.025, 0.030, 0.028])
    ref = _hand_written_dl(eff, var)
    assert ref["q"] < 2 and ref["tau2"] == 0.0 and ref["i2"] == 0.0  # the homogeneous case, by construction
    res = random_effects(eff, var)
    assert res.tau2 == 0.0 and res.i2 == 0.0
    assert res.pooled == pytest.approx(ref["pooled"], abs=1e-12)
    assert res.se == pytest.approx(ref["se"], abs=1e-12)
    assert (res.pi_low, res.pi_high) == pytest.approx((ref["pi_low"], ref["pi_high"]), abs=1e-12)
    assert res.ci_low < res.pooled < res.ci_high


def test_i2_never_negative_over_simulated_homogeneous_meta_analyses() -> None:
    rng = np.random.default_rng(27)
    for _ in range(200):
        var = rng.uniform(0.02, 0.1, size=3)
        eff = 1.8 + rng.normal(scale=np.sqrt(var))
        res, ref = random_effects(eff, var), _hand_written_dl(eff, var)
        assert res.tau2 == pytest.approx(ref["tau2"], abs=1e-12) and res.i2 == pytest.approx(ref["i2"], abs=1e-12)
        assert res.pi_low == pytest.approx(ref["pi_low"], abs=1e-10)


def test_coverage_check_adds_the_held_out_hospitals_own_sampling_variance() -> None:
    # Issue 27: the prediction interval is for the next hospital's true logit AUC; the held-out AUC is measured with
    # its own error v_i, so it is compared with mu +- t_{k-2} sqrt(tau² + se² + v_i). Reference: statsmodels'
    # DerSimonian-Laird fit of the four others (tau² > 0 here, so no truncation is involved) and that formula.
    others, others_se = [0.80, 0.82, 0.78, 0.81], [0.01, 0.012, 0.011, 0.01]
    held, held_se = 0.70, 0.04  # a noisy hospital: outside the interval for a true AUC, inside once v_i counts
    eff, var = logit(others), logit_variance(others, others_se)
    ref = combine_effects(eff, var, method_re="dl")
    assert ref.tau2 > 0
    t975 = student_t.ppf(0.975, 2)
    narrow = expit(ref.mean_effect_re - t975 * math.sqrt(ref.tau2 + ref.sd_eff_w_re**2))
    half = t975 * math.sqrt(ref.tau2 + ref.sd_eff_w_re**2 + float(logit_variance(held, held_se)))
    assert held < narrow  # the old check said "outside"
    checks = leave_one_out_coverage([*others, held], [*others_se, held_se], ["a", "b", "c", "d", "e"]).iloc[4]
    assert (checks["pi_low"], checks["pi_high"]) == pytest.approx(
        (expit(ref.mean_effect_re - half), expit(ref.mean_effect_re + half)), abs=1e-12
    )
    assert bool(checks["inside"]) is True
