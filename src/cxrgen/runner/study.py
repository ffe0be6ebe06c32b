"""The whole study as one resumable command: prepare, then train, predict and evaluate every run.

A run is one (configuration, architecture, seed); a single-seed study keeps ``runs/<configuration>/<arch>/``,
several seeds give ``runs/<configuration>/<arch>/seed-<N>/`` (:meth:`cxrgen.study.workspace.Study.run`). Each step is
skipped when its artifact is already there: training resumes from ``last.ckpt`` or returns at once when finished,
predictions are remade only when ``best.ckpt`` changed, and evaluation is cheap enough to redo. A lock keeps a
second ``cxrgen study`` out of the directory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pandas as pd

from cxrgen.errors import CxrgenError
from cxrgen.metrics.evaluate import auc_table, read_predictions
from cxrgen.runner.prepare import run_prepare
from cxrgen.study.config import Configuration, StudyConfig
from cxrgen.study.workspace import Study
from cxrgen.utils.fileio import sweep_temporaries, write_csv
from cxrgen.utils.lock import study_lock

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


def planned_seed_runs(config: StudyConfig, only: str | None = None) -> Iterator[tuple[Configuration, str, int]]:
    """Every (configuration, architecture, seed) of the study, or those ``only`` names.

    ``only`` is ``configuration/arch`` (all its seeds) or ``configuration/arch/seed``.
    """
    seeds = config.train.seed_list()
    wanted_seed: int | None = None
    pair = only
    if only is not None and only.count("/") == 2:
        pair, _, text = only.rpartition("/")
        if not text.lstrip("-").isdigit() or int(text) not in seeds:
            raise CxrgenError(f"--only {only!r}: seed {text!r} is not one of train.seeds {seeds}")
        wanted_seed = int(text)
    for configuration, arch in planned_runs(config, pair):
        for seed in seeds:
            if wanted_seed is None or seed == wanted_seed:
                yield configuration, arch, seed


def evaluate_run(study: Study, configuration: Configuration, arch: str, seed: int | None = None) -> pd.DataFrame:
    """Tidy AUC rows with intervals for every test set of one run, written to ``<run>/auc.csv``."""
    config = study.config
    frames = []
    run = study.run(configuration.name, arch, seed)
    for test_set in configuration.test_sets():
        predictions, labels = read_predictions(run.predictions(test_set.name))
        extra = {"configuration": configuration.name, "arch": arch, "test_set": test_set.name, "kind": test_set.kind}
        frames.append(
            auc_table(
                predictions, labels, n_boot=config.evaluation.bootstrap, seed=config.evaluation.seed,
                ci=config.evaluation.ci, extra=extra,
            )
        )
    table = pd.concat(frames, ignore_index=True)
    write_csv(table, run.auc)
    return table


def run_study(
    study: Study,
    *,
    only: str | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Run every step of the study that is not done yet; returns the AUC rows of the runs it covered."""
    say = progress or (lambda message: log.info("%s", message))
    runs = list(planned_seed_runs(study.config, only))
    with study_lock(study.dir.path):
        swept = sweep_temporaries(study.dir.path)
        if swept:
            log.info("removed %d temporary file(s) left by a killed run", swept)
        say("prepare: manifest, splits, verify, cache")
        run_prepare(study, until="cache", workers=workers)
        tables = [complete_run(study, configuration, arch, seed, say) for configuration, arch, seed in runs]
    return pd.concat(tables, ignore_index=True)


def run_name(config: StudyConfig, configuration: str, arch: str, seed: int) -> str:
    """``configuration/arch``, with ``/seed-N`` when the study has several seeds (as its run folder)."""
    return f"{configuration}/{arch}" + (f"/seed-{seed}" if len(config.train.seed_list()) > 1 else "")


def complete_run(
    study: Study,
    configuration: Configuration,
    arch: str,
    seed: int | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Train (resuming), predict every test set and evaluate one run: a step of ``run_study`` or a whole job.

    ``seed`` is one of ``train.seeds`` (None: the first).
    """
    from cxrgen.data.loaders import CXRDataModule
    from cxrgen.learn.predict import predict_run, predict_validation
    from cxrgen.learn.probe_run import probe_run
    from cxrgen.learn.train import train_run

    say = progress or (lambda message: log.info("%s", message))
    run_seed = study.seed(seed)
    name = run_name(study.config, configuration.name, arch, run_seed)
    # One data module per run, shared by training and every test set's predictions.
    size = study.config.input_size(arch)
    datamodule = CXRDataModule.from_study(study, configuration.name, size)
    if study.config.external_model(arch) is not None:
        from cxrgen.learn.external import predict_external_run

        say(f"predict {name} (a model from elsewhere, never trained) on every test set")
        predict_external_run(study, configuration.name, arch, datamodule=datamodule, seed=run_seed)
        return evaluate_run(study, configuration, arch, run_seed).assign(seed=run_seed)
    if study.config.is_linear_probe(arch):
        say(f"embed and fit linear probes {name}")
        probe_run(study, configuration.name, arch, datamodule=datamodule, seed=run_seed)
        return evaluate_run(study, configuration, arch, run_seed).assign(seed=run_seed)
    say(f"train {name}")
    train_run(study, configuration.name, arch, datamodule=datamodule, progress=True, seed=run_seed)
    for test_set in configuration.test_sets():
        say(f"predict {name} on {test_set.name}")
        predict_run(study, configuration.name, arch, test_set.name, datamodule=datamodule, seed=run_seed)
    predict_validation(study, configuration.name, arch, datamodule=datamodule, seed=run_seed)  # issue 11
    say(f"evaluate {name}")
    return evaluate_run(study, configuration, arch, run_seed).assign(seed=run_seed)


def run_finished(study: Study, configuration: Configuration, arch: str, seed: int | None = None) -> bool:
    """Trained, predicted on every test set and evaluated: nothing of this run is left to do."""
    run = study.run(configuration.name, arch, seed)
    predictions = [run.predictions(t.name) for t in configuration.test_sets()]
    return all(path.exists() for path in [run.done, run.auc, *predictions])


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean AUC over labels per run and test set, internal beside external: the study's headline.

    The mean is over the labels whose AUC is defined on that test set (both classes present); ``labels`` says
    how many of the study's labels that is (``3 of 5``), and an unlabelled set has a NaN mean and ``0 of 5``.
    """
    keys = ["configuration", "arch", "kind", "test_set"]
    grouped = table.groupby(keys, sort=False)["auc"]
    means = grouped.mean().reset_index().rename(columns={"auc": "mean_auc"}).round({"mean_auc": 3})
    counts = grouped.agg(lambda a: f"{int(a.notna().sum())} of {len(a)}").reset_index(drop=True)
    return means.assign(labels=counts.to_numpy())
