"""``cxrgen export mlflow STUDY_DIR``: every finished run of a study into an MLflow tracking store, after the sweep.

One process writes the store, so concurrent SLURM jobs never share one SQLite file: training writes only its run
folder (``metrics.csv``, the source of truth), and this export reads those folders. Per finished run (``done.json``)
one MLflow run holds

- parameters: configuration, architecture, seed, fingerprint, labels, training datasets and every ``train`` key;
- per-epoch metrics from ``metrics.csv`` (``train_loss``, ``val_loss``, ``val_auc_mean``, ``val_auc_<label>``,
  ``lr``, ``seconds``; step = epoch);
- the final AUCs from ``results/auc.csv`` as ``auc/<test_set>/<label>`` (with ``auc_low``/``auc_high``);
- ``results/report.html`` (and ``auc.csv``, ``tripod_ai.csv``) as artifacts under ``report/``.

A run is found again by its tag ``cxrgen.run`` = ``<configuration>/<arch>/<seed>``, so a rerun updates the MLflow
run instead of adding another: parameters already logged are kept, only epochs not yet logged are added, and a
final AUC is logged again only when the report changed it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cxrgen.errors import CxrgenError
from cxrgen.study.workspace import Study

log = logging.getLogger(__name__)

RUN_TAG = "cxrgen.run"
STUDY_TAG = "cxrgen.study"
REPORT_FILES = ("report.html", "auc.csv", "tripod_ai.csv")


@dataclass(frozen=True)
class ExportSummary:
    """What one export did: runs created, runs updated, and the store's experiment."""

    created: int
    updated: int
    experiment_id: str
    tracking_uri: str


def default_tracking_uri(study_dir: Path) -> str:
    """``sqlite:///<study>/mlflow.db``: a store beside the study, readable with ``mlflow ui --backend-store-uri``."""
    return f"sqlite:///{(Path(study_dir) / 'mlflow.db').resolve()}"


def _finished_runs(study: Study) -> list[tuple[str, str, int, Path]]:
    out = []
    for conf in study.config.configurations:
        for arch in study.config.architectures:
            for seed in study.seeds:
                run = study.run(conf.name, arch, seed)
                if run.finished:
                    out.append((conf.name, arch, seed, run.path))
    return out


def _params(study: Study, configuration: str, arch: str, seed: int, folder: Path) -> dict[str, str]:
    config = study.config
    conf = config.configuration(configuration)
    done = json.loads((folder / "done.json").read_text(encoding="utf-8"))
    params: dict[str, Any] = {
        "configuration": configuration, "arch": arch, "seed": seed, "labels": ", ".join(config.labels),
        "train_datasets": ", ".join(conf.train), "internal": ", ".join(conf.internal),
        "external": ", ".join(conf.external), "fingerprint": done.get("fingerprint", ""),
        "input_size": _input_size(study, arch),
    }  # fmt: skip
    for key, value in config.train.model_dump(mode="json").items():
        if key not in ("seeds", "seed", "weights"):
            params[f"train.{key}"] = json.dumps(value) if isinstance(value, dict | list) else value
    return {key: str(value)[:6000] for key, value in params.items()}


def _input_size(study: Study, arch: str) -> str:
    try:
        return str(study.config.input_size(arch))
    except (CxrgenError, KeyError, ValueError):
        return ""


def _finite(value: object) -> float | None:
    number = float(value)  # type: ignore[arg-type]
    return None if math.isnan(number) or math.isinf(number) else number


