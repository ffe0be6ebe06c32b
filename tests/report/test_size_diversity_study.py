"""A six-hospital size-matched study end to end through ``cxrgen plan``, ``cxrgen study`` and ``cxrgen report``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cxrgen.synthetic import write_synthetic

pytestmark = pytest.mark.slow  # six synthetic hospitals, embeddings and a probe grid: a few minutes

HOSPITALS = ["chexpert", "nih", "mimic", "padchest", "vindr", "brax"]
STUDY = """\
name: size-vs-sources
out: study
datasets:
  chexpert: {reader: chexpert, root: data/chexpert, csv: train.csv}
  nih: {reader: nih, root: data/nih}
  mimic: {reader: mimic, root: data/mimic, labels: chexpert}
  padchest: {reader: padchest, root: data/padchest}
  vindr: {reader: vindr, root: data/vindr, readers: majority}
  brax: {reader: brax, root: data/brax}
labels: [Cardiomegaly, Edema, Pleural Effusion]
splits:
  mimic: {method: official}
  vindr: {method: official}
preprocess: {clahe: true, engine: opencv, size: 32}
architectures: [{name: rand_probe, timm: resnet18, mode: linear_probe}]
train: {pretrained: false, num_workers: 0}
probe: {Cs: [0.01, 1.0]}
evaluation: {bootstrap: 20}
design:
  size_matched: {sources: [chexpert, nih, padchest, brax], n: [40, 80], k: [1, 2], combinations: 3, replicates: 1}
configurations:
  - {name: union, train: [chexpert, nih], internal: [chexpert, nih], external: [mimic, vindr]}
  - {name: only-chexpert, train: [chexpert], internal: [chexpert], external: [mimic, vindr]}
  - {name: only-nih, train: [nih], internal: [nih], external: [mimic, vindr]}
"""


def cxrgen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cxrgen", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=1200)  # fmt: skip


def test_size_matched_study_end_to_end(tmp_path: Path) -> None:
    write_synthetic(tmp_path / "data", seed=5, scale=0.15, image_size=64, hospitals=HOSPITALS)
    (tmp_path / "study.yaml").write_text(STUDY)
    plan = cxrgen("plan", "study.yaml", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "sm-n80-k2" in plan.stdout and "probe" in plan.stdout
    result = cxrgen("study", "study.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = tmp_path / "study"
    sample = pd.read_parquet(next((study / "runs").glob("sm-n80-k2-*/subsample.parquet")))
    assert (sample["split"] == "train").sum() == 80
    assert sample[sample["split"] == "train"]["dataset"].value_counts().tolist() == [40, 40]
    result = cxrgen("report", "study", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    effects = pd.read_csv(study / "results" / "size_vs_sources.csv")
    assert effects["term"].tolist() == ["k", "log2_n"]
    assert effects["auc_change"].notna().all() and (effects["auc_low"] <= effects["auc_high"]).all()
    runs = pd.read_csv(study / "results" / "size_vs_sources_runs.csv")
    assert set(runs["n"]) == {40, 80} and set(runs["k"]) == {1, 2}
    assert all(t not in c.split("+") for t, c in zip(runs["test_set"], runs["combination"], strict=True))
    claim = pd.read_csv(study / "results" / "union_vs_size.csv")
    assert set(claim["test_set"]) <= {"mimic", "vindr"} and len(claim) > 0
    assert (study / "results" / "figures" / "size_vs_sources.png").is_file()
    page = (study / "results" / "report.html").read_text()
    assert "More data or more diverse data?" in page and "AUC change per added source at fixed size" in page
