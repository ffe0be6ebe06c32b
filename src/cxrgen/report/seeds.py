"""Several training seeds in the report: one predictions frame per run with every seed's scores beside each other.

With ``train.seeds`` a run (configuration, arch, test set) has one predictions file per seed. The comparisons and
the seed-aware intervals need them aligned image by image, so :func:`combine_seeds` joins them on ``image_id``
into one frame: ``p_<label>`` holds the first seed's scores and ``p_<label>#<seed>`` the others'
(:func:`seed_score_columns` lists them). :func:`seed_auc_table` gives per label the mean AUC over seeds, the seed
SD and the two-stage (seeds, then patients) bootstrap interval (:func:`cxrgen.metrics.clustered.seed_bootstrap_auc`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from cxrgen import metrics
from cxrgen.metrics.clustered import seed_bootstrap_auc
from cxrgen.report.inputs import Predictions
from cxrgen.study.config import StudyConfig

log = logging.getLogger(__name__)

SEED_SEP = "#"

#: Columns of ``auc_seeds.csv``.
SEED_AUC_COLUMNS: tuple[str, ...] = (
    "configuration", "arch", "test_set", "kind", "label", "auc", "seed_sd", "ci_low", "ci_high", "se", "n_seeds",
    "seeds", "training_variance_counted", "unfinished",
)


def seed_score_columns(columns: Sequence[str], label: str) -> list[str]:
    """``p_<label>`` then the other seeds' ``p_<label>#<seed>`` columns present in ``columns``."""
    base = f"p_{label}"
    return [base, *(c for c in columns if c.startswith(base + SEED_SEP))]


def combine_seeds(predictions: Sequence[Predictions]) -> list[Predictions]:
    """One :class:`Predictions` per (configuration, arch, test set) holding every seed's scores.

    Runs with one file are returned as they are. Several seeds are joined on the images all of them scored
    (a warning counts what was dropped); ``seed`` of the result is None, ``path`` the first seed's file, and
    ``unfinished`` True when any seed's run is unfinished.
    """
    groups: dict[tuple[str, str, str], list[Predictions]] = {}
    for pred in predictions:
        groups.setdefault(pred.key, []).append(pred)
    out = []
    for members in groups.values():
        if len(members) == 1:
            out.append(members[0])
            continue
        first, frame = members[0], members[0].frame
        for other in members[1:]:
            scores = other.frame[["image_id", *(f"p_{lab}" for lab in first.labels if lab in other.labels)]]
            scores = scores.rename(columns={f"p_{lab}": f"p_{lab}{SEED_SEP}{other.seed}" for lab in first.labels})
            joined = frame.merge(scores, on="image_id", how="inner", validate="one_to_one")
            if len(joined) < max(len(frame), len(other.frame)):
                log.warning("%s and %s: seeds combined on %d shared images (%d and %d in the files)",
                            first.path, other.path, len(joined), len(frame), len(other.frame))
            frame = joined
        frame.attrs[FIRST_SEED] = first.seed  # whose scores ``p_<label>`` hold, for the ``seeds`` column
        out.append(replace(first, frame=frame, seed=None, unfinished=any(m.unfinished for m in members)))
    return out


#: ``DataFrame.attrs`` key of a combined frame: the seed whose scores its plain ``p_<label>`` columns hold.
FIRST_SEED = "cxrgen_first_seed"


def seeds_used(pred: Predictions, columns: Sequence[str]) -> list[str]:
    """The seed of each score column: the plain ``p_<label>`` is the first seed's (its number, not "first"), the
    others carry theirs; "first" only where no file recorded the seed."""
    first = pred.seed if pred.seed is not None else pred.frame.attrs.get(FIRST_SEED)
    return [c.partition(SEED_SEP)[2] or ("first" if first is None else str(first)) for c in columns]


def n_seeds(pred: Predictions) -> int:
    """Seeds whose scores a (combined) predictions frame holds."""
    return len(seed_score_columns(list(pred.frame.columns), pred.labels[0])) if pred.labels else 1


def seed_auc_table(config: StudyConfig, combined: Sequence[Predictions]) -> pd.DataFrame:
    """``auc_seeds.csv``: per run and label the seed-averaged AUC, seed SD and two-stage bootstrap interval."""
    evaluation = config.evaluation
    rows = []
    for pred in combined:
        groups = pred.frame["patient_id"].astype(str).to_numpy()
        for label in pred.labels:
            cols = seed_score_columns(list(pred.frame.columns), label)
            y = pred.frame[f"y_{label}"].to_numpy(dtype=np.float64)
            scores = pred.frame[cols].to_numpy(dtype=np.float64).T
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", metrics.OneClassWarning)  # auc.csv reports the undefined AUC
                res = seed_bootstrap_auc(y, scores, groups, n_boot=max(evaluation.bootstrap, 2),
                                         seed=evaluation.seed, ci=evaluation.ci, name=label)
            seeds = seeds_used(pred, cols)
            rows.append({
                "configuration": pred.configuration, "arch": pred.arch, "test_set": pred.test_set,
                "kind": pred.kind, "label": label, "auc": res.auc, "seed_sd": res.seed_sd, "ci_low": res.ci_low,
                "ci_high": res.ci_high, "se": res.se, "n_seeds": res.n_seeds, "seeds": " ".join(seeds),
                "training_variance_counted": res.training_variance_counted, "unfinished": pred.unfinished,
            })
    return pd.DataFrame(rows, columns=list(SEED_AUC_COLUMNS))


def drawn_seed(predictions: Sequence[Predictions], arch: str | None = None) -> str:
    """Which seed a single-curve figure draws: ``seed 3, the first of 2 seeds (3, 7)``; "" with one seed.

    Figures that draw one curve per run show the first seed's scores (``p_<label>`` of :func:`combine_seeds`);
    ``predictions`` are the per-seed files, ``arch`` restricts them to one architecture.
    """
    seeds = sorted({p.seed for p in predictions if p.seed is not None and arch in (None, p.arch)})
    if len(seeds) < 2:
        return ""
    return f"seed {seeds[0]}, the first of {len(seeds)} seeds ({', '.join(map(str, seeds))})"


#: Columns of :func:`seed_gaps`.
SEED_GAP_COLUMNS: tuple[str, ...] = ("configuration", "arch", "test_set", "label", "seed", "gap")


def seed_gaps(auc: pd.DataFrame) -> pd.DataFrame:
    """Per seed, internal minus external AUC of each run, test set and label, from ``auc.csv`` rows with ``seed``.

    The generalization-gap figure draws their range beside the seed mean; empty without a ``seed`` column.
    """
    if "seed" not in auc or auc.empty:
        return pd.DataFrame(columns=list(SEED_GAP_COLUMNS))
    key = ["configuration", "arch", "seed", "label"]
    internal = auc.loc[auc["kind"] == "internal", [*key, "auc"]]
    external = auc.loc[auc["kind"] == "external", [*key, "test_set", "auc"]]
    both = external.merge(internal, on=key, suffixes=("_external", "_internal"), validate="many_to_one")
    both["gap"] = both["auc_internal"] - both["auc_external"]
    return both[list(SEED_GAP_COLUMNS)].reset_index(drop=True)
