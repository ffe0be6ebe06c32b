"""Patient-clustered comparisons of two predictions frames: paired on shared images, or unpaired.

DESIGN.md section 9: paired means the same images. Two files are paired on the intersection of their image
ids; what each side loses is counted and reported, and below 95 % overlap (of the larger file) the pairing is
refused with an error rather than silently switched to an unpaired test.

Image ids are compared by :func:`image_keys`. cxrgen writes namespaced ids (``nih:00000010_000.png``); a model
from elsewhere writes bare ones (``00000010_000.png``). The rule: a ``<dataset>:`` namespace is stripped when
exactly one file is namespaced (every id of it; the other file has none), and ids are compared as written when
both files carry the same namespaces (then stripping changes nothing). Files whose namespaces differ hold
different datasets' images. Two files that share no image after this rule are compared unpaired, with one
warning line saying why; a patient must be one patient in both files (the same grouping of shared images,
whatever its spelling: ``nih:10`` and ``10``). The patient-clustered test is the
primary result (:mod:`cxrgen.metrics.clustered`); image-level
DeLong stays beside it, labelled ``delong_*`` (first seed).
Frames may carry several training seeds as ``p_<label>#<seed>`` columns (:mod:`cxrgen.report.seeds`): both
sides' seeds then enter the two-stage bootstrap, paired seed by seed when both sides have the same number.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd
from scipy.stats import norm

from cxrgen import metrics
from cxrgen.errors import CxrgenError
from cxrgen.metrics.clustered import clustered_paired_bootstrap, seed_bootstrap_auc

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The smallest share of the larger file's images that both files must hold for a paired comparison.
MIN_OVERLAP = 0.95

#: Columns every comparison row carries after the sides (paired and unpaired alike).
CLUSTERED_COLUMNS: tuple[str, ...] = (
    "test",
    "auc_a",
    "auc_b",
    "difference",
    "ci_low",
    "ci_high",
    "se",
    "statistic",
    "p",
    "delong_se",
    "delong_p",
    "n_a",
    "n_b",
    "n_dropped_a",
    "n_dropped_b",
)


class PairingError(CxrgenError):
    """Two predictions files share too few images to be compared as paired."""


@dataclass(frozen=True)
class Paired:
    """Two frames joined on ``image_id`` (suffixes ``_a``/``_b``) and what each side lost to the join."""

    merged: pd.DataFrame
    n_dropped_a: int
    n_dropped_b: int


#: A ``<dataset>:`` namespace at the start of an image id (not a drive letter such as ``C:\\``).
NAMESPACE = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*):(?![/\\])")


def _namespaces(ids: pd.Series) -> tuple[set[str], int]:
    """The namespaces of ``ids`` and how many ids carry none."""
    found = ids.astype(str).str.extract(NAMESPACE, expand=False)
    return set(found.dropna().unique().tolist()), int(found.isna().sum())


def _strip(ids: pd.Series) -> pd.Series:
    return ids.astype(str).str.replace(NAMESPACE, "", regex=True)


def image_keys(ids_a: pd.Series, ids_b: pd.Series, what_a: str, what_b: str) -> tuple[pd.Series, pd.Series, str]:
    """The ids two files are paired on, by the namespace rule of this module, and a note of what was done.

    Returns:
        ``(keys_a, keys_b, note)``; ``note`` is ``""`` when the ids are compared as written, else e.g.
        ``"ids compared without the 'nih:' namespace of a.parquet"``.

    Raises:
        PairingError: stripping a file's namespaces would make two of its images one (``nih:1.png`` and
            ``chexpert:1.png`` against a bare ``1.png``): which one is meant cannot be told.
    """
    (ns_a, bare_a), (ns_b, bare_b) = _namespaces(ids_a), _namespaces(ids_b)
    namespaced_a, namespaced_b = bool(ns_a) and bare_a == 0, bool(ns_b) and bare_b == 0
    plain_a, plain_b = not ns_a, not ns_b
    if namespaced_a and plain_b:
        side, ids, namespaces = what_a, ids_a, ns_a
    elif namespaced_b and plain_a:
        side, ids, namespaces = what_b, ids_b, ns_b
    else:
        return ids_a.astype(str), ids_b.astype(str), ""
    stripped = _strip(ids)
    twice = stripped.duplicated(keep=False)
    if twice.any():
        raise PairingError(
            f"{what_a} vs {what_b}: {side} holds images of {len(namespaces)} datasets ({sorted(namespaces)}) and the "
            f"other file bare ids; without the namespace {stripped[twice].iloc[0]!r} is {int(twice.sum())} images, "
            "so the files cannot be paired; give the other file namespaced ids (dataset:image)"
        )
    names = ", ".join(f"{n}:" for n in sorted(namespaces))
    note = f"ids compared without the {names!r} namespace of {side}"
    if side == what_a:
        return stripped, ids_b.astype(str), note
    return ids_a.astype(str), stripped, note


def unpaired_reason(ids_a: pd.Series, ids_b: pd.Series, what_a: str, what_b: str) -> str:
    """One line saying why two files sharing no image id are compared as independent test sets."""
    (ns_a, _), (ns_b, _) = _namespaces(ids_a), _namespaces(ids_b)
    if ns_a and ns_b and not ns_a & ns_b:
        why = f"namespaces {sorted(ns_a)} vs {sorted(ns_b)}: different datasets"
    else:
        why = (f"e.g. {str(ids_a.iloc[0])!r} vs {str(ids_b.iloc[0])!r}, namespaces {sorted(ns_a) or 'none'} vs "
               f"{sorted(ns_b) or 'none'}")  # fmt: skip
    return (f"{what_a} and {what_b} share no image id ({why}): compared as independent test sets "
            "(clustered unpaired test), not paired")  # fmt: skip


def pair_on_images(df_a: pd.DataFrame, df_b: pd.DataFrame, what_a: str, what_b: str) -> Paired:
    """Join two predictions frames on their shared images (:func:`image_keys`); refuse below :data:`MIN_OVERLAP`.

    The merged frame's ``image_id`` is the pairing key (bare when one side's namespace was stripped).

    Raises:
        PairingError: the shared images are fewer than 95 % of the larger file's, or a patient of one file is
            split or merged in the other; the message (one line) names both files and the counts.
    """
    keys_a, keys_b, note = image_keys(df_a["image_id"], df_b["image_id"], what_a, what_b)
    left = df_a.assign(image_id=keys_a.to_numpy())
    right = df_b.assign(image_id=keys_b.to_numpy())
    merged = left.merge(right, on="image_id", suffixes=("_a", "_b"), validate="one_to_one")
    n_a, n_b, shared = len(df_a), len(df_b), len(merged)
    larger = max(n_a, n_b)
    how = f" ({note})" if note else ""
    if larger == 0 or shared < MIN_OVERLAP * larger:
        raise PairingError(
            f"{what_a} ({n_a} images) and {what_b} ({n_b} images) share {shared} images{how} "
            f"({shared / larger if larger else 0:.1%} of the larger); a paired comparison needs at least "
            f"{MIN_OVERLAP:.0%}; predict both on the same test set, or evaluate them one at a time."
        )
    if note:
        log.info("%s vs %s: %s", what_a, what_b, note)
    if shared < larger:
        log.warning("%s vs %s: paired on %d shared images; dropped %d of %s and %d of %s",
                    what_a, what_b, shared, n_a - shared, what_a, n_b - shared, what_b)
    pa, pb = merged["patient_id_a"].astype(str), merged["patient_id_b"].astype(str)
    # The same grouping of images into patients, whatever each file calls a patient ('nih:10' or '10').
    if (pd.DataFrame({"a": pa, "b": pb}).drop_duplicates().shape[0] != pa.nunique()) or pa.nunique() != pb.nunique():
        raise PairingError(f"{what_a} and {what_b} group the same images into different patients; "
                           "a paired comparison needs one patient id per person in both files")  # fmt: skip
    return Paired(merged, n_a - shared, n_b - shared)


def _delong_quiet(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """``fn(*args, **kwargs)`` without the undefined-AUC warnings, which ``auc.csv`` already reports."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.OneClassWarning)  # auc.csv reports the undefined AUC
        warnings.simplefilter("ignore", metrics.SingleImageClassWarning)
        return fn(*args, **kwargs)


