"""MIMIC studies without a label row are unlabelled (NaN), counted in the cohort, never test-set negatives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrgen.data.cohort import describe
from cxrgen.data.manifest import build_manifest
from cxrgen.data.splits import make_splits
from cxrgen.sources import SourceError
from cxrgen.study.config import StudyConfig
from helpers.native import LABELS, MIMIC_LABEL_COLUMNS, mimic_root

UNLABELLED_STUDY = (10000032, 53189527)  # one test image: bbbb2222-...-00000003


def _config(root: Path, out: Path, labels: str = "chexpert") -> StudyConfig:
    return StudyConfig.model_validate(
        {
            "name": "t",
            "out": out,
            "datasets": {"mimic": {"reader": "mimic", "root": root, "labels": labels}},
            "labels": LABELS,
            "blank": "zeros",
            "splits": {"mimic": {"method": "official"}},
            "architectures": ["densenet121"],
            "configurations": [{"name": "m", "train": ["mimic"], "internal": ["mimic"]}],
        }
    )


def _drop_study(root: Path, study: tuple[int, int]) -> None:
    path = root / "mimic-cxr-2.0.0-chexpert.csv.gz"
    table = pd.read_csv(path)
    table = table[~((table["subject_id"] == study[0]) & (table["study_id"] == study[1]))]
    table.to_csv(path, index=False, compression="gzip")


def test_study_without_label_row_is_unlabelled_and_counted(tmp_path: Path) -> None:
    root = mimic_root(tmp_path / "mimic")
    _drop_study(root, UNLABELLED_STUDY)
    config = _config(root, tmp_path / "out")
    manifest = build_manifest(config).set_index("image_id")
    missing = "mimic:bbbb2222-00000000-00000000-00000000-00000003"
    assert not manifest.loc[missing, "labelled"]
    assert manifest.loc[missing, LABELS].isna().all()  # NaN although blank: zeros
    labelled = manifest.drop(index=missing)
    assert labelled["labelled"].all()
    # blank still means 0 for studies that do have a row: Consolidation is blank for the first study
    assert (labelled.loc[labelled["study_id"] == "mimic:50414267", "Consolidation"] == 0).all()
    splits, _ = make_splits(manifest.reset_index(), config)
    cohort = describe(manifest.reset_index(), splits, LABELS).set_index(["dataset", "split"])
    assert cohort.loc[("mimic", "test"), "unlabelled"] == 1
    assert cohort.loc[("mimic", "val"), "unlabelled"] == 0
    assert cohort.loc[("mimic", "all"), "unlabelled"] == 1
    # in the test set the image contributes no negative to any label
    test = manifest.reset_index().merge(splits, on=["image_id", "dataset"]).query("split == 'test'")
    assert missing in set(test["image_id"])
    assert not (test.loc[test["image_id"] == missing, LABELS] == 0).any(axis=None)


def test_support_devices_column_becomes_device(tmp_path: Path) -> None:
    values = {
        "chexpert": {
            (10000032, 50414267): {"Cardiomegaly": "1.0", "Support Devices": "1.0"},
            (10000032, 53189527): {"Support Devices": "-1.0"},
            (11000011, 55555555): {"No Finding": "1.0"},
        }
    }
    root = mimic_root(tmp_path / "mimic", values)
    manifest = build_manifest(_config(root, tmp_path / "out")).set_index("study_id")
    assert (manifest.loc["mimic:50414267", "device"] == 1).all()
    assert np.isnan(manifest.loc["mimic:53189527", "device"])  # uncertain mention: unknown
    assert (manifest.loc["mimic:55555555", "device"] == 0).all()  # not mentioned: absent


def test_radiologist_labels_for_the_test_split_keyed_by_study(tmp_path: Path) -> None:
    root = mimic_root(tmp_path / "mimic")
    columns = ["study_id", *(c for c in MIMIC_LABEL_COLUMNS if c not in ("subject_id", "study_id"))]
    rows = [{c: "" for c in columns} | {"study_id": "50414267", "Cardiomegaly": "0", "Edema": "1"}]
    pd.DataFrame(rows)[columns].to_csv(root / "mimic-cxr-2.1.0-test-set-labeled.csv", index=False)
    manifest = build_manifest(_config(root, tmp_path / "out", "radiologist")).set_index("study_id")
    first = manifest.loc["mimic:50414267"]
    assert first["labelled"].all() and (first["Cardiomegaly"] == 0).all() and (first["Edema"] == 1).all()
    assert (first["Atelectasis"] == 0).all()  # blank in the radiologists' row: zeros
    assert not manifest.loc["mimic:53189527", "labelled"]  # a test study the radiologists did not label
    assert not manifest.loc["mimic:55555555", "labelled"].any()  # validate split: not in the test-set file
    assert np.isnan(manifest.loc["mimic:55555555", LABELS].to_numpy(dtype=float)).all()
    bad = [rows[0] | {"study_id": "s5x"}]
    pd.DataFrame(bad)[columns].to_csv(root / "mimic-cxr-2.1.0-test-set-labeled.csv", index=False)
    with pytest.raises(SourceError, match=r"test-set-labeled\.csv.*not an id"):
        build_manifest(_config(root, tmp_path / "out", "radiologist"))
