"""Subgroups of a test set: sex, age band, view and device presence, each judged on its own.

A pooled AUC can hide a subgroup that fails (CheXclusion, Seyyed-Kalantari et al. 2021). Every subgroup gets
its AUC with a patient-clustered interval; a subgroup with fewer than :data:`MIN_PER_CLASS` positives or
negatives is reported as "too few" rather than given a number no one should read.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cxrgen.metrics import OneClassWarning, clustered_bootstrap_auc, holm, unpaired_auc_test
from cxrgen.metrics.auc import SortedScores
from cxrgen.shift.operating_points import operating_point

MIN_PER_CLASS = 20
AGE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("<40", -math.inf, 40.0),
    ("40-59", 40.0, 60.0),
    ("60-79", 60.0, 80.0),
    (">=80", 80.0, math.inf),
)
VIEWS: tuple[str, ...] = ("PA", "AP", "LATERAL")
FAMILIES: tuple[str, ...] = ("sex", "age", "view", "device")


def age_band(age: pd.Series) -> pd.Series:
    """Age in years -> ``<40``, ``40-59``, ``60-79``, ``>=80``; NaN ages stay NaN."""
    out = pd.Series(np.nan, index=age.index, dtype=object)
    for name, low, high in AGE_BANDS:
        out[(age >= low) & (age < high)] = name
    return out


def subgroup_memberships(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """Family -> subgroup name per image (NaN: not in any subgroup of that family).

    ``frame`` needs the manifest's ``sex``, ``age`` and ``view``; the ``device`` family needs a ``device``
    column (1 present, 0 absent, NaN unknown) and is left out when the column is absent or all NaN, as for
    NIH ChestX-ray14, which records no devices.
    """
    out: dict[str, pd.Series] = {
        "sex": frame["sex"].where(frame["sex"].isin(["M", "F"])),
        "age": age_band(frame["age"].astype(float)),
        "view": frame["view"].where(frame["view"].isin(list(VIEWS))),
    }
    if "device" in frame and frame["device"].notna().any():
        out["device"] = frame["device"].map({1.0: "device", 0.0: "no device"})
    return out


def view_note(frame: pd.DataFrame, test_set: str) -> str | None:
    """The images of ``test_set`` the view family leaves out, counted by view, or None when there are none.

    Views outside :data:`VIEWS` (e.g. PadChest's ``LL``, ``AP_horizontal``) and unrecorded views belong to no view
    subgroup; they stay in every other analysis, and the note says how many there are instead of dropping them
    without a word.
    """
    view = frame["view"].astype(object)
    outside = view[~view.isin(list(VIEWS))].fillna("not recorded").astype(str)
    if outside.empty:
        return None
    counts = ", ".join(f"{name}: {n}" for name, n in outside.value_counts().items())
    return (f"{test_set}: {len(outside)} of {len(frame)} images have a view outside {'/'.join(VIEWS)} ({counts}); "
            "they are in every analysis but in no view subgroup.")


def subgroup_table(
    frame: pd.DataFrame,
    labels: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    thresholds: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """One row per (label, family, subgroup): images, patients, positives, negatives, AUC and its interval.

    Args:
        frame: A predictions file joined with the manifest's ``sex, age, view`` (and ``device``) on image_id.
        labels: Labels with ``y_<label>``, ``p_<label>`` columns.
        n_boot: Patient-bootstrap resamples.
        seed: Bootstrap seed.
        ci: Confidence level.
        thresholds: Label -> operating threshold (chosen at home); adds ``<metric>, <metric>_low,
            <metric>_high`` for sensitivity, specificity, PPV and NPV of each subgroup that is not "too few".

    Returns:
        Columns ``label, family, subgroup, n_images, n_patients, n_pos, n_neg, status, auc, ci_low, ci_high, se``;
        ``status`` is ``ok`` or ``too few`` (then the AUC columns are NaN).
    """
    rows = []
    # Each label's scores sorted once for the file: a subgroup's AUC reads its images in that order.
    scores = {label: SortedScores(frame[f"p_{label}"].to_numpy(dtype=float)) for label in labels}
    targets = {label: frame[f"y_{label}"].to_numpy(dtype=float) for label in labels}
    for family, member in subgroup_memberships(frame).items():
        for subgroup in [s for s in dict.fromkeys(member.dropna()) if isinstance(s, str)]:
            inside = (member == subgroup).to_numpy()
            part = frame.loc[inside]
            for label in labels:
                y = part[f"y_{label}"].to_numpy(dtype=float)
                n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
                row = {
                    "label": label,
                    "family": family,
                    "subgroup": subgroup,
                    "n_images": int((~np.isnan(y)).sum()),
                    "n_patients": int(part.loc[~np.isnan(y), "patient_id"].nunique()),
                    "n_pos": n_pos,
                    "n_neg": n_neg,
                    "status": "ok",
                    "auc": math.nan,
                    "ci_low": math.nan,
                    "ci_high": math.nan,
                    "se": math.nan,
                }
                if min(n_pos, n_neg) < MIN_PER_CLASS:
                    row["status"] = "too few"
                else:
                    with warnings.catch_warnings():
                        warnings.simplefilter("error", OneClassWarning)
                        boot = clustered_bootstrap_auc(
                            y,
                            part[f"p_{label}"].to_numpy(dtype=float),
                            part["patient_id"].to_numpy(),
                            n_boot=max(n_boot, 1),
                            seed=seed,
                            ci=ci,
                            labels=[label],
                            points=[scores[label].auc(targets[label], inside, name=label)],
                        )
                    row.update(
                        auc=float(boot.auc[0]),
                        ci_low=float(boot.ci_low[0]),
                        ci_high=float(boot.ci_high[0]),
                        se=float(boot.se[0]),
                    )
                    if thresholds is not None and label in thresholds:
                        point = operating_point(
                            y,
                            part[f"p_{label}"].to_numpy(dtype=float),
                            part["patient_id"],
                            thresholds[label],
                            n_boot=n_boot,
                            seed=seed,
                            ci=ci,
                        )
                        for metric, (value, low, high) in point.values.items():
                            row.update({metric: value, f"{metric}_low": low, f"{metric}_high": high})
                rows.append(row)
    return pd.DataFrame(rows)


def subgroup_gaps(internal: pd.DataFrame, external: pd.DataFrame) -> pd.DataFrame:
    """Internal minus external AUC per (label, family, subgroup), z test on the bootstrap SEs, Holm per family.

    The two test sets hold different patients, so the test is unpaired (:func:`cxrgen.metrics.unpaired_auc_test`)
    and Holm's adjustment runs over the subgroups of one family and label (DESIGN.md section 9).

    Returns:
        Columns ``label, family, subgroup, auc_internal, auc_external, gap, p, p_holm``.
    """
    keys = ["label", "family", "subgroup"]
    columns = [*keys, "auc", "se"]
    both = internal[columns].merge(external[columns], on=keys, suffixes=("_internal", "_external"))
    rows = []
    for _, r in both.iterrows():
        test = unpaired_auc_test(r["auc_internal"], r["se_internal"] ** 2, r["auc_external"], r["se_external"] ** 2)
        rows.append(
            {
                **{k: r[k] for k in keys},
                "auc_internal": r["auc_internal"],
                "auc_external": r["auc_external"],
                "gap": test.difference,
                "p": test.p,
            }
        )
    out = pd.DataFrame(rows, columns=[*keys, "auc_internal", "auc_external", "gap", "p"])
    out["p_holm"] = np.nan
    for _, index in out.groupby(["label", "family"], sort=False).groups.items():
        out.loc[index, "p_holm"] = holm(out.loc[index, "p"].to_numpy(dtype=float))
    return out
