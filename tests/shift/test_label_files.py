"""MIMIC label-file protocols on the synthetic MIMIC: the same predictions re-scored against the other label files.

Expected AUCs are computed here from the label files themselves (pandas + sklearn), not with the reader.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxrgen.report.inputs import find_predictions, load_inputs
from cxrgen.report.shift_html import shift_html
from cxrgen.report.shift_tables import shift_tables, write_shift_results
from cxrgen.runner.prepare import run_prepare
from cxrgen.shift.protocols import get_protocol, protocol_targets
from cxrgen.study.config import StudyConfig
from cxrgen.study.workspace import Study
from cxrgen.synthetic import write_synthetic

LABELS = ["Atelectasis", "Cardiomegaly", "Edema", "Pleural Effusion"]
UNCERTAINTY = {"Atelectasis": "ones", "Cardiomegaly": "zeros", "Edema": "ones", "Pleural Effusion": "ones"}
PROTOCOLS = ["blank_ignore", "mimic_chexpert", "mimic_negbio", "mimic_radiologist"]
RADIOLOGIST = "mimic-cxr-2.1.0-test-set-labeled.csv"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NIH-trained run with an internal NIH and an external MIMIC predictions file (seeded scores)."""
    root = tmp_path_factory.mktemp("label_files")
    data = write_synthetic(root / "data", seed=0, scale=0.4, image_size=32, hospitals=["nih", "mimic"])
    config = StudyConfig.model_validate(
        {
            "name": "protocols",
            "out": root / "study",
            "datasets": {
                "nih": {"reader": "nih", "root": data / "nih"},
                "mimic": {"reader": "mimic", "root": data / "mimic", "labels": "chexpert"},
            },
            "labels": LABELS,
            "uncertainty": UNCERTAINTY,
            "blank": "zeros",
            "splits": {"nih": {"method": "random", "seed": 0}, "mimic": {"method": "official"}},
            "architectures": ["densenet121"],
            "evaluation": {"bootstrap": 50, "protocols": PROTOCOLS},
            "configurations": [{"name": "nih", "train": ["nih"], "internal": ["nih"], "external": ["mimic"]}],
        }
    )
    run_prepare(Study.of(config), until="splits")
    manifest = pd.read_parquet(config.out / "manifest.parquet")
    tested = manifest.merge(pd.read_parquet(config.out / "splits.parquet"), on=["image_id", "dataset"])
    tested = tested.loc[tested["split"] == "test"]
    rng = np.random.default_rng(0)
    folder = config.out / "runs" / "nih" / "densenet121" / "predictions"
    folder.mkdir(parents=True)
    for name, dataset in (("internal", "nih"), ("mimic", "mimic")):
        part = tested.loc[tested["dataset"] == dataset]
        frame = part[["image_id", "patient_id"]].reset_index(drop=True)
        for label in LABELS:
            y = part[label].to_numpy(float)
            frame[f"y_{label}"] = y
            frame[f"p_{label}"] = 1 / (1 + np.exp(-(1.2 * (2 * np.nan_to_num(y) - 1) + rng.normal(size=len(y)))))
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    return config.out


def _study_policy(raw: pd.Series, label: str) -> pd.Series:
    """The study's policies written out by hand: -1 -> its uncertainty policy, blank -> 0."""
    uncertain = 1.0 if UNCERTAINTY[label] == "ones" else 0.0
    return raw.astype(float).replace(-1.0, uncertain).fillna(0.0)


def _expected(data: Path, file: str) -> pd.DataFrame:
    """``image_id`` and targets per label from one label file, joined on its keys by hand (no row: NaN)."""
    split = pd.read_csv(data / "mimic-cxr-2.0.0-split.csv.gz", dtype=str)
    if file == "radiologist":
        labels = pd.read_csv(data / RADIOLOGIST, dtype={"study_id": str})
        joined = split.loc[split["split"] == "test"].merge(labels, on="study_id", how="left", indicator=True)
    else:
        labels = pd.read_csv(data / f"mimic-cxr-2.0.0-{file}.csv.gz", dtype={"subject_id": str, "study_id": str})
        joined = split.merge(labels, on=["subject_id", "study_id"], how="left", indicator=True)
    out = pd.DataFrame({"image_id": "mimic:" + joined["dicom_id"]})
    for label in LABELS:
        out[label] = _study_policy(joined[label], label).where(joined["_merge"] == "both").to_numpy()
    return out