def _side_scores(frame: pd.DataFrame, label: str, suffix: str = "") -> np.ndarray:
    """Scores [S, N] of one side: ``p_<label>`` and any other seeds' ``p_<label>#<seed>`` columns."""
    base = f"p_{label}"
    cols = [f"{base}{suffix}", *(c for c in frame.columns if c.startswith(base + "#") and c.endswith(suffix)
                                 and (suffix or not c.endswith(("_a", "_b"))))]
    return frame[cols].to_numpy(dtype=np.float64).T


def paired_clustered(paired: Paired, label: str, what: str, *, n_boot: int, seed: int, ci: float) -> dict[str, object]:
    """One label of a paired comparison: clustered paired bootstrap first, paired DeLong beside it.

    Raises:
        PairingError: the two files disagree on the ground truth of shared images.
    """
    m = paired.merged
    y_a = m[f"y_{label}_a"].to_numpy(dtype=np.float64)
    y_b = m[f"y_{label}_b"].to_numpy(dtype=np.float64)
    if not np.array_equal(y_a, y_b, equal_nan=True):
        raise PairingError(
            f"{what}: column 'y_{label}' differs on {int((y_a != y_b).sum())} shared images; "
            "a paired comparison needs the same ground truth (were they predicted from different manifests?)"
        )
    seeds_a, seeds_b = _side_scores(m, label, "_a"), _side_scores(m, label, "_b")
    boot = _delong_quiet(clustered_paired_bootstrap, y_a, seeds_a, seeds_b,
                         m["patient_id_a"].astype(str).to_numpy(), n_boot=n_boot, seed=seed, ci=ci, name=label)
    dl = _delong_quiet(metrics.delong_paired_test, y_a, seeds_a[0], seeds_b[0], name=label)  # first seeds
    n = int(np.isfinite(y_a).sum())
    return {
        "test": "clustered_paired_bootstrap", "auc_a": boot.auc_a, "auc_b": boot.auc_b,
        "difference": boot.difference, "ci_low": boot.ci_low, "ci_high": boot.ci_high, "se": boot.se,
        "statistic": boot.statistic, "p": boot.p, "delong_se": math.sqrt(dl.variance), "delong_p": dl.p,
        "n_a": n, "n_b": n, "n_dropped_a": paired.n_dropped_a, "n_dropped_b": paired.n_dropped_b,
    }


