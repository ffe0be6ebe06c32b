"""Operating points, calibration and prior shift, subgroups and the device shortcut on planted synthetic data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from cxrgen.metrics import clustered_bootstrap_auc, expected_calibration_error, patient_bootstrap_weights, weighted_auc
from cxrgen.shift.calibration_shift import apply_temperature, em_prior_shift, fit_temperature
from cxrgen.shift.operating_points import choose_threshold, operating_point
from cxrgen.shift.shortcut import MIN_NEGATIVES, device_shortcut
from cxrgen.shift.subgroups import MIN_PER_CLASS, subgroup_gaps, subgroup_table


def _scores(rng: np.random.Generator, n: int, prevalence: float, train_prevalence: float, mu: float = 1.0):
    """Truth at ``prevalence``; posteriors exactly calibrated for ``train_prevalence`` (x ~ N(+-mu, 1))."""
    y = (rng.random(n) < prevalence).astype(float)
    x = rng.normal(np.where(y == 1, mu, -mu), 1.0)
    prior_logit = np.log(train_prevalence / (1 - train_prevalence))
    return y, expit(prior_logit + 2 * mu * x)


def test_bootstrap_weights_are_the_auc_bootstrap_resamples() -> None:
    rng = np.random.default_rng(1)
    patients = rng.integers(0, 60, size=300)
    y = (rng.random(300) < 0.3).astype(float)
    p = rng.random(300) + 0.3 * y
    boot = clustered_bootstrap_auc(y, p, patients, n_boot=130, seed=7)
    weights = np.vstack(list(patient_bootstrap_weights(patients, n_boot=130, seed=7)))
    assert weights.shape == (130, 300)
    np.testing.assert_allclose(weighted_auc(y, p, weights), boot.samples[:, 0], rtol=0, atol=1e-12)


def test_operating_point_matches_sklearn_confusion_matrix() -> None:
    rng = np.random.default_rng(2)
    n = 500
    y = (rng.random(n) < 0.25).astype(float)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    y[:7] = np.nan
    patients = rng.integers(0, 150, size=n)
    threshold = 0.5
    point = operating_point(y, p, patients, threshold, n_boot=200, seed=0)
    keep = ~np.isnan(y)
    tn, fp, fn, tp = confusion_matrix(y[keep], (p[keep] >= threshold).astype(float)).ravel()
    assert (point.tp, point.fp, point.tn, point.fn) == (tp, fp, tn, fn)
    assert point.values["sensitivity"][0] == pytest.approx(tp / (tp + fn), abs=1e-15)
    assert point.values["specificity"][0] == pytest.approx(tn / (tn + fp), abs=1e-15)
    assert point.values["ppv"][0] == pytest.approx(tp / (tp + fp), abs=1e-15)
    assert point.values["npv"][0] == pytest.approx(tn / (tn + fn), abs=1e-15)
    for value, low, high in point.values.values():
        assert low < value < high


def test_thresholds_youden_and_sensitivity90() -> None:
    rng = np.random.default_rng(3)
    y, p = _scores(rng, 2000, 0.3, 0.3)
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    youden = choose_threshold(y, p, "youden")
    assert youden == thr[np.argmax(tpr - fpr)]
    t90 = choose_threshold(y, p, "sensitivity90")
    sens = lambda t: ((p >= t) & (y == 1)).sum() / (y == 1).sum()  # noqa: E731
    assert sens(t90) >= 0.9
    assert sens(np.nextafter(t90, 2.0)) < 0.9  # the highest threshold keeping the promise
    assert np.isnan(choose_threshold(np.zeros(5), np.arange(5.0), "youden"))


def test_em_recovers_planted_prevalence_and_keeps_auc() -> None:
    rng = np.random.default_rng(4)
    y_val, p_val = _scores(rng, 20000, 0.10, 0.10)
    y_away, p_away = _scores(rng, 20000, 0.40, 0.10)
    train_prevalence = float(y_val.mean())
    result = em_prior_shift(p_away, train_prevalence)
    assert result.converged
    assert abs(result.prevalence - y_away.mean()) < 0.03
    assert abs(float(p_away.mean()) - y_away.mean()) > 0.1  # uncorrected, the model misses the shift badly
    assert abs(roc_auc_score(y_away, result.adjusted) - roc_auc_score(y_away, p_away)) < 1e-12
    brier = lambda q: float(np.mean((q - y_away) ** 2))  # noqa: E731
    assert brier(result.adjusted) < brier(p_away)
    # no shift: the estimate stays at home
    home = em_prior_shift(p_val, train_prevalence)
    assert abs(home.prevalence - y_val.mean()) < 0.03


def test_temperature_scaling_lowers_ece_of_an_overconfident_model_and_keeps_auc() -> None:
    rng = np.random.default_rng(5)
    y, p_true = _scores(rng, 8000, 0.3, 0.3, mu=0.6)
    overconfident = expit(3.0 * np.log(p_true / (1 - p_true)))
    temperature = fit_temperature(y[:4000], overconfident[:4000])
    assert temperature == pytest.approx(3.0, rel=0.15)
    scaled = apply_temperature(overconfident[4000:], temperature)
    before = expected_calibration_error(y[4000:], overconfident[4000:])
    after = expected_calibration_error(y[4000:], scaled)
    assert after < before / 3
    assert abs(roc_auc_score(y[4000:], scaled) - roc_auc_score(y[4000:], overconfident[4000:])) < 1e-12
    assert np.isnan(fit_temperature(np.ones(4), np.full(4, 0.7)))


def test_shortcut_detected_when_devices_raise_negative_scores_and_absent_otherwise() -> None:
    rng = np.random.default_rng(6)
    n = 3000
    y = (rng.random(n) < 0.2).astype(float)
    device = (rng.random(n) < 0.3).astype(float)
    patients = np.arange(n) // 2
    base = rng.normal(0.3 + 0.4 * y, 0.15)
    shortcut = device_shortcut(y, base + 0.25 * device, device, patients, 0.5, n_boot=300)
    assert shortcut.detected
    negatives = y == 0
    expected = ((base + 0.25 * device >= 0.5) & negatives & (device == 1)).sum() / (negatives & (device == 1)).sum()
    assert shortcut.fpr_device[0] == pytest.approx(expected, abs=1e-15)
    assert shortcut.n_neg_device + shortcut.n_neg_no_device == negatives.sum()
    control = device_shortcut(y, base, device, patients, 0.5, n_boot=300)
    assert not control.detected
    assert control.difference[1] < 0 < control.difference[2]
    assert shortcut.status == control.status == "ok"
    # The same strong effect on a handful of device negatives: rates are given, the verdict is "too few".
    few = np.zeros(n)
    few[np.flatnonzero((device == 1) & (y == 0))[: MIN_NEGATIVES - 1]] = 1.0
    small = device_shortcut(y, base + 0.25 * few, few, patients, 0.5, n_boot=300)
    assert small.n_neg_device < MIN_NEGATIVES and small.status == "too few" and not small.detected
    assert small.fpr_device[0] > small.fpr_no_device[0]


@pytest.mark.slow  # about 50 s on the shared 2-core machine (many bootstrapped subgroups)
def test_subgroup_counts_equal_the_manifest_and_small_groups_are_too_few() -> None:
    rng = np.random.default_rng(7)
    n = 1200
    manifest = pd.DataFrame(
        {
            "image_id": [f"d:{i}" for i in range(n)],
            "patient_id": [f"d:{i // 3}" for i in range(n)],
            "sex": rng.choice(["M", "F", "U"], size=n, p=[0.5, 0.45, 0.05]),
            "age": rng.uniform(18, 95, size=n),
            "view": rng.choice(["PA", "AP", "LATERAL", "LL"], size=n, p=[0.5, 0.3, 0.18, 0.02]),
            "device": rng.choice([1.0, 0.0, np.nan], size=n, p=[0.2, 0.75, 0.05]),
        }
    )
    y = (rng.random(n) < 0.3).astype(float)
    p = rng.random(n) + 0.4 * y
    columns = {"image_id": manifest["image_id"], "patient_id": manifest["patient_id"], "y_Cardiomegaly": y}
    predictions = pd.DataFrame({**columns, "p_Cardiomegaly": p}).iloc[::-1]  # a file in another order
    frame = predictions.merge(manifest.drop(columns="patient_id"), on="image_id", validate="one_to_one")
    table = subgroup_table(frame, ["Cardiomegaly"], n_boot=50).set_index(["family", "subgroup"])
    man = manifest.assign(y=y)
    for sex in ("M", "F"):
        assert table.loc[("sex", sex), "n_images"] == (man["sex"] == sex).sum()
        assert table.loc[("sex", sex), "n_pos"] == ((man["sex"] == sex) & (man["y"] == 1)).sum()
        assert table.loc[("sex", sex), "n_patients"] == man.loc[man["sex"] == sex, "patient_id"].nunique()
    assert table.loc[("age", "40-59"), "n_images"] == ((man["age"] >= 40) & (man["age"] < 60)).sum()
    assert table.loc[("age", ">=80"), "n_images"] == (man["age"] >= 80).sum()
    assert table.loc[("view", "LATERAL"), "n_images"] == (man["view"] == "LATERAL").sum()
    assert ("view", "LL") not in table.index
    assert table.loc[("device", "device"), "n_images"] == (man["device"] == 1).sum()
    assert table.loc[("device", "no device"), "n_neg"] == ((man["device"] == 0) & (man["y"] == 0)).sum()
    with_points = subgroup_table(frame, ["Cardiomegaly"], n_boot=50, thresholds={"Cardiomegaly": 0.7})
    male = with_points.set_index(["family", "subgroup"]).loc[("sex", "M")]
    is_male = frame["sex"] == "M"
    tn, fp, fn, tp = confusion_matrix(
        frame.loc[is_male, "y_Cardiomegaly"], frame.loc[is_male, "p_Cardiomegaly"] >= 0.7
    ).ravel()
    assert male["sensitivity"] == pytest.approx(tp / (tp + fn), abs=1e-15)
    assert male["specificity_low"] < male["specificity"] == pytest.approx(tn / (tn + fp), abs=1e-15)
    ok = table.loc[("sex", "M")]
    assert ok["status"] == "ok" and ok["ci_low"] < ok["auc"] < ok["ci_high"]
    small = subgroup_table(frame.iloc[:60], ["Cardiomegaly"], n_boot=10)
    assert (small.loc[small["n_pos"] < MIN_PER_CLASS, "status"] == "too few").all()
    assert small.loc[small["status"] == "too few", "auc"].isna().all()
    gaps = subgroup_gaps(table.reset_index(), table.reset_index())
    assert np.allclose(gaps.dropna(subset=["gap"])["gap"], 0.0)
    assert gaps["p_holm"].dropna().between(0, 1).all()


def test_borderline_trend_finds_errors_near_the_borderline_and_not_otherwise() -> None:
    from cxrgen.shift.borderline import borderline_trend

    rng = np.random.default_rng(8)
    n = 2000
    ctr = rng.uniform(0.36, 0.64, size=n)
    ctr[::10] = np.nan  # laterals: left out
    patients = np.arange(n) // 2
    distance = np.abs(ctr - 0.5)
    near = (rng.random(n) < np.clip(0.5 - 4 * distance, 0.02, 1)).astype(float)
    trend = borderline_trend(near, ctr, patients, n_boot=300)
    assert trend.slope[2] < 0 and trend.p < 0.01
    bands = trend.bands.set_index("band")
    labelled = ~np.isnan(ctr)
    first = labelled & (distance < 0.025)
    assert bands.loc["0-0.025", "n_images"] == first.sum()
    assert bands.loc["0-0.025", "error_rate"] == pytest.approx(near[first].mean(), abs=1e-15)
    assert bands["n_images"].sum() == labelled.sum()
    flat = borderline_trend((rng.random(n) < 0.2).astype(float), ctr, patients, n_boot=300)
    assert flat.slope[1] < 0 < flat.slope[2]
