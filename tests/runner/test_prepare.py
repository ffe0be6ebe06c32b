"""``cxrgen prepare --until manifest|splits`` end to end through the real command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers.native import CHEX_FIXTURE_ROWS, chexpert_csv, mimic_root, nih_data_entry

STUDY = """\
name: mini
out: out
datasets:
  chexpert: {reader: chexpert, root: chexpert}
  nih: {reader: nih, root: nih}
  mimic: {reader: mimic, root: mimic, labels: chexpert}
uncertainty: {Atelectasis: ones, Cardiomegaly: zeros, Consolidation: zeros, Edema: ones, Pleural Effusion: ones}
splits:
  nih: {method: official, val_fraction: 0.5}
  mimic: {method: official}
configurations:
  - {name: both, train: [chexpert, nih], internal: [chexpert, nih], external: [mimic]}
"""


def cxrgen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cxrgen", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def study(tmp_path: Path) -> Path:
    chexpert_csv(tmp_path / "chexpert" / "CheXpert-v1.0-small" / "train.csv", CHEX_FIXTURE_ROWS)
    nih_data_entry(tmp_path / "nih", "v2020")
    mimic_root(tmp_path / "mimic")
    (tmp_path / "study.yaml").write_text(STUDY)
    return tmp_path / "study.yaml"


def test_prepare_until_splits_writes_manifest_and_splits(study: Path) -> None:
    result = cxrgen("prepare", str(study), "--until", "splits", cwd=study.parent)
    assert result.returncode == 0, result.stderr
    out = study.parent / "out"
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == 4 + 5 + 5
    assert manifest.groupby("dataset").size().to_dict() == {"chexpert": 4, "nih": 5, "mimic": 5}
    # policies applied: CheXpert Edema -1 -> 1 (U-Ones), blank -> 0
    row = manifest.set_index("image_id").loc["chexpert:train/patient00001/study1/view1_frontal.jpg"]
    assert (row["raw_Edema"], row["Edema"], row["Atelectasis"]) == (-1.0, 1.0, 0.0)
    splits = pd.read_parquet(out / "splits.parquet")
    assert list(splits.columns) == ["image_id", "dataset", "split"]
    assert splits["image_id"].tolist() == manifest["image_id"].tolist()
    assert splits.loc[splits["dataset"] == "nih", "split"].tolist()[3:] == ["test", "test"]
    assert (out / "config.yaml").is_file()
    assert "Pleural Effusion" in result.stdout and "patients" in result.stdout
    before = (out / "manifest.parquet").stat().st_mtime_ns
    assert cxrgen("prepare", str(study), "--until", "splits", cwd=study.parent).returncode == 0
    assert (out / "manifest.parquet").stat().st_mtime_ns == before  # unchanged content is not rewritten


def test_views_filter(study: Path) -> None:
    study.write_text(STUDY + "views: [PA]\n")
    assert cxrgen("prepare", str(study), "--until", "manifest", cwd=study.parent).returncode == 0
    manifest = pd.read_parquet(study.parent / "out" / "manifest.parquet")
    assert set(manifest["view"]) == {"PA"} and len(manifest) == 1 + 3 + 1


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: (p / "study.yaml").write_text(STUDY + "bogus: 1\n"), "study.yaml: bogus: unknown key"),
        (lambda p: (p / "nih" / "Data_Entry_2017_v2020.csv").unlink(), "missing NIH metadata"),
        (
            lambda p: (p / "nih" / "test_list.txt").write_text("00000003_000.png"),
            "dataset 'nih': 1 image.*no official split",
        ),
        (lambda p: (p / "study.yaml").write_text(STUDY.replace("root: mimic", "root: nowhere")), "does not exist"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(study: Path, edit: object, message: str) -> None:
    edit(study.parent)  # type: ignore[operator]
    result = cxrgen("prepare", str(study), "--until", "splits", cwd=study.parent)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and pytest.importorskip("re").search(message, lines[0]), result.stderr
    assert not (study.parent / "out" / "splits.parquet").exists()
