"""Calibration slope, intercept and O/E against statsmodels' logistic regression (issue 26)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.stats import norm

from cxrgen.metrics import calibration_fit


def _data(n: int, seed: int, shrink: float, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes from true risks; predictions that are too extreme (shrink < 1) and shifted on the logit scale."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(-0.8, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(float)
    p = 1 / (1 + np.exp(-(true_logit / shrink + shift)))
    return y, p


@pytest.mark.parametrize(("seed", "shrink", "shift"), [(0, 0.7, 0.4), (1, 1.3, -0.5), (2, 1.0, 0.0)])
def test_slope_and_intercept_equal_statsmodels(seed: int, shrink: float, shift: float) -> None:
    y, p = _data(400, seed, shrink, shift)
    lp = np.log(p / (1 - p))
    fit = calibration_fit(y, p, ci=0.95)
    slope_model = sm.Logit(y, sm.add_constant(lp)).fit(disp=0)
    low, high = slope_model.conf_int(alpha=0.05)[1]
    assert fit.slope == pytest.approx((slope_model.params[1], low, high), rel=1e-7, abs=1e-9)
    citl = sm.Logit(y, np.ones((len(y), 1)), offset=lp).fit(disp=0)
    low0, high0 = citl.conf_int(alpha=0.05)[0]
    assert fit.intercept == pytest.approx((citl.params[0], low0, high0), rel=1e-7, abs=1e-9)
    # O/E by hand, interval exp(log(O/E) +- z / sqrt(O))
    o, e = y.sum(), p.sum()
    half = norm.ppf(0.975) / math.sqrt(o)
    assert fit.o_e == pytest.approx((o / e, o / e * math.exp(-half), o / e * math.exp(half)), rel=1e-12)
    assert fit.n == 400 and fit.note == ""


def test_well_calibrated_predictions_have_slope_near_one() -> None:
    y, p = _data(20000, 5, 1.0, 0.0)
    fit = calibration_fit(y, p)
    assert fit.slope[1] < 1 < fit.slope[2] and fit.intercept[1] < 0 < fit.intercept[2]


def test_nan_labels_are_masked_and_undefined_is_nan_with_a_reason() -> None:
    y, p = _data(200, 3, 0.8, 0.2)
    y_nan = y.copy()
    y_nan[:20] = np.nan
    assert calibration_fit(y_nan, p).slope == pytest.approx(calibration_fit(y[20:], p[20:]).slope)
    one_class = calibration_fit(np.zeros(50), p[:50])
    assert math.isnan(one_class.slope[0]) and math.isnan(one_class.intercept[0])
    assert one_class.o_e[0] == 0.0 and math.isnan(one_class.o_e[1]) and "one class" in one_class.note
    nothing = calibration_fit(np.full(10, np.nan), p[:10])
    assert nothing.n == 0 and math.isnan(nothing.o_e[0]) and nothing.note == "no labelled image"
    separated = calibration_fit(np.array([0, 0, 0, 1, 1, 1.0]), np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]))
    assert math.isnan(separated.slope[0]) and "separation" in separated.note
