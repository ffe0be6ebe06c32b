"""``cxrgen export mlflow`` (issue 26) against a real MLflow SQLite store, read back through ``mlflow.search_runs``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cxrgen.cli import app
from cxrgen.report import build_report
from helpers.report_study import make_study

mlflow = pytest.importorskip("mlflow")
runner = CliRunner()
EPOCHS = pd.DataFrame({"epoch": [1, 2, 3], "step": [4, 8, 12], "train_loss": [0.7, 0.5, 0.4],
                       "val_loss": [0.72, 0.6, 0.58], "val_auc_mean": [0.6, 0.7, 0.72], "lr": [1e-3] * 3})


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    study = make_study(root, patients=12, archs=("densenet121",))
    for run in sorted((study / "runs").glob("*/*")):  # finished runs, as training leaves them
        EPOCHS.to_csv(run / "metrics.csv", index=False)
        (run / "done.json").write_text(json.dumps({"fingerprint": "f" * 16, "epochs": 3}))
    build_report(study, review=False)
    return study


def _export(study: Path, uri: str) -> str:
    result = runner.invoke(app, ["export", "mlflow", str(study), "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    return result.output


def test_export_writes_every_finished_run_and_a_rerun_updates(study: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.create_experiment("fake", artifact_location=(tmp_path / "artifacts").as_uri())  # a file store in tmp
    assert "2 run(s) created, 0 updated" in _export(study, uri)
    mlflow.set_tracking_uri(uri)
    first = mlflow.search_runs(experiment_names=["fake"])
    assert len(first) == 2
    assert set(first["tags.cxrgen.run"]) == {"alpha/densenet121/0", "both/densenet121/0"}
    row = first.set_index("tags.cxrgen.run").loc["alpha/densenet121/0"]
    assert row["params.arch"] == "densenet121" and row["params.train.lr"] == "0.001"
    auc = pd.read_csv(study / "results" / "auc.csv").query("configuration == 'alpha' and test_set == 'gamma'")
    expected = auc.set_index("label").loc["Cardiomegaly", "auc"]
    assert row["metrics.auc/gamma/Cardiomegaly"] == pytest.approx(expected)
    history = client.get_metric_history(row["run_id"], "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.7), (2, 0.5), (3, 0.4)]
    artifacts = [f.path for f in client.list_artifacts(row["run_id"], "report")]
    assert "report/report.html" in artifacts and "report/tripod_ai.csv" in artifacts

    assert "0 run(s) created, 2 updated" in _export(study, uri)  # the same store again: no duplicates
    second = mlflow.search_runs(experiment_names=["fake"])
    assert len(second) == len(first)
    assert set(second["run_id"]) == set(first["run_id"])
    assert len(client.get_metric_history(row["run_id"], "train_loss")) == 3  # epochs not logged twice


def test_unfinished_runs_are_not_exported(tmp_path: Path) -> None:
    study = make_study(tmp_path, patients=6, archs=("densenet121",))
    result = runner.invoke(app, ["export", "mlflow", str(study), "--tracking-uri",
                                 f"sqlite:///{tmp_path / 'mlflow.db'}"])  # fmt: skip
    assert result.exit_code == 1
    assert "no finished run" in result.output