def unpaired_clustered(
    df_a: pd.DataFrame, df_b: pd.DataFrame, label: str, *, n_boot: int, seed: int, ci: float
) -> dict[str, object]:
    """One label of two independent test sets: z test on the two patient-clustered bootstrap SEs.

    The interval is ``difference +- z se`` (normal), since the two bootstraps are independent.
    """
    sides = []
    for df in (df_a, df_b):
        y, p = df[f"y_{label}"].to_numpy(dtype=np.float64), _side_scores(df, label)
        boot = _delong_quiet(seed_bootstrap_auc, y, p, df["patient_id"].astype(str).to_numpy(),
                             n_boot=n_boot, seed=seed, ci=ci, name=label)
        dl = _delong_quiet(metrics.delong, y, p[0], name=label)
        sides.append((boot, dl, int(np.isfinite(y).sum())))
    (ba, da, na), (bb, db, nb) = sides
    test = metrics.unpaired_auc_test(ba.auc, ba.se**2, bb.auc, bb.se**2)
    image = metrics.unpaired_auc_test(da.auc, da.variance, db.auc, db.variance)
    se = math.sqrt(test.variance) if not math.isnan(test.variance) else math.nan
    z = float(norm.ppf(0.5 + ci / 2.0))
    return {
        "test": "clustered_unpaired", "auc_a": ba.auc, "auc_b": bb.auc, "difference": test.difference,
        "ci_low": test.difference - z * se, "ci_high": test.difference + z * se, "se": se,
        "statistic": test.statistic, "p": test.p,
        "delong_se": math.sqrt(image.variance) if not math.isnan(image.variance) else math.nan,
        "delong_p": image.p, "n_a": na, "n_b": nb, "n_dropped_a": 0, "n_dropped_b": 0,
    }
