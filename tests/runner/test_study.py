"""``cxrgen study`` + ``cxrgen report`` end to end on a tiny synthetic set, through the real command."""

from __future__ import annotations

import html.parser
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrgen.metrics.evaluate import read_predictions
from cxrgen.runner.study import planned_runs
from cxrgen.study.config import load_study
from cxrgen.synthetic import write_synthetic

pytestmark = pytest.mark.slow  # real processes and whole studies: minutes; `make test-fast` leaves them out

ARCHS = ["test_byobnet", "test_resnet"]
STUDY = """\
name: tiny
out: study
datasets:
  chexpert: {reader: chexpert, root: data/chexpert, csv: train.csv}
  nih: {reader: nih, root: data/nih}
  mimic: {reader: mimic, root: data/mimic, labels: chexpert}
uncertainty: {Atelectasis: ones, Cardiomegaly: zeros, Consolidation: zeros, Edema: ones, Pleural Effusion: ones}
splits:
  mimic: {method: official}
preprocess: {clahe: true, engine: opencv, size: 32}
architectures: [test_byobnet, test_resnet]
train: {batch_size: 16, max_epochs: 1, patience: 1, pretrained: false, num_workers: 0}
evaluation: {bootstrap: 30}
configurations:
  - {name: chexpert, train: [chexpert], internal: [chexpert], external: [mimic]}
  - {name: both, train: [chexpert, nih], internal: [chexpert, nih], external: [mimic]}
review: {label: Cardiomegaly, per_kind: 2}
"""


def cxrgen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cxrgen", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


class AucCells(html.parser.HTMLParser):
    """Collects the ``data-*`` attributes of every element that carries ``data-auc``."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs if k.startswith("data-")}
        if "data-auc" in found:
            self.cells.append(found)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    write_synthetic(root / "data", seed=3, scale=0.15, image_size=64)
    (root / "study.yaml").write_text(STUDY)
    result = cxrgen("study", "study.yaml", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mean AUC" in result.stdout
    result = cxrgen("report", "study", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def test_every_run_has_its_artifacts(finished: Path) -> None:
    config = load_study(finished / "study.yaml")
    for configuration, arch in planned_runs(config):
        run = finished / "study" / "runs" / configuration.name / arch
        for name in ("config.yaml", "metrics.csv", "auc.csv", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
            assert (run / name).is_file(), run / name
        for test_set in configuration.test_sets():
            frame, labels = read_predictions(run / "predictions" / f"{test_set.name}.parquet")
            assert labels == config.labels
            assert list(frame.columns) == ["image_id", "patient_id"] + [
                c for label in config.labels for c in (f"y_{label}", f"p_{label}")
            ]
        # the internal set of "both" is the union of both internal test splits
    splits = pd.read_parquet(finished / "study" / "splits.parquet")
    internal, _ = read_predictions(finished / "study" / "runs" / "both" / ARCHS[0] / "predictions" / "internal.parquet")
    expected = splits.loc[splits["dataset"].isin(["chexpert", "nih"]) & (splits["split"] == "test"), "image_id"]
    assert sorted(internal["image_id"]) == sorted(expected)
    external, _ = read_predictions(finished / "study" / "runs" / "both" / ARCHS[0] / "predictions" / "mimic.parquet")
    assert sorted(external["image_id"]) == sorted(splits.loc[(splits["dataset"] == "mimic")
                                                              & (splits["split"] == "test"), "image_id"])


def test_results_files_and_schemas(finished: Path) -> None:
    results = finished / "study" / "results"
    for name in ("auc.csv", "comparisons.csv", "table1.md", "table1.csv", "table1.tex", "report.html"):
        assert (results / name).is_file(), name
    auc = pd.read_csv(results / "auc.csv")
    required = ["configuration", "arch", "test_set", "kind", "label", "auc", "ci_low", "ci_high", "n_pos", "n_neg"]
    assert list(auc.columns[: len(required)]) == required
    assert len(auc) == 2 * 2 * 2 * 5  # configurations x archs x test sets x labels
    assert set(auc["kind"]) == {"internal", "external"}
    ok = auc["auc"].notna()
    assert ((auc.loc[ok, "ci_low"] <= auc.loc[ok, "auc"]) & (auc.loc[ok, "auc"] <= auc.loc[ok, "ci_high"])).all()
    comparisons = pd.read_csv(results / "comparisons.csv")
    assert {"internal_vs_external", "multi_vs_single", "architectures"} <= set(comparisons["family"])
    assert (comparisons["p_holm"].dropna() >= comparisons["p"].dropna() - 1e-12).all()
    figures = sorted(p.name for p in (results / "figures").glob("*.png"))
    assert {f"roc_{a}.png" for a in ARCHS} <= set(figures) and "generalization_gap.png" in figures
    for png in (results / "figures").glob("*.png"):
        with Image.open(png) as image:
            image.verify()


def test_report_numbers_equal_auc_csv(finished: Path) -> None:
    results = finished / "study" / "results"
    auc = pd.read_csv(results / "auc.csv").set_index(["configuration", "arch", "test_set", "label"])
    parser = AucCells()
    parser.feed((results / "report.html").read_text())
    assert len(parser.cells) == len(auc)
    for cell in parser.cells:
        key = (cell["data-configuration"], cell["data-arch"], cell["data-test-set"], cell["data-label"])
        expected = auc.loc[key, "auc"]
        shown = float(cell["data-auc"])
        assert (np.isnan(shown) and np.isnan(expected)) or shown == expected, key


def test_a_second_study_run_does_no_work(finished: Path) -> None:
    checkpoint = finished / "study" / "runs" / "both" / ARCHS[1] / "checkpoints" / "best.ckpt"
    predictions = checkpoint.parents[1] / "predictions" / "mimic.parquet"
    before = (checkpoint.stat().st_mtime_ns, predictions.stat().st_mtime_ns)
    result = cxrgen("study", "study.yaml", "--only", f"both/{ARCHS[1]}", cwd=finished)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (checkpoint.stat().st_mtime_ns, predictions.stat().st_mtime_ns) == before


def test_only_names_a_run(finished: Path) -> None:
    result = cxrgen("study", "study.yaml", "--only", "nih/densenet121", cwd=finished)
    assert result.returncode == 1
    assert "names no run of this study" in result.stderr


def test_shift_analyses_come_from_validation_predictions(finished: Path) -> None:
    """Issue 11: every run predicts its validation set, and the report writes the six shift CSVs from it."""
    config = load_study(finished / "study.yaml")
    results = finished / "study" / "results"
    for configuration, arch in planned_runs(config):
        frame, _ = read_predictions(finished / "study" / "runs" / configuration.name / arch / "validation.parquet")
        splits = pd.read_parquet(finished / "study" / "splits.parquet")
        val = splits.loc[splits["dataset"].isin(configuration.train) & (splits["split"] == "val"), "image_id"]
        assert set(frame["image_id"]) <= set(val) and len(frame) > 0
    for name in ("protocols", "operating_points", "calibration_shift", "subgroups", "shortcut", "borderline"):
        assert (results / f"{name}.csv").is_file(), name
    shortcut = pd.read_csv(results / "shortcut.csv")
    assert set(shortcut["device_source"]) == {"truth.parquet (synthetic pacemaker)"}
    assert "Shift-aware evaluation" in (results / "report.html").read_text(encoding="utf-8")
