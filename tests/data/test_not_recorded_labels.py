"""A label a dataset never records stays NaN through the manifest, the loss mask and the metrics, for every reader.

Each reader gets a tiny table in its native layout and the study labels Cardiomegaly (recorded everywhere) and one
label that dataset does not record at all (VinBigData's Edema; a label outside the reader's vocabulary for the
others). ``blank: zeros`` would make a blank negative; a label never recorded must stay NaN all the same.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cxrgen.data.cohort import describe
from cxrgen.data.manifest import build_manifest_with_notes
from cxrgen.learn.module import masked_bce
from cxrgen.metrics import OneClassWarning, auc_per_label
from cxrgen.study.config import StudyConfig
from helpers.native import CHEX_FIXTURE_ROWS, chexpert_csv, mimic_root, nih_data_entry, touch_images


def _csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(rows)


def _chexpert(root: Path) -> None:
    chexpert_csv(root / "CheXpert-v1.0-small" / "train.csv", CHEX_FIXTURE_ROWS)


def _nih(root: Path) -> None:
    nih_data_entry(root, "v2020")


def _mimic(root: Path) -> None:
    root.mkdir(parents=True)
    mimic_root(root)


def _padchest(root: Path) -> None:
    header = ["", "ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth",
              "PatientSex_DICOM", "Projection", "MethodLabel", "Labels"]  # fmt: skip
    rows = [{"": str(i), "ImageID": f"i{i}.png", "ImageDir": "0", "StudyDate_DICOM": "20150101", "StudyID": f"s{i}",
             "PatientID": f"p{i}", "PatientBirth": "1950", "PatientSex_DICOM": "F", "Projection": "PA",
             "MethodLabel": "Physician", "Labels": labels}
            for i, labels in enumerate(["['cardiomegaly']", "['normal']", "['pulmonary edema']"])]  # fmt: skip
    _csv(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", header, rows)
    touch_images(root, [f"0/i{i}.png" for i in range(3)])


def _vindr_kaggle(root: Path) -> None:
    header = ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]
    rows = [{"image_id": image, "class_name": name, "class_id": "3", "rad_id": rad}
            for image, name, rad in [("a", "Cardiomegaly", "R1"), ("a", "Cardiomegaly", "R2"),
                                     ("b", "No finding", "R1"), ("c", "No finding", "R3")]]  # fmt: skip
    _csv(root / "train.csv", header, rows)
    touch_images(root, [f"train/{image}.dicom" for image in "abc"])


def _vindr_physionet(root: Path) -> None:
    findings = ["Cardiomegaly", "Edema", "Pleural effusion", "No finding"]
    rows = [{"image_id": image, "rad_id": rad, **{f: str(int(f == marked)) for f in findings}}
            for image, rad, marked in [("a", "R1", "Cardiomegaly"), ("a", "R2", "Cardiomegaly"),
                                       ("b", "R1", "No finding"), ("b", "R2", "No finding")]]  # fmt: skip
    _csv(root / "annotations" / "image_labels_train.csv", ["image_id", "rad_id", *findings], rows)
    touch_images(root, [f"train/{image}.dicom" for image in "ab"])


def _brax(root: Path) -> None:
    header = ["PatientID", "PatientSex", "PatientAge", "AccessionNumber", "ViewPosition", "Cardiomegaly", "Edema",
              "PngPath"]  # fmt: skip
    rows = [{"PatientID": p, "PatientSex": "M", "PatientAge": "45-49", "AccessionNumber": p, "ViewPosition": "PA",
             "Cardiomegaly": value, "PngPath": f"images/{p}.png"} for p, value in [("A", "1"), ("B", ""), ("C", "0")]]
    _csv(root / "master_spreadsheet_update.csv", header, rows)
    touch_images(root, [f"images/{p}.png" for p in "ABC"])


#: reader, native-layout writer, the label it never records, expected images
CASES: list[tuple[str, Callable[[Path], None], str, int]] = [
    ("chexpert", _chexpert, "Hernia", 4),
    ("nih", _nih, "Lung Opacity", 5),
    ("mimic", _mimic, "Hernia", 5),
    ("padchest", _padchest, "Lung Opacity", 3),
    ("vindr", _vindr_kaggle, "Edema", 3),
    ("vindr", _vindr_physionet, "Hernia", 2),
    ("brax", _brax, "Hernia", 3),
]


@pytest.mark.parametrize(
    ("reader", "write", "absent", "images"), CASES, ids=[f"{c[0]}-{c[1].__name__.strip('_')}" for c in CASES]
)
def test_label_never_recorded_stays_nan_through_manifest_loss_and_metrics(
    tmp_path: Path, reader: str, write: Callable[[Path], None], absent: str, images: int
) -> None:
    write(tmp_path / "data")
    labels = ["Cardiomegaly", absent]
    config = StudyConfig.model_validate({
        "name": "s", "out": tmp_path / "study", "labels": labels, "blank": "zeros",
        "datasets": {"d": {"reader": reader, "root": tmp_path / "data"}},
        "configurations": [{"name": "c", "train": ["d"], "internal": ["d"], "external": []}],
    })  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest, notes = build_manifest_with_notes(config)
    assert any(f"does not record {absent!r}" in str(w.message) for w in caught)
    # The manifest: raw and target NaN for every image, whatever ``blank: zeros`` says; Cardiomegaly is recorded.
    assert len(manifest) == images
    assert manifest[f"raw_{absent}"].isna().all() and manifest[absent].isna().all()
    assert manifest["Cardiomegaly"].notna().all() and (manifest["Cardiomegaly"] == 1).sum() >= 1
    assert ("note", images, f"{absent}: not recorded (NaN, masked out of loss and metrics)") in {
        (row.kind, row.rows, row.note) for row in notes.itertuples()
    }
    # The cohort table: no count for the label (not 0), and the note row says "not recorded".
    cohort = describe(manifest, None, labels, notes)
    total = cohort.loc[cohort["split"] == "all"].iloc[0]
    assert pd.isna(total[absent]) and total["Cardiomegaly"] == (manifest["Cardiomegaly"] == 1).sum()
    assert cohort["note"].str.contains(f"{absent}: not recorded").sum() == 1
    # The loss: the label adds nothing and receives no gradient.
    target = torch.tensor(manifest[labels].to_numpy(dtype=np.float32))
    logits = torch.linspace(-2.0, 2.0, images * 2).reshape(images, 2).requires_grad_(True)
    loss = masked_bce(logits, target)
    loss.backward()
    assert logits.grad is not None
    assert torch.equal(logits.grad[:, 1], torch.zeros(images))
    torch.testing.assert_close(loss, masked_bce(logits[:, :1].detach(), target[:, :1]))
    # The metrics: the label's AUC is undefined (NaN), never computed from invented negatives.
    scores = np.linspace(0.1, 0.9, images * 2).reshape(images, 2)
    with pytest.warns(OneClassWarning):
        aucs = auc_per_label(manifest[labels].to_numpy(dtype=float), scores, labels)
    assert np.isnan(aucs[1])
