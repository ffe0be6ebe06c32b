"""Label protocols as an axis: the same predictions re-scored under other ways of reading the raw labels.

The study's own protocol (its per-label uncertainty policy and blank policy) is one choice among several; a
finding's AUC can move with the protocol alone, without any retraining. A protocol here either overrides the
blank policy or the uncertainty policy of every label, applied to the manifest's raw ``{1, 0, -1, NaN}`` labels
(images without a label row stay NaN under every protocol), or swaps MIMIC's label file (``mimic_*``: the
CheXpert or NegBio labeler, or the radiologists' test-set labels, read by :mod:`cxrgen.shift.label_files`) under
the study's own policies.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from cxrgen.metrics import PatientResample, patient_resample
from cxrgen.metrics.auc import SortedScores
from cxrgen.metrics.bootstrap import resampled_aucs_of
from cxrgen.shift.ratios import percentile_interval
from cxrgen.sources.labels import BlankPolicy, Policy, apply_policy

#: MIMIC-CXR-JPG label files (the ``labels`` option of the MIMIC reader).
LabelFile = Literal["chexpert", "negbio", "radiologist"]


@dataclass(frozen=True)
class Protocol:
    """Overrides of the study's policies or of MIMIC's label file; None keeps the study's own.

    A ``label_file`` protocol scores MIMIC test sets only: other test sets get no row for it.
    """

    uncertainty: Policy | None = None
    blank: BlankPolicy | None = None
    label_file: LabelFile | None = None


PROTOCOLS: dict[str, Protocol] = {
    "blank_zeros": Protocol(blank="zeros"),
    "blank_ignore": Protocol(blank="ignore"),
    "uncertain_ones": Protocol(uncertainty="ones"),
    "uncertain_zeros": Protocol(uncertainty="zeros"),
    "uncertain_ignore": Protocol(uncertainty="ignore"),
    "mimic_chexpert": Protocol(label_file="chexpert"),
    "mimic_negbio": Protocol(label_file="negbio"),
    "mimic_radiologist": Protocol(label_file="radiologist"),
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; an unknown name fails with the closest known ones."""
    if name not in PROTOCOLS:
        close = difflib.get_close_matches(name, PROTOCOLS, n=2)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"evaluation.protocols: unknown label protocol {name!r} (known: {', '.join(PROTOCOLS)}){hint}")
    return PROTOCOLS[name]


def protocol_targets(
    raw: ArrayLike, labelled: ArrayLike, protocol: str, *, uncertainty: Policy, blank: BlankPolicy
) -> np.ndarray:
    """Targets of one label under ``protocol`` from raw values [N]; ``labelled`` False -> NaN.

    Args:
        raw: Raw labels [N] in {1, 0, -1, NaN}.
        labelled: [N] bool; False where the dataset has no label row for the image.
        protocol: A key of :data:`PROTOCOLS` that overrides a policy (not a ``label_file`` one).
        uncertainty: The study's policy for this label (kept unless the protocol overrides it).
        blank: The study's blank policy (kept unless the protocol overrides it).
    """
    spec = get_protocol(protocol)
    if spec.label_file is not None:
        raise ValueError(f"label protocol {protocol!r} reads another label file: see cxrgen.shift.label_files")
    y = apply_policy(np.asarray(raw, dtype=np.float64), spec.uncertainty or uncertainty, spec.blank or blank)
    y[~np.asarray(labelled, dtype=bool)] = np.nan
    return y


def paired_protocol_difference(
    y_study: ArrayLike,
    y_protocol: ArrayLike,
    p: ArrayLike,
    groups: ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    name: str = "label",
) -> Mapping[str, float]:
    """AUC under the study's protocol and another, and the difference (protocol - study) with a paired interval.

    Both AUCs are computed on every patient resample of :func:`cxrgen.metrics.patient_resample` (the same
    predictions, the same patients), so the interval is paired and patient-clustered. Each target's counts per
    (patient, block of sorted scores) are built once; a resample's AUC is then its patient counts times them,
    the same numbers as :func:`cxrgen.metrics.weighted_auc` with dense per-image weights.
    Returns ``auc_study, auc_protocol, difference, ci_low, ci_high, n_pos, n_neg`` (counts under the protocol).
    """
    return protocol_differences(y_study, [y_protocol], p, groups, n_boot=n_boot, seed=seed, ci=ci, name=name)[0]


def protocol_differences(
    y_study: ArrayLike,
    y_protocols: Sequence[ArrayLike],
    p: ArrayLike,
    groups: ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    name: str = "label",
) -> list[Mapping[str, float]]:
    """:func:`paired_protocol_difference` of one label's scores under each of several protocols' targets.

    The study's AUC and its resampled AUCs are computed once for all protocols (they do not depend on the
    protocol), and the patients' resample is drawn once: the numbers are those of one call per protocol. The scores
    are sorted once: every protocol's AUC reads its labelled images in that order.
    """
    ys = np.asarray(y_study, dtype=np.float64)
    pa = np.asarray(p, dtype=np.float64)
    scores = SortedScores(pa)
    auc_s = scores.auc(ys, name=name)
    resample: PatientResample | None = None
    study: np.ndarray | None = None
    out: list[Mapping[str, float]] = []
    for y_protocol in y_protocols:
        yp = np.asarray(y_protocol, dtype=np.float64)
        auc_p = scores.auc(yp, name=name)
        row = {
            "auc_study": auc_s, "auc_protocol": auc_p, "difference": auc_p - auc_s, "ci_low": math.nan,
            "ci_high": math.nan, "n_pos": float((yp == 1).sum()), "n_neg": float((yp == 0).sum()),
        }  # fmt: skip
        out.append(row)
        if n_boot < 1 or math.isnan(auc_s) or math.isnan(auc_p):
            continue
        if resample is None:
            resample = patient_resample(groups, n_boot=n_boot, seed=seed)
        if study is None:
            study = _resampled(ys, pa, resample)
        lo, hi = percentile_interval((_resampled(yp, pa, resample) - study)[:, None], ci)
        row.update(ci_low=float(lo[0]), ci_high=float(hi[0]))
    return out


def _resampled(y: np.ndarray, p: np.ndarray, resample: PatientResample) -> np.ndarray:
    """AUC [n_boot] of the labelled images on every patient resample (those of the AUC table when the targets are
    the study's: computed once)."""
    keep = ~np.isnan(y)
    scored = [(y[keep], p[keep], resample.codes[keep])]
    return resampled_aucs_of(scored, resample.n_patients, resample.n_boot, resample.seed)[0]
