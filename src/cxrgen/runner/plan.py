"""``cxrgen plan``: every run of a study with its training and test sets and their counts, before any training.

Built from the manifest and splits alone (``prepare --until splits``), so it costs seconds. It also refuses the
two designs that would make an external result meaningless: a configuration whose internal and external test
sets share image files (or whose training images include an external test image), and two dataset entries
over the same root (one hospital under two names).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path

import pandas as pd

from cxrgen.data.subsample import planned_steps, subsample_for
from cxrgen.errors import CxrgenError
from cxrgen.runner.study import planned_runs
from cxrgen.study.config import Configuration, StudyConfig


class PlanError(CxrgenError, ValueError):
    """A study whose test sets overlap, or two dataset entries over one root; the message names both."""


def _files(rows: pd.DataFrame, config: StudyConfig) -> pd.Series:
    """Absolute image file of each manifest row, to compare images across dataset entries."""
    roots = {name: str(Path(spec.root).resolve()) for name, spec in config.datasets.items()}
    return rows["dataset"].map(roots) + "/" + rows["path"]


def check_disjoint_tests(conf: Configuration, rows: pd.DataFrame, config: StudyConfig) -> None:
    """Refuse a configuration whose internal test images, or training images, include an external test image."""
    files = _files(rows, config)
    internal = set(files[rows["dataset"].isin(conf.internal) & (rows["split"] == "test")])
    training = set(files[rows["dataset"].isin(conf.train) & (rows["split"] != "test")])
    for external in conf.external:
        tests = set(files[(rows["dataset"] == external) & (rows["split"] == "test")])
        sides = ((f"internal test set {conf.internal}", internal), (f"training set {conf.train}", training))
        for other, images in sides:
            shared = tests & images
            if shared:
                raise PlanError(
                    f"configuration {conf.name!r}: its {other} and external test set {external!r} share "
                    f"{len(shared)} image(s), e.g. {sorted(shared)[0]}"
                )


def split_notes(config: StudyConfig) -> list[str]:
    """One line per used dataset that no configuration trains on: how much of it its external test set uses."""
    lines = []
    trained = config.trained_datasets()
    for name in config.used_datasets():
        if name in trained:
            continue
        if name in config.splits:
            lines.append(f"{name}: no configuration trains on it; its external test set is the test split of "
                         f"splits.{name}")
        else:
            labelled = "" if config.datasets[name].labelled() else " (unlabelled: predictions only)"
            lines.append(f"{name}: no configuration trains on it: an external test set used whole{labelled}")
    return lines


def _counts(rows: pd.DataFrame) -> tuple[int, int]:
    return len(rows), int(rows["patient_id"].nunique())


def _steps(config: StudyConfig, conf: Configuration, arch: str, n_train: int, usable: pd.DataFrame) -> str:
    """A run's optimizer steps: the fixed budget of a subsample (issue 25), the epoch limit times the batches of
    an epoch otherwise (early stopping may end it sooner), none for a linear probe (fitted to convergence)."""
    if config.is_linear_probe(arch):
        return "probe"
    if conf.subsample is not None:
        return str(planned_steps(config, conf.subsample, usable))
    train = config.train
    return f"<= {train.max_epochs * math.ceil(n_train / (train.batch_size * train.accumulate))}"


def plan_table(
    config: StudyConfig, manifest: pd.DataFrame, splits: pd.DataFrame, excluded: Collection[str] = ()
) -> pd.DataFrame:
    """One row per run (configuration, architecture[, seed]): datasets and image (img) / patient (pat) counts of
    its training, validation, internal (int) and external test sets, the training images per source and the
    optimizer steps.

    A size-matched or learning-curve configuration counts its drawn subsample (:mod:`cxrgen.data.subsample`, the
    very draw training will record; ``excluded`` image ids, from ``excluded.csv`` once verify has run, are never
    drawn).

    Two dataset entries over one folder never get here: :class:`cxrgen.study.config.StudyConfig` refuses them.
    """
    rows = manifest[["image_id", "dataset", "path", "patient_id"]].merge(
        splits[["image_id", "split"]], on="image_id", how="left", validate="one_to_one"
    )
    labels = [label for label in config.labels if label in manifest.columns]
    usable = manifest[["image_id", "dataset", "patient_id", *labels]].merge(
        splits[["image_id", "split"]], on="image_id", how="left", validate="one_to_one"
    )
    usable = usable[~usable["image_id"].isin(set(excluded))].assign(patient_id=lambda f: f["patient_id"].astype(str))
    table = []
    checked: set[str] = set()
    samples: dict[str, pd.DataFrame] = {}
    for run in planned_runs(config):
        conf, arch = run[0], run[1]
        if conf.name not in checked:
            check_disjoint_tests(conf, rows, config)
            checked.add(conf.name)
        train = rows[rows["dataset"].isin(conf.train) & (rows["split"] == "train")]
        val = rows[rows["dataset"].isin(conf.train) & (rows["split"] == "val")]
        if conf.subsample is not None:
            if conf.name not in samples:
                samples[conf.name] = subsample_for(config, conf, usable)
            drawn = samples[conf.name]
            train = rows[rows["image_id"].isin(set(drawn.loc[drawn["split"] == "train", "image_id"]))]
            val = rows[rows["image_id"].isin(set(drawn.loc[drawn["split"] == "val", "image_id"]))]
        internal = rows[rows["dataset"].isin(conf.internal) & (rows["split"] == "test")]
        entry: dict[str, object] = {"configuration": conf.name, "arch": arch}
        if len(run) > 2:
            entry["seed"] = run[2]
        entry.update({
            "train": "+".join(conf.train),
            "train img": _counts(train)[0], "train pat": _counts(train)[1], "val img": len(val),
            "internal": "+".join(conf.internal),
            "int img": _counts(internal)[0], "int pat": _counts(internal)[1],
        })  # fmt: skip
        externals = []
        for external in conf.external:
            images, patients = _counts(rows[(rows["dataset"] == external) & (rows["split"] == "test")])
            externals.append(f"{external} {images}/{patients}")
        entry["external img/pat"] = ", ".join(externals)
        per_source = train["dataset"].value_counts()
        entry["train img per source"] = ", ".join(f"{d} {int(per_source.get(d, 0))}" for d in conf.train)
        entry["steps"] = _steps(config, conf, arch, len(train), usable)
        table.append(entry)
    return pd.DataFrame(table)
