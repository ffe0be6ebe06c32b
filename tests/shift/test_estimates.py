"""Label-free estimates (issue 24) on planted scores: recovery where the methods' assumptions hold, a raised flag
where they break, and the exact expected AUC against a brute-force double loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxrgen.shift.estimates import (
    METHODS,
    agreement_on_the_line,
    estimate_label,
    expected_auc,
    fit_home,
    true_values,
    trust_signals,
)


def _value(estimates: list, method: str, metric: str, rule: str = "") -> float:
    (hit,) = [e.estimate for e in estimates if (e.method, e.metric, e.rule) == (method, metric, rule)]
    return float(hit)


def test_expected_auc_equals_the_pairwise_definition() -> None:
    rng = np.random.default_rng(3)
    s = np.round(rng.random(9), 1)  # ties on purpose
    q = rng.random(9)
    num = den = 0.0
    for i, j in itertools.permutations(range(9), 2):
        pair = q[i] * (1 - q[j])
        den += pair
        num += pair * (1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0)
    assert expected_auc(s, q)[0] == pytest.approx(num / den, rel=1e-12)
    # weights = multiplicities: the same as repeating images, less the pairs of an image with its own copy
    w = rng.integers(0, 3, size=9).astype(float)
    assert np.isfinite(expected_auc(s, q, w[None, :])[0])


def test_cbpe_recovers_auc_on_calibrated_scores() -> None:
    """p ~ Beta(0.7, 1.2), y ~ Bernoulli(p): the expected AUC equals the true AUC in expectation."""
    rng = np.random.default_rng(0)
    p_home = rng.beta(0.7, 1.2, 20000)  # a large home set: its fitted temperature is within 0.02 of 1
    home = fit_home((rng.random(20000) < p_home).astype(float), p_home)
    assert home is not None
    errors = []
    for _ in range(60):
        p = rng.beta(0.7, 1.2, 1500)
        y = (rng.random(1500) < p).astype(float)
        est = estimate_label(home, p, np.arange(1500), ["cbpe"], n_boot=0)
        errors.append(_value(est, "cbpe", "auc") - roc_auc_score(y, p))
    mc_se = np.std(errors, ddof=1) / np.sqrt(len(errors))
    assert abs(np.mean(errors)) < 3 * mc_se + 3e-3  # within Monte Carlo error (plus the home fit's T != 1)
    assert np.mean(np.abs(errors)) < 0.02


def _latent_world(rng: np.random.Generator, n: int, mean: float, sd: float) -> tuple[np.ndarray, np.ndarray]:
    """Covariate shift: x ~ N(mean, sd) moves, P(y | x) = sigmoid(2.5 x) stays; the score is that probability."""
    p = 1 / (1 + np.exp(-2.5 * rng.normal(mean, sd, n)))
    return (rng.random(n) < p).astype(float), p


def test_atc_recovers_accuracy_on_a_covariate_shift() -> None:
    rng = np.random.default_rng(1)
    home = fit_home(*_latent_world(rng, 5000, 0.0, 1.0))
    assert home is not None
    y, p = _latent_world(rng, 5000, 1.0, 1.0)
    est = estimate_label(home, p, np.arange(5000), ["atc", "doc", "cm_atc"], n_boot=50)
    truth = true_values(home, y, p)[("accuracy", "youden")]
    home_error = abs(truth - float(np.mean((home.p >= home.thresholds["youden"]) == home.y)))
    assert home_error > 0.04  # the shift matters: "as accurate as at home" is off by this much
    for method in ("atc", "cm_atc", "doc"):
        error = abs(_value(est, method, "accuracy", "youden") - truth)
        assert error < 0.03 and error < 0.5 * home_error, (method, error, home_error)
    atc = next(e for e in est if (e.method, e.metric) == ("atc", "accuracy"))
    assert atc.ci_low <= atc.estimate <= atc.ci_high


def test_every_method_gives_finite_estimates_and_intervals() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(800) < 0.3).astype(float)
    p = 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + rng.normal(size=800))))
    home = fit_home(y[:400], p[:400], "isotonic")
    assert home is not None
    est = estimate_label(home, p[400:], np.arange(400) // 2, list(METHODS), n_boot=40)
    assert {e.method for e in est} == set(METHODS)
    assert {("auc", "") for _ in METHODS} <= {(e.metric, e.rule) for e in est}
    for e in est:
        assert np.isfinite(e.estimate) and e.ci_low <= e.ci_high, e


def _shortcut_world(rng: np.random.Generator, n: int, device_pos: float, device_neg: float) -> tuple:
    """A finding with a weak real signal and a device that pushes the score up (the learned shortcut)."""
    y = (rng.random(n) < 0.3).astype(float)
    device = rng.random(n) < np.where(y == 1, device_pos, device_neg)
    logit = 0.6 * (2 * y - 1) + 2.5 * device + rng.normal(size=n) - 1.0
    return y, 1 / (1 + np.exp(-logit))


def test_the_reversed_shortcut_raises_the_flag() -> None:
    """Home: the device sits on positives. Control away: the same. Reversed away: it sits on negatives."""
    rng = np.random.default_rng(4)
    home = fit_home(*_shortcut_world(rng, 4000, 0.8, 0.1))
    assert home is not None
    groups = np.arange(3000)
    flags = {}
    for world, (dp, dn) in {"control": (0.8, 0.1), "reversed": (0.1, 0.8)}.items():
        y, p = _shortcut_world(rng, 3000, dp, dn)
        est = estimate_label(home, p, groups, list(METHODS), n_boot=0)
        flags[world] = trust_signals(home, p, est)
        if world == "reversed":  # the silent failure the flag exists for: CBPE stays far above the truth
            assert _value(est, "cbpe", "auc") - roc_auc_score(y, p) > 0.2
    assert not flags["control"].flag, flags["control"]
    assert flags["reversed"].flag and "prevalence" in flags["reversed"].reasons, flags["reversed"]


def test_agreement_on_the_line_follows_accuracy() -> None:
    """Four models of growing skill lose signal away on one shared line: ALine-S recovers their accuracies."""
    rng = np.random.default_rng(5)
    m = n = 4000
    y_home, y_away = (rng.random(m) < 0.4).astype(float), (rng.random(n) < 0.4).astype(float)
    shared_home, shared_away = rng.normal(size=m), rng.normal(size=n)
    home_pred, away_pred = [], []
    for skill in (0.5, 1.0, 1.5, 2.0):
        home_pred.append((skill * (2 * y_home - 1) + 0.5 * shared_home + rng.normal(size=m)) > 0)
        away_pred.append((0.6 * skill * (2 * y_away - 1) + 0.5 * shared_away + rng.normal(size=n)) > 0)
    result = agreement_on_the_line(home_pred, y_home, away_pred, np.arange(n), n_boot=20)
    assert result is not None
    truth = [float(np.mean(pred == y_away)) for pred in away_pred]
    home_accuracy = [float(np.mean(pred == y_home)) for pred in home_pred]
    errors = np.abs(np.array([r[0] for r in result]) - truth)
    assert errors.max() < 0.06
    assert errors.mean() < 0.5 * np.abs(np.array(home_accuracy) - truth).mean()  # far better than "as at home"
    assert agreement_on_the_line(home_pred[:1], y_home, away_pred[:1], np.arange(n)) is None


def test_the_flag_reads_its_signals_from_the_robust_methods_and_cbpe() -> None:
    """``atc``/``cm_atc`` AUCs are left out of the spread; the prevalence signal and expected_se follow CBPE."""
    from cxrgen.shift.estimates import (
        MAX_PREVALENCE_ODDS,
        MAX_SPREAD,
        SPREAD_METHODS,
        Estimate,
        hanley_mcneil_se,
    )

    assert hanley_mcneil_se(0.8, 50, 50) == pytest.approx(0.0445, abs=5e-4)  # Hanley & McNeil (1982), eq. 2
    rng = np.random.default_rng(6)
    y = (rng.random(2000) < 0.3).astype(float)
    p = 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + rng.normal(size=2000))))
    home = fit_home(y, p)
    assert home is not None
    mean_q = float(np.mean(home.q))

    def signals(aucs: dict[str, float], prevalence: float) -> object:
        est = [Estimate(m, "auc", "", v, np.nan, np.nan) for m, v in aucs.items()]
        est.append(Estimate("cbpe", "prevalence", "", prevalence, np.nan, np.nan))
        return trust_signals(home, p[:100], est)

    calm = signals({"cbpe": 0.80, "doc": 0.84, "cm_doc": 0.78, "em_prevalence": 0.81, "atc": 0.0, "cm_atc": 1.0},
                   mean_q)  # fmt: skip
    assert set(SPREAD_METHODS) == {"cbpe", "doc", "cm_doc", "em_prevalence"}
    assert calm.spread == pytest.approx(0.06) and calm.prevalence_odds == pytest.approx(1.0) and not calm.flag
    assert calm.expected_se == pytest.approx(hanley_mcneil_se(0.80, mean_q * 100, (1 - mean_q) * 100))
    apart = signals({"cbpe": 0.80, "doc": 0.80 + MAX_SPREAD + 0.01}, mean_q)
    assert apart.reasons == ("spread",)
    odds = MAX_PREVALENCE_ODDS * 1.1 * mean_q / (1 - mean_q)
    moved = signals({"cbpe": 0.80}, odds / (1 + odds))
    assert moved.reasons == ("prevalence",) and moved.prevalence_odds == pytest.approx(MAX_PREVALENCE_ODDS * 1.1)


def test_score_shift_rises_when_a_shortcut_reverses_and_stays_down_when_nothing_changes() -> None:
    """A device on 80 % of home positives (5 % of negatives) moves to 80 % of target negatives (2 % of positives):
    the scores' mean, range and the methods' agreement stay within their limits, the distribution's shape does not
    (Kolmogorov-Smirnov D); a fresh draw of home raises nothing."""
    from scipy.stats import ks_2samp

    from cxrgen.shift.estimates import MAX_SCORE_SHIFT, TrustSignals

    rng = np.random.default_rng(11)

    def draw(n: int, device_if_positive: float, device_if_negative: float) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.random(n) < 0.1).astype(float)
        device = rng.random(n) < np.where(y > 0, device_if_positive, device_if_negative)
        return y, 1 / (1 + np.exp(-(3.0 * y + 1.5 * device - 3.0 + rng.normal(size=n))))

    y, p = draw(3000, 0.8, 0.05)
    home = fit_home(y, p)
    assert home is not None
    same_y, same = draw(1500, 0.8, 0.05)
    rev_y, rev = draw(1500, 0.02, 0.8)

    def signals(target: np.ndarray) -> tuple[TrustSignals, float]:
        found = estimate_label(home, target, np.arange(target.size), ["cbpe", "doc", "em_prevalence"], n_boot=0)
        return trust_signals(home, target, found), _value(found, "cbpe", "auc")

    (calm, calm_cbpe), (moved, moved_cbpe) = signals(same), signals(rev)
    assert calm.score_shift < 0.1 and not calm.flag, calm
    assert abs(calm_cbpe - roc_auc_score(same_y, same)) < 0.02  # nothing changed: the estimate holds
    assert moved.score_shift == pytest.approx(ks_2samp(home.p, rev).statistic)
    assert moved.score_shift > MAX_SCORE_SHIFT and moved.reasons == ("score_shift",), moved
    true_auc = roc_auc_score(rev_y, rev)
    assert true_auc < home.auc - 0.1 and moved_cbpe - true_auc > 0.05  # the failure only score_shift catches


def test_cm_auc_is_nan_with_a_reason_when_the_curve_degenerates() -> None:
    """No target score reaches the home cut-off of CM-ATC's predicted positives: no expected true positive at any
    threshold, so the curve lies on the x-axis; its area would be 0 from the added corner (1, 1) alone."""
    from cxrgen.shift.estimates import NO_CURVE

    rng = np.random.default_rng(5)
    y = (rng.random(2000) < 0.2).astype(float)
    p = 1 / (1 + np.exp(-(2.0 * y - 2.0 + rng.normal(size=2000))))
    home = fit_home(y, p)
    assert home is not None
    low = np.quantile(p, 0.3) * rng.random(500)  # every target score below home's 30th percentile
    found = estimate_label(home, low, np.arange(500), ["cm_atc", "cm_doc"], n_boot=20)
    auc = {e.method: e for e in found if e.metric == "auc"}
    assert np.isnan(auc["cm_atc"].estimate) and auc["cm_atc"].note == NO_CURVE
    assert np.isnan(auc["cm_atc"].ci_low)  # every resample degenerate as well
    normal = estimate_label(home, p[:500], np.arange(500), ["cm_atc"], n_boot=0)
    fine = next(e for e in normal if e.metric == "auc")
    assert 0.6 < fine.estimate < 1.0 and fine.note == ""
