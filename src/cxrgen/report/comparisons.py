"""The comparisons the paper makes in words, as tests: ``comparisons.csv``.

Three families, each Holm-adjusted on its own (the ``family`` column), because each answers one question
asked for many labels, configurations and architectures:

* ``internal_vs_external``: does a model lose AUC on another hospital? Internal and external test sets hold
  different patients, so the test is the unpaired z test on the two DeLong variances.
* ``multi_vs_single``: does training on two datasets beat training on one, on the same external test set?
  Both models scored the same images, so the test is DeLong's paired test on the images both files hold.
* ``architectures``: do the architectures differ within one configuration and test set? Paired DeLong.

``difference`` is always ``auc_a - auc_b`` and ``se`` its standard error, so ``difference +- z se`` is the
interval the generalization-gap figure draws.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cxrgen import metrics
from cxrgen.config import StudyConfig
from cxrgen.evaluate import COMPARISON_COLUMNS, paired_comparison, unpaired_comparison
from cxrgen.report.inputs import Predictions

log = logging.getLogger(__name__)

FAMILIES: tuple[str, ...] = ("internal_vs_external", "multi_vs_single", "architectures")

COMPARISONS_COLUMNS: tuple[str, ...] = (
    "family",
    "label",
    "configuration_a",
    "arch_a",
    "test_set_a",
    "configuration_b",
    "arch_b",
    "test_set_b",
    *COMPARISON_COLUMNS[COMPARISON_COLUMNS.index("test") :],  # the statistics, as `cxrgen evaluate` writes them
)


def _sides(a: Predictions, b: Predictions) -> dict[str, object]:
    return {
        "configuration_a": a.configuration,
        "arch_a": a.arch,
        "test_set_a": a.test_set,
        "configuration_b": b.configuration,
        "arch_b": b.arch,
        "test_set_b": b.test_set,
    }


def unpaired_rows(a: Predictions, b: Predictions, family: str) -> list[dict[str, object]]:
    """Per shared label: the two DeLong variances compared with the unpaired z test (independent test sets)."""
    return [
        {"family": family, "label": label, **_sides(a, b), **unpaired_comparison(a.frame, b.frame, label)}
        for label in a.labels
        if label in b.labels
    ]


def paired_rows(a: Predictions, b: Predictions, family: str) -> list[dict[str, object]]:
    """Per shared label: DeLong's paired test on the images both files hold (AUCs are those of the shared set).

    Raises:
        PredictionsError: the two files disagree on the ground truth of a shared image (they cannot come from
            the same manifest); the message names both files.
    """
    merged = a.frame.merge(b.frame, on="image_id", suffixes=("_a", "_b"), validate="one_to_one")
    if merged.empty:
        log.warning("%s and %s share no image; no paired comparison", a.path, b.path)
        return []
    what = f"{a.path} and {b.path}"
    return [
        {"family": family, "label": label, **_sides(a, b), **paired_comparison(merged, label, what)}
        for label in a.labels
        if label in b.labels
    ]


def comparisons(config: StudyConfig, predictions: Sequence[Predictions]) -> pd.DataFrame:
    """All three families of tests with Holm-adjusted p-values per family (see the module docstring).

    Returns:
        A frame with :data:`COMPARISONS_COLUMNS`; empty (with the columns) when no comparison applies.
        ``p`` is NaN where a label holds one class; such rows do not count in their family's Holm size.
    """
    by_key = {pred.key: pred for pred in predictions}
    rows: list[dict[str, object]] = []
    for pred in predictions:
        if pred.kind == "external":
            internal = by_key.get((pred.configuration, pred.arch, "internal"))
            if internal is not None:
                rows += unpaired_rows(internal, pred, "internal_vs_external")
    n_train = {conf.name: len(conf.train) for conf in config.configurations}
    for multi, single in itertools.product(predictions, predictions):
        if (
            multi.kind == single.kind == "external"
            and multi.test_set == single.test_set
            and multi.arch == single.arch
            and n_train.get(multi.configuration, 0) >= 2
            and n_train.get(single.configuration, 0) == 1
        ):
            rows += paired_rows(multi, single, "multi_vs_single")
    groups: dict[tuple[str, str], list[Predictions]] = {}
    for pred in predictions:
        groups.setdefault((pred.configuration, pred.test_set), []).append(pred)
    for members in groups.values():
        for a, b in itertools.combinations(members, 2):
            rows += paired_rows(a, b, "architectures")
    out = pd.DataFrame(rows, columns=[c for c in COMPARISONS_COLUMNS if c != "p_holm"])
    holm = np.full(len(out), np.nan)
    for family in FAMILIES:
        mask = (out["family"] == family).to_numpy()
        if mask.any():
            holm[mask] = metrics.holm(out.loc[mask, "p"].to_numpy(dtype=np.float64))
    out.insert(out.columns.get_loc("p") + 1, "p_holm", holm)
    return out
