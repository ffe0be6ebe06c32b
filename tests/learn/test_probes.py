"""Linear probes: the regularization chosen on validation AUC, predictions equal to scikit-learn's own fit."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from cxrgen.learn.probes import fit_label_probe, fit_probes, predict_probes

CS = [1e-3, 1e-2, 1e-1, 1.0, 10.0]


def _data(seed: int, n: int = 300, dim: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float16)
    logits = x[:, :3].astype(np.float64) @ np.array([1.5, -1.0, 0.5]) - 0.7
    y = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(np.float64)
    y2 = (rng.random(n) < 1 / (1 + np.exp(-x[:, 5].astype(np.float64) * 2))).astype(np.float64)
    return x, np.stack([y, y2], axis=1)


def test_predictions_equal_scikit_learn_fitted_on_the_same_arrays() -> None:
    x_train, y_train = _data(0)
    x_val, y_val = _data(1)
    x_test, _ = _data(2)
    y_train[::7, 0] = np.nan  # masked rows leave the fit
    probes = fit_probes(["a", "b"], x_train, y_train, x_val, y_val, CS, class_weight="balanced")
    p = predict_probes(probes, x_test)
    assert p.shape == (300, 2)
    for j, probe in enumerate(probes):
        keep = ~np.isnan(y_train[:, j])
        xt = x_train[keep].astype(np.float32)
        # The chosen C is the argmax of validation AUC over the grid (smallest C on ties), computed here by hand.
        aucs = []
        for C in CS:
            scaler = StandardScaler().fit(xt)
            model = LogisticRegression(C=C, class_weight="balanced", max_iter=1000, random_state=0)
            model.fit(scaler.transform(xt), y_train[keep, j].astype(int))
            scores = model.predict_proba(scaler.transform(x_val.astype(np.float32)))[:, 1]
            aucs.append(roc_auc_score(y_val[:, j], scores))
        best = CS[int(np.argmax(aucs))]
        chosen = probe.C
        assert chosen == best
        assert probe.val_auc == pytest.approx(dict(zip(CS, aucs, strict=True)), abs=1e-12)
        scaler = StandardScaler().fit(xt)
        reference = LogisticRegression(C=best, class_weight="balanced", max_iter=1000, random_state=0)
        reference.fit(scaler.transform(xt), y_train[keep, j].astype(int))
        expected = reference.predict_proba(scaler.transform(x_test.astype(np.float32)))[:, 1]
        np.testing.assert_allclose(p[:, j], expected, rtol=0, atol=1e-12)
    # the signal is found: label a depends on the first three features, b on the sixth
    _, y_test = _data(2)
    assert roc_auc_score(y_test[:, 0], p[:, 0]) > 0.75 and roc_auc_score(y_test[:, 1], p[:, 1]) > 0.75


def test_class_weight_changes_the_fit() -> None:
    x_train, y_train = _data(0)
    x_val, y_val = _data(1)
    plain = fit_label_probe("a", x_train, y_train[:, 0], x_val, y_val[:, 0], [1.0])
    balanced = fit_label_probe("a", x_train, y_train[:, 0], x_val, y_val[:, 0], [1.0], class_weight="balanced")
    # balanced weights move the intercept towards the minority class: the mean prediction approaches 0.5
    prevalence = float(np.nanmean(y_train[:, 0]))
    assert prevalence < 0.45
    assert plain.predict(x_val).mean() == pytest.approx(prevalence, abs=0.05)
    assert balanced.predict(x_val).mean() > plain.predict(x_val).mean() + 0.05


def test_one_class_in_training_predicts_the_prevalence_with_a_warning() -> None:
    x_train, _ = _data(0)
    x_val, y_val = _data(1)
    with pytest.warns(RuntimeWarning, match="probe a: training rows hold one class"):
        probe = fit_label_probe("a", x_train, np.zeros(len(x_train)), x_val, y_val[:, 0], CS)
    assert probe.model is None and np.isnan(probe.C)
    np.testing.assert_array_equal(probe.predict(x_val), np.zeros(len(x_val)))


def test_one_class_in_validation_takes_the_middle_c_with_a_warning() -> None:
    x_train, y_train = _data(0)
    x_val, _ = _data(1)
    with pytest.warns(RuntimeWarning, match="validation rows hold one class"):
        probe = fit_label_probe("a", x_train, y_train[:, 0], x_val, np.ones(len(x_val)), CS)
    assert probe.C == 1e-1
    assert all(np.isnan(v) for v in probe.val_auc.values())