def export_mlflow(study_dir: Path, tracking_uri: str | None = None, experiment: str | None = None,
                  artifact_location: str | None = None) -> ExportSummary:  # fmt: skip
    """Import every finished run of ``study_dir`` into MLflow; rerunning updates instead of duplicating.

    Args:
        study_dir: A study directory (``config.yaml``, ``runs/``, ``results/`` after ``cxrgen report``).
        tracking_uri: The store, e.g. ``sqlite:///path/mlflow.db``; default :func:`default_tracking_uri`.
        experiment: Experiment name; default the study's name.
        artifact_location: Where a new experiment keeps artifacts; default ``<study>/mlartifacts``.

    Raises:
        CxrgenError: mlflow is not installed, or the study has no finished run.
    """
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise CxrgenError("mlflow is not installed: pip install 'cxrgen[mlflow]' (make setup includes it)") from None

    study = Study.open(study_dir)
    runs = _finished_runs(study)
    if not runs:
        raise CxrgenError(f"{study.dir.runs}: no finished run (no done.json); nothing to export")
    uri = tracking_uri or default_tracking_uri(study_dir)
    client = MlflowClient(tracking_uri=uri)
    name = experiment or study.config.name
    found = client.get_experiment_by_name(name)
    if found is None:
        location = artifact_location or (Path(study_dir).resolve() / "mlartifacts").as_uri()
        experiment_id = client.create_experiment(name, artifact_location=location)
    else:
        experiment_id = found.experiment_id
    results = study.dir.results
    auc = pd.read_csv(results / "auc.csv") if (results / "auc.csv").is_file() else None
    if auc is None:
        log.warning("%s: no auc.csv (run `cxrgen report` first); final AUCs not exported", results)
    several = len(study.seeds) > 1
    created = updated = 0
    for configuration, arch, seed, folder in runs:
        key = f"{configuration}/{arch}/{seed}"
        existing = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{key}'", max_results=2)
        if len(existing) > 1:
            log.warning("MLflow experiment %s holds %d runs tagged %s=%s; updating the first", name,
                        len(existing), RUN_TAG, key)  # fmt: skip
        if existing:
            run = existing[0]
            updated += 1
        else:
            run = client.create_run(experiment_id, run_name=key.replace("/", " "),
                                    tags={RUN_TAG: key, STUDY_TAG: str(Path(study_dir).resolve())})  # fmt: skip
            created += 1
        run_id = run.info.run_id
        have_params = run.data.params
        params = [Param(k, v) for k, v in _params(study, configuration, arch, seed, folder).items()
                  if k not in have_params]  # fmt: skip
        now = int(time.time() * 1000)
        metrics: list[Metric] = []
        if (folder / "metrics.csv").is_file():
            epochs = pd.read_csv(folder / "metrics.csv")
            for column in epochs.columns.drop("epoch"):
                last = max((m.step for m in client.get_metric_history(run_id, column)), default=0)
                for epoch, value in zip(epochs["epoch"], epochs[column], strict=True):
                    number = _finite(value)
                    if int(epoch) > last and number is not None:
                        metrics.append(Metric(column, number, now, int(epoch)))
        if auc is not None:
            mine = auc.loc[(auc["configuration"] == configuration) & (auc["arch"] == arch)]
            if several and "seed" in mine:
                mine = mine.loc[mine["seed"] == seed]
            for row in mine.itertuples(index=False):
                for stat, column in (("auc", "auc"), ("auc_low", "ci_low"), ("auc_high", "ci_high")):
                    number = _finite(getattr(row, column))
                    metric = f"{stat}/{row.test_set}/{row.label}"
                    if number is not None and run.data.metrics.get(metric) != number:
                        metrics.append(Metric(metric, number, now, 0))
        for start in range(0, len(params), 90):  # MLflow's batch limits: 100 parameters, 1000 metrics
            client.log_batch(run_id, params=params[start:start + 90])
        for start in range(0, len(metrics), 900):
            client.log_batch(run_id, metrics=metrics[start:start + 900])
        client.log_batch(run_id, tags=[RunTag("cxrgen.exported", time.strftime("%Y-%m-%dT%H:%M:%S"))])
        for file in REPORT_FILES:
            if (results / file).is_file():
                client.log_artifact(run_id, str(results / file), artifact_path="report")
        client.set_terminated(run_id, "FINISHED")
    return ExportSummary(created, updated, experiment_id, uri)
