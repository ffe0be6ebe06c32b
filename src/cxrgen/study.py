"""The whole study as one resumable command: prepare, then train, predict and evaluate every run.

A run is one (configuration, architecture). Each step is skipped when its artifact is already there: training
resumes from ``last.ckpt`` or returns at once when finished, predictions are remade only when ``best.ckpt``
changed, and evaluation is cheap enough to redo. A lock keeps a second ``cxrgen study`` out of the directory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

from cxrgen.config import Configuration, StudyConfig, run_dir
from cxrgen.errors import CxrgenError
from cxrgen.evaluate import auc_table, read_predictions
from cxrgen.fileio import sweep_temporaries, write_csv
from cxrgen.lock import study_lock
from cxrgen.prepare import run_prepare

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def planned_runs(config: StudyConfig, only: str | None = None) -> Iterator[tuple[Configuration, str]]:
    """Every (configuration, architecture) of the study, or the one ``only`` names (``configuration/arch``)."""
    names = [f"{c.name}/{a}" for c in config.configurations for a in config.architectures]
    if only is not None and only not in names:
        raise CxrgenError(f"--only {only!r} names no run of this study (runs: {', '.join(names)})")
    for configuration in config.configurations:
        for arch in config.architectures:
            if only is None or only == f"{configuration.name}/{arch}":
                yield configuration, arch


def evaluate_run(config: StudyConfig, study_dir: Path, configuration: Configuration, arch: str) -> pd.DataFrame:
    """Tidy AUC rows with intervals for every test set of one run, written to ``<run>/auc.csv``."""
    frames = []
    for test_set in configuration.test_sets():
        path = run_dir(study_dir, configuration.name, arch) / "predictions" / f"{test_set.name}.parquet"
        predictions, labels = read_predictions(path)
        extra = {"configuration": configuration.name, "arch": arch, "test_set": test_set.name, "kind": test_set.kind}
        frames.append(
            auc_table(
                predictions, labels, n_boot=config.evaluation.bootstrap, seed=config.evaluation.seed,
                ci=config.evaluation.ci, extra=extra,
            )
        )
    table = pd.concat(frames, ignore_index=True)
    write_csv(table, run_dir(study_dir, configuration.name, arch) / "auc.csv")
    return table


def run_study(
    config: StudyConfig,
    *,
    only: str | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Run every step of the study that is not done yet; returns the AUC rows of the runs it covered."""
    from cxrgen.data import CXRDataModule
    from cxrgen.models import study_input_size
    from cxrgen.predict import predict_run, predict_validation
    from cxrgen.training import train_run

    say = progress or (lambda message: log.info("%s", message))
    study_dir = config.out
    runs = list(planned_runs(config, only))
    with study_lock(study_dir):
        swept = sweep_temporaries(study_dir)
        if swept:
            log.info("removed %d temporary file(s) left by a killed run", swept)
        say("prepare: manifest, splits, verify, cache")
        run_prepare(config, until="cache", workers=workers)
        tables = []
        for configuration, arch in runs:
            say(f"train {configuration.name}/{arch}")
            # One data module per run, shared by training and every test set's predictions.
            size = study_input_size(config, arch)
            datamodule = CXRDataModule.from_study(config, study_dir, configuration.name, size)
            train_run(config, study_dir, configuration.name, arch, datamodule=datamodule, progress=True)
            for test_set in configuration.test_sets():
                say(f"predict {configuration.name}/{arch} on {test_set.name}")
                predict_run(config, study_dir, configuration.name, arch, test_set.name, datamodule=datamodule)
            predict_validation(config, study_dir, configuration.name, arch, datamodule=datamodule)  # issue 11
            say(f"evaluate {configuration.name}/{arch}")
            tables.append(evaluate_run(config, study_dir, configuration, arch))
    return pd.concat(tables, ignore_index=True)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean AUC over labels per run and test set, internal beside external: the study's headline."""
    means = table.groupby(["configuration", "arch", "kind", "test_set"], sort=False)["auc"].mean().reset_index()
    return means.rename(columns={"auc": "mean_auc"}).round({"mean_auc": 3})