def test_synthetic_mimic_has_the_radiologist_file(study: Path) -> None:
    data = study.parent / "data" / "mimic"
    labels = pd.read_csv(data / RADIOLOGIST, dtype=str, keep_default_na=False)
    assert list(labels.columns[:3]) == ["study_id", "Atelectasis", "Cardiomegaly"] and "subject_id" not in labels
    split = pd.read_csv(data / "mimic-cxr-2.0.0-split.csv.gz", dtype=str)
    assert set(labels["study_id"]) == set(split.loc[split["split"] == "test", "study_id"])  # the test split only
    assert labels["study_id"].is_unique
    assert set(labels.drop(columns="study_id").to_numpy().ravel()) == {"0.0", "1.0"}  # no hedges, no blanks
    with gzip.open(data / "mimic-cxr-2.0.0-chexpert.csv.gz", "rt") as handle:
        chexpert = pd.read_csv(handle, dtype={"study_id": str}).set_index("study_id")
    # the radiologists read the images, not the report: they disagree with the labeler on some studies
    labeler = chexpert.loc[labels["study_id"], "Cardiomegaly"].fillna(0).to_numpy()
    assert (labeler != labels["Cardiomegaly"].astype(float).to_numpy()).any()


def test_label_file_protocols_rescore_mimic_only(study: Path, tmp_path: Path) -> None:
    inputs = load_inputs(study)
    preds = {p.test_set: p for p in find_predictions(inputs)}
    shift = write_shift_results(inputs, list(preds.values()), tmp_path)
    table = pd.read_csv(tmp_path / "protocols.csv")
    internal = table.loc[table["test_set"] == "internal"]
    assert set(internal["protocol"]) == {"blank_ignore"}  # NIH is no MIMIC: no row, not a zero
    mimic = table.loc[table["test_set"] == "mimic"].set_index(["protocol", "label"])
    assert len(mimic) == len(PROTOCOLS) * len(LABELS)
    # the study reads the chexpert file: re-scoring against it changes nothing, exactly
    own = mimic.loc["mimic_chexpert"]
    assert (own["difference"] == 0).all() and (own["ci_low"] == 0).all() and (own["ci_high"] == 0).all()
    frame = preds["mimic"].frame
    data = study.parent / "data" / "mimic"
    moved = 0
    for file in ("chexpert", "negbio", "radiologist"):
        expected = frame[["image_id"]].merge(_expected(data, file), on="image_id", how="left")
        for label in LABELS:
            row = mimic.loc[(f"mimic_{file}", label)]
            y, p = expected[label].to_numpy(float), frame[f"p_{label}"].to_numpy(float)
            keep = ~np.isnan(y)
            assert row["auc_protocol"] == pytest.approx(roc_auc_score(y[keep], p[keep]), abs=1e-12)
            assert (row["n_pos"], row["n_neg"]) == ((y == 1).sum(), (y == 0).sum())
            study_y = frame[f"y_{label}"].to_numpy(float)
            assert row["auc_study"] == pytest.approx(roc_auc_score(study_y, frame[f"p_{label}"]), abs=1e-12)
            assert row["ci_low"] <= row["difference"] <= row["ci_high"]
            moved += not math.isclose(row["difference"], 0.0, abs_tol=1e-12)
    assert moved >= 4  # the other files do disagree with the study's labels
    assert not any("mimic_" in note for note in shift.notes)


def test_missing_label_file_is_a_note(study: Path, tmp_path: Path) -> None:
    data = study.parent / "data" / "mimic"
    hidden = tmp_path / RADIOLOGIST
    (data / RADIOLOGIST).rename(hidden)
    try:
        inputs = load_inputs(study)
        shift = shift_tables(inputs, find_predictions(inputs))
    finally:
        hidden.rename(data / RADIOLOGIST)
    table = shift.tables["protocols"]
    assert "mimic_radiologist" not in set(table["protocol"])
    assert {"mimic_chexpert", "mimic_negbio"} <= set(table.loc[table["test_set"] == "mimic", "protocol"])
    (note,) = [n for n in shift.notes if n.startswith("mimic_radiologist")]
    assert RADIOLOGIST in note and "missing" in note
    assert RADIOLOGIST in shift_html(shift, 0.95)


def test_protocol_names() -> None:
    with pytest.raises(ValueError, match="did you mean 'mimic_negbio'"):
        get_protocol("mimic_negbi")
    with pytest.raises(ValueError, match="reads another label file"):
        protocol_targets([1.0], [True], "mimic_negbio", uncertainty="ones", blank="zeros")
