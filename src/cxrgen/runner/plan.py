"""``cxrgen plan``: every run of a study with its training and test sets and their counts, before any training.

Built from the manifest and splits alone (``prepare --until splits``), so it costs seconds. It also refuses the
two designs that would make an external result meaningless: a configuration whose internal and external test
sets share image files (or whose training images include an external test image), and two dataset entries
over the same root (one hospital under two names).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

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


def plan_table(config: StudyConfig, manifest: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """One row per run (configuration, architecture[, seed]): datasets and image (img) / patient (pat) counts of
    its training, validation, internal (int) and external test sets.

    Two dataset entries over one folder never get here: :class:`cxrgen.study.config.StudyConfig` refuses them.
    """
    rows = manifest[["image_id", "dataset", "path", "patient_id"]].merge(
        splits[["image_id", "split"]], on="image_id", how="left", validate="one_to_one"
    )
    table = []
    checked: set[str] = set()
    for run in planned_runs(config):
        conf, arch = run[0], run[1]
        if conf.name not in checked:
            check_disjoint_tests(conf, rows, config)
            checked.add(conf.name)
        train = rows[rows["dataset"].isin(conf.train) & (rows["split"] == "train")]
        val = rows[rows["dataset"].isin(conf.train) & (rows["split"] == "val")]
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
        table.append(entry)
    return pd.DataFrame(table)
