"""The comparisons the paper makes in words, as tests: ``comparisons.csv``.

Three families, each Holm-adjusted on its own (the ``family`` column), because each answers one question
asked for many labels, configurations and architectures:

* ``internal_vs_external``: does a model lose AUC on another hospital? Internal and external test sets hold
  different patients, so the test is the unpaired z test on the two patient-clustered bootstrap SEs.
* ``multi_vs_single``: does training on two datasets beat training on one, on the same external test set?
  Both models scored the same images: the patient-clustered paired bootstrap on the images both files hold
  (:mod:`cxrgen.metrics.pairing`; refused below 95 % overlap, dropped images counted).
* ``architectures``: do the architectures differ within one configuration and test set? Paired bootstrap.

``difference`` is always ``auc_a - auc_b`` and ``se`` its patient-clustered standard error, so
``difference +- z se`` is the interval the generalization-gap figure draws. The image-level DeLong test stays
beside it as ``delong_se`` / ``delong_p`` (labelled secondary: it treats a patient's images as independent).
``unfinished`` is True when either side comes from a run without ``done.json`` (``--allow-unfinished``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cxrgen import metrics
from cxrgen.metrics.pairing import CLUSTERED_COLUMNS, PairingError, pair_on_images, paired_clustered, unpaired_clustered
from cxrgen.report.inputs import Predictions
from cxrgen.study.config import StudyConfig

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
    "unfinished",
    *CLUSTERED_COLUMNS[: CLUSTERED_COLUMNS.index("p") + 1],
    "p_holm",
    *CLUSTERED_COLUMNS[CLUSTERED_COLUMNS.index("p") + 1 :],
)

#: Bootstrap settings of one comparison: resamples, seed and confidence level (from ``evaluation``).
Boot = tuple[int, int, float]
_DEFAULT_BOOT: Boot = (1000, 0, 0.95)


def _sides(a: Predictions, b: Predictions) -> dict[str, object]:
    return {
        "configuration_a": a.configuration,
        "arch_a": a.arch,
        "test_set_a": a.test_set,
        "configuration_b": b.configuration,
        "arch_b": b.arch,
        "test_set_b": b.test_set,
        "unfinished": a.unfinished or b.unfinished,
    }


def unpaired_rows(
    a: Predictions, b: Predictions, family: str, boot: Boot = _DEFAULT_BOOT
) -> list[dict[str, object]]:
    """Per shared label: the two patient-clustered SEs in the unpaired z test (independent test sets)."""
    n_boot, seed, ci = boot
    return [
        {"family": family, "label": label, **_sides(a, b),
         **unpaired_clustered(a.frame, b.frame, label, n_boot=n_boot, seed=seed, ci=ci)}
        for label in a.labels
        if label in b.labels
    ]


def paired_rows(a: Predictions, b: Predictions, family: str, boot: Boot = _DEFAULT_BOOT) -> list[dict[str, object]]:
    """Per shared label: the clustered paired bootstrap on the images both files hold (DeLong beside it).

    Raises:
        PairingError: the files share under 95 % of their images, or disagree on the ground truth of a shared
            image; the message names both files.
    """
    n_boot, seed, ci = boot
    paired = pair_on_images(a.frame, b.frame, str(a.path), str(b.path))
    what = f"{a.path} and {b.path}"
    return [
        {"family": family, "label": label, **_sides(a, b),
         **paired_clustered(paired, label, what, n_boot=n_boot, seed=seed, ci=ci)}
        for label in a.labels
        if label in b.labels
    ]


def _paired_or_skip(a: Predictions, b: Predictions, family: str, boot: Boot) -> list[dict[str, object]]:
    """:func:`paired_rows`, or no rows and a warning when the two files cannot be paired (never unpaired)."""
    try:
        return paired_rows(a, b, family, boot)
    except PairingError as exc:
        log.warning("%s comparison skipped: %s", family, exc)
        return []


#: One test of :func:`comparisons`: family, the two files, and whether the test is paired.
Pair = tuple[str, Predictions, Predictions, bool]


def comparison_pairs(config: StudyConfig, predictions: Sequence[Predictions]) -> list[Pair]:
    """Every test of the three families, in the order of ``comparisons.csv`` (see the module docstring)."""
    by_key = {pred.key: pred for pred in predictions}
    pairs: list[Pair] = []
    for pred in predictions:
        if pred.kind == "external":
            internal = by_key.get((pred.configuration, pred.arch, "internal"))
            if internal is not None:
                pairs.append(("internal_vs_external", internal, pred, False))
    n_train = {conf.name: len(conf.train) for conf in config.configurations}
    for multi, single in itertools.product(predictions, predictions):
        if (
            multi.kind == single.kind == "external"
            and multi.test_set == single.test_set
            and multi.arch == single.arch
            and n_train.get(multi.configuration, 0) >= 2
            and n_train.get(single.configuration, 0) == 1
        ):
            pairs.append(("multi_vs_single", multi, single, True))
    groups: dict[tuple[str, str], list[Predictions]] = {}
    for pred in predictions:
        groups.setdefault((pred.configuration, pred.test_set), []).append(pred)
    for members in groups.values():
        for a, b in itertools.combinations(members, 2):
            pairs.append(("architectures", a, b, True))
    return pairs


def boot_settings(config: StudyConfig) -> Boot:
    """The bootstrap of every comparison: (replicates, seed, interval level)."""
    evaluation = config.evaluation
    return max(evaluation.bootstrap, 2), evaluation.seed, evaluation.ci


def pair_rows(pair: Pair, boot: Boot) -> list[dict[str, object]]:
    """The rows of one test (one per label), before Holm."""
    family, a, b, paired = pair
    return _paired_or_skip(a, b, family, boot) if paired else unpaired_rows(a, b, family, boot)


def holm_table(rows: list[dict[str, object]]) -> pd.DataFrame:
    """``comparisons.csv`` from every test's rows: Holm-adjusted p-values per family."""
    out = pd.DataFrame(rows, columns=[c for c in COMPARISONS_COLUMNS if c != "p_holm"])
    holm = np.full(len(out), np.nan)
    for family in FAMILIES:
        mask = (out["family"] == family).to_numpy()
        if mask.any():
            holm[mask] = metrics.holm(out.loc[mask, "p"].to_numpy(dtype=np.float64))
    out.insert(out.columns.get_loc("p") + 1, "p_holm", holm)
    return out


def comparisons(config: StudyConfig, predictions: Sequence[Predictions]) -> pd.DataFrame:
    """All three families of tests with Holm-adjusted p-values per family (see the module docstring).

    Returns:
        A frame with :data:`COMPARISONS_COLUMNS`; empty (with the columns) when no comparison applies.
        ``p`` is NaN where a label holds one class; such rows do not count in their family's Holm size.
    """
    boot = boot_settings(config)
    return holm_table([row for pair in comparison_pairs(config, predictions) for row in pair_rows(pair, boot)])
