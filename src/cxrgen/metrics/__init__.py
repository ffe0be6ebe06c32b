"""Evaluation statistics on numpy arrays: AUC, ROC, patient-clustered bootstrap, DeLong, calibration.

Every function here is pure: arrays in, numbers or frozen dataclasses out, no I/O, no torch, no global random
state (randomness comes from a seeded :class:`numpy.random.Generator` built inside the call).

Conventions shared by all functions:

* ``y`` holds ground truth in {0, 1} or NaN. NaN means "label not available for this image" (blank or
  uncertain under an ``ignore`` policy); such images are masked out of that label only.
* ``p`` holds predicted probabilities (any monotone score works for AUC; calibration needs [0, 1]). ``p``
  must be finite wherever ``y`` is not NaN.
* A label whose masked ``y`` holds only one class has no AUC: the result is NaN and a
  :class:`OneClassWarning` is issued, never 0 and never an exception (MONAI's convention).

Why hand-written code instead of a library:

* The DeLong variance and tests (DeLong, DeLong & Clarke-Pearson 1988) are implemented with the fast midrank
  algorithm of Sun & Xu (2014), "Fast implementation of DeLong's algorithm for comparing the areas under
  correlated receiver operating characteristic curves", IEEE Signal Processing Letters 21(11):1389-1393. No
  maintained Python library (scikit-learn, scipy, statsmodels) provides DeLong's variance or the paired test.
* Chest X-ray test sets hold several images per patient, and images of one patient are correlated; an
  image-level bootstrap therefore gives intervals that are too narrow. The bootstrap here resamples
  *patients* with replacement and keeps all of their images (a clustered bootstrap). scipy's ``bootstrap``
  resamples observations, not clusters, and recomputing ``roc_auc_score`` per resample is two orders of
  magnitude too slow for 1,000 resamples x 45k images x several labels; here a resample of patients is
  expressed as integer weights per image (the multiplicity of its patient) and the weighted Mann-Whitney
  AUC of all resamples is computed at once from a single sort of the scores.
"""

from cxrgen.metrics._arrays import OneClassWarning
from cxrgen.metrics.auc import RocCurve, auc_per_label, roc_auc, roc_curve_points, weighted_auc
from cxrgen.metrics.bootstrap import (
    BootstrapResult,
    PatientResample,
    clustered_bootstrap_auc,
    patient_bootstrap_weights,
    patient_resample,
)
from cxrgen.metrics.calibration import (
    CalibrationFit,
    ReliabilityCurve,
    brier_score,
    calibration_fit,
    expected_calibration_error,
    reliability_curve,
)
from cxrgen.metrics.delong import (
    DelongResult,
    PairedTestResult,
    SingleImageClassWarning,
    UnpairedTestResult,
    delong,
    delong_paired_test,
    holm,
    midrank,
    unpaired_auc_test,
)

__all__ = [
    "BootstrapResult",
    "CalibrationFit",
    "DelongResult",
    "OneClassWarning",
    "PairedTestResult",
    "PatientResample",
    "ReliabilityCurve",
    "RocCurve",
    "SingleImageClassWarning",
    "UnpairedTestResult",
    "auc_per_label",
    "brier_score",
    "calibration_fit",
    "clustered_bootstrap_auc",
    "delong",
    "delong_paired_test",
    "expected_calibration_error",
    "holm",
    "midrank",
    "patient_bootstrap_weights",
    "patient_resample",
    "reliability_curve",
    "roc_auc",
    "roc_curve_points",
    "unpaired_auc_test",
    "weighted_auc",
]
