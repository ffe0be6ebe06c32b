"""``cxrgen predictions convert``: a published model's table -> a predictions file that ``evaluate`` accepts."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cxrgen.cli import app
from cxrgen.metrics.evaluate import evaluate_files, read_predictions
from cxrgen.sources.labels import canonical_label


def _convert(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["predictions", "convert", *map(str, args)])
    return result.exit_code, " ".join((result.stdout + result.stderr).split())


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, Path]:
    """A model's CSV in reproduce-chexnet's layout and an NIH-style metadata table (gzipped, a column more)."""
    preds = pd.DataFrame({
        "Image Index": ["00000001_000.png", "00000001_001.png", "00000002_000.png", "00000003_000.png"],
        "prob_Cardiomegaly": [0.9, 0.2, 0.4, 0.1],
        "prob_Effusion": [0.3, 0.8, 0.1, 0.6],
        "prob_Pleural_Thickening": [0.05, 0.5, 0.2, 0.3],
    })  # fmt: skip
    meta = pd.DataFrame({
        "Image Index": ["00000003_000.png", "00000001_000.png", "00000001_001.png", "00000002_000.png", "x.png"],
        "Finding Labels": ["Effusion", "Cardiomegaly", "Effusion|Pleural_Thickening", "No Finding", "Hernia"],
        "Patient ID": ["3", "1", "1", "2", "9"],
    })  # fmt: skip
    preds.to_csv(tmp_path / "preds.csv", index=False)
    meta.to_csv(tmp_path / "Data_Entry.csv.gz", index=False)
    return tmp_path / "preds.csv", tmp_path / "Data_Entry.csv.gz"


def test_convert_joins_patients_and_findings_by_image_id(published: tuple[Path, Path], tmp_path: Path) -> None:
    preds, meta = published
    out = tmp_path / "nih.parquet"
    code, text = _convert(preds, "--image-id", "Image Index", "--patients", meta, "--patients-id", "Patient ID",
                          "--findings", "Finding Labels", "--out", out)  # fmt: skip
    assert code == 0, text
    assert "4 images, 3 patients, 3 labels (3 with ground truth)" in text
    frame, labels = read_predictions(out)
    assert labels == ["Cardiomegaly", "Pleural Effusion", "Pleural Thickening"]  # the study's spelling
    assert frame["patient_id"].tolist() == ["1", "1", "2", "3"]  # joined on the id, not by row order
    assert frame["y_Cardiomegaly"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert frame["y_Pleural Effusion"].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert frame["y_Pleural Thickening"].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert frame["p_Pleural Effusion"].tolist() == [0.3, 0.8, 0.1, 0.6]


def test_convert_from_columns_with_a_label_map(tmp_path: Path) -> None:
    src = tmp_path / "vendor.tsv"
    src.write_text("id\tpid\tscore_cm\ttruth_Cardiomegaly\na\tp1\t0.7\t1\nb\tp2\t0.2\t0\nc\tp2\t0.4\t\n")
    out = tmp_path / "vendor.parquet"
    code, text = _convert(src, "--image-id", "id", "--patient-id", "pid", "--label-map", "score_cm=cardiomegaly",
                          "--truth-prefix", "truth_", "--out", out)  # fmt: skip
    assert code == 0, text
    frame, labels = read_predictions(out)
    assert labels == ["Cardiomegaly"] and frame["patient_id"].tolist() == ["p1", "p2", "p2"]
    np.testing.assert_array_equal(frame["y_Cardiomegaly"].to_numpy(), [1.0, 0.0, np.nan])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image-id", "Image", "--patients-id", "Patient ID"],
         r"preds\.csv: --image-id: column 'Image' does not exist"),
        (["--image-id", "Image Index"], r"no patient id: give --patient-id COLUMN, or --patients TABLE"),
        (["--image-id", "Image Index", "--patients-id", "PID"], r"Data_Entry\.csv\.gz: --patients-id: column 'PID'"),
        (["--image-id", "Image Index", "--patients-id", "Patient ID", "--prob-prefix", "p_"],
         r"preds\.csv: no column starts with 'p_' \(--prob-prefix\)"),
        (["--image-id", "Image Index", "--patients-id", "Patient ID", "--label-map", "prob_Effusion"],
         r"--label-map: 'prob_Effusion' is not COLUMN=Label"),
        (["--image-id", "Image Index", "--patients-id", "Patient ID", "--label-map",
          "prob_Effusion=Effusion,prob_Pleural_Thickening=Pleural Effusion"],
         r"columns 'prob_Effusion' and 'prob_Pleural_Thickening' are both the label 'Pleural Effusion'"),
    ],
)
def test_convert_bad_input_is_one_error_line(
    args: list[str], message: str, published: tuple[Path, Path], tmp_path: Path
) -> None:
    preds, meta = published
    extra = ["--patients", str(meta)] if "--patients-id" in args else []
    code, text = _convert(preds, *args, *extra, "--out", tmp_path / "o.parquet")
    assert code == 1 and text.startswith("error:"), text
    assert re.search(message, text), text
    assert not (tmp_path / "o.parquet").exists()


def test_convert_refuses_an_image_without_a_patient(published: tuple[Path, Path], tmp_path: Path) -> None:
    preds, meta = published
    pd.read_csv(meta).iloc[1:].to_csv(meta, index=False)  # 00000003_000.png loses its metadata row
    code, text = _convert(preds, "--image-id", "Image Index", "--patients", meta, "--patients-id", "Patient ID",
                          "--out", tmp_path / "o.parquet")  # fmt: skip
    assert code == 1, text
    assert "1 of 4 image ids are not in" in text and "'00000003_000.png'" in text, text


@pytest.mark.realdata
def test_published_chexnet_csv_converts_in_one_command(realdata: Path, tmp_path: Path) -> None:
    """reproduce-chexnet's preds.csv + NIH Data_Entry -> a predictions file whose 14 AUCs are the authors' own."""
    folder = realdata / "nih" / "model_outputs_reproduce_chexnet"
    meta = realdata / "nih" / "metadata" / "Data_Entry_2017_v2020.csv.gz"
    out = tmp_path / "nih_test.parquet"
    code, text = _convert(folder / "preds.csv", "--image-id", "Image Index", "--patients", meta,
                          "--patients-id", "Patient ID", "--findings", "Finding Labels", "--out", out)  # fmt: skip
    assert code == 0, text
    assert "22,433 images" in text and "14 labels (14 with ground truth)" in text, text
    auc, _ = evaluate_files([out], tmp_path / "eval", n_boot=20, seed=0)
    published = pd.read_csv(folder / "aucs.csv")
    assert len(published) == len(auc) == 14
    ours = auc.set_index("label")["auc"]
    for token, value in zip(published["label"], published["auc"], strict=True):
        assert ours[canonical_label(token)] == value, token  # to full precision
