"""The real Hannover export (``../shared/realdata/hannover``) as an unlabelled external test set of a study on the
synthetic hospitals, through ``cxrgen plan``, ``study``, ``report`` and ``status`` (issue 23)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cxrgen.synthetic import write_synthetic
from helpers.faults import ARCH, LABELS, cxrgen

#: The worked example of the README's "Your hospital, your model", with the tiny test architecture.
HANNOVER = {
    "reader": "table", "table": "data.csv", "image": "png/{image_id}.png",
    "columns": {"patient": "patient_id", "view": "projection", "sex": "sex", "age": "age"},
}  # fmt: skip


@pytest.mark.slow
def test_hannover_is_an_unlabelled_external_test_set_through_study_and_report(realdata: Path, tmp_path: Path) -> None:
    write_synthetic(tmp_path / "data", seed=0, scale=0.05, image_size=64)
    study = {
        "name": "hannover", "out": "out", "labels": LABELS, "architectures": [ARCH],
        "datasets": {
            "chexpert": {"reader": "chexpert", "root": "data/chexpert", "csv": "train.csv"},
            "nih": {"reader": "nih", "root": "data/nih"},
            "hannover": {**HANNOVER, "root": str(realdata / "hannover")},
        },
        "preprocess": {"size": 32, "engine": "opencv"},
        "train": {"pretrained": False, "max_epochs": 1, "batch_size": 16, "num_workers": 0, "accelerator": "cpu",
                  "devices": 1},
        "evaluation": {"bootstrap": 20},
        "configurations": [{"name": "both", "train": ["chexpert", "nih"], "internal": ["chexpert", "nih"],
                            "external": ["hannover"]}],
    }  # fmt: skip
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))

    plan = cxrgen("plan", "study.yaml", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "hannover 243/71" in plan.stdout
    assert "hannover: no configuration trains on it: an external test set used whole (unlabelled" in plan.stdout

    result = cxrgen("study", "study.yaml", "--workers", "1", cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    predictions = pd.read_parquet(out / "runs/both" / ARCH / "predictions/hannover.parquet")
    assert len(predictions) == 243 and predictions["patient_id"].nunique() == 71
    assert predictions["image_id"].str.startswith("hannover:png/").all()
    for label in LABELS:
        assert predictions[f"y_{label}"].isna().all()  # unlabelled: never 0 under blank: zeros
        p = predictions[f"p_{label}"].to_numpy()
        assert np.isfinite(p).all() and ((p > 0) & (p < 1)).all()

    report = cxrgen("report", "out", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    auc = pd.read_csv(out / "results/auc.csv")
    external = auc[auc["test_set"] == "hannover"]
    assert len(external) == len(LABELS) and external["auc"].isna().all()
    assert (external[["n_pos", "n_neg"]] == 0).all().all()
    cohort = pd.read_csv(out / "results/cohort.csv").set_index(["dataset", "split"])
    assert cohort.loc[("hannover", "test"), ["images", "patients", "unlabelled"]].tolist() == [243, 71, 243]
    assert cohort.loc[("hannover", "all"), "male_pct"] == round(100 * 180 / 243, 1)
    assert ("hannover", "train") not in cohort.index
    html = (out / "results/report.html").read_text()
    assert "hannover" in html
    status = cxrgen("status", "out", cwd=tmp_path)
    assert status.returncode == 0 and "done" in status.stdout, status.stderr[-3000:]
