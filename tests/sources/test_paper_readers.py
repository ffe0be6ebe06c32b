"""The three readers on small files in each native layout, every variant and every bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrgen.sources import READERS, SourceError, get_reader
from cxrgen.sources.common import BASE_COLUMNS
from helpers.native import CHEX_FIXTURE_ROWS, LABELS, chexpert_csv, mimic_root, nih_data_entry


def read(reader: str, root: Path, **options: object) -> pd.DataFrame:
    return get_reader(reader)(root, name=reader, labels=LABELS, options=options)


def test_registry_knows_three_readers_and_suggests_names() -> None:
    assert {"chexpert", "nih", "mimic"} <= set(READERS)
    with pytest.raises(SourceError, match="did you mean 'chexpert'"):
        get_reader("chexpret")


# ---------------------------------------------------------------- CheXpert
CHEX_ROWS = CHEX_FIXTURE_ROWS


@pytest.mark.parametrize("prefix", ["CheXpert-v1.0-small", "CheXpert-v1.0"])
def test_chexpert_reads_both_release_folders(tmp_path: Path, prefix: str) -> None:
    chexpert_csv(tmp_path / prefix / "train.csv", CHEX_ROWS, prefix=prefix)
    frame = read("chexpert", tmp_path)
    assert list(frame.columns[: len(BASE_COLUMNS)]) == list(BASE_COLUMNS)
    assert frame["path"].tolist()[0] == f"{prefix}/train/patient00001/study1/view1_frontal.jpg"
    assert frame["patient_id"].tolist() == ["chexpert:00001", "chexpert:00001", "chexpert:00002", "chexpert:00003"]
    assert frame["study_id"].tolist()[2] == "chexpert:00002/2"
    assert frame["view"].tolist() == ["AP", "LATERAL", "PA", "OTHER"]
    assert frame["frontal"].tolist() == [True, False, True, True]
    assert frame["sex"].tolist() == ["F", "F", "M", "U"]
    assert frame["age"].tolist() == [68.0, 68.0, 87.0, 41.0]
    assert frame["official_split"].eq("train").all()
    np.testing.assert_array_equal(frame["raw_Cardiomegaly"], [1.0, 1.0, np.nan, np.nan])
    np.testing.assert_array_equal(frame["raw_Edema"], [-1.0, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(frame["raw_Pleural Effusion"], [np.nan, np.nan, 0.0, np.nan])


def test_chexpert_view_agrees_with_frontal_lateral(tmp_path: Path) -> None:
    # The real train.csv has 17 frontal rows whose AP/PA is LL or RL (decubitus films): frontal, view OTHER.
    rows = [
        {"patient": "00001", "appa": "LL"},
        {"patient": "00002", "appa": "RL"},
        {"patient": "00003", "view": "lateral", "appa": "LL"},
        {"patient": "00004", "view": "lateral"},
        {"patient": "00005", "appa": "PA"},
    ]
    chexpert_csv(tmp_path / "CheXpert-v1.0-small" / "train.csv", rows)
    frame = read("chexpert", tmp_path)
    assert frame["view"].tolist() == ["OTHER", "OTHER", "LL", "LATERAL", "PA"]
    assert frame["frontal"].tolist() == [True, True, False, False, True]


def test_chexpert_root_may_be_the_release_folder_itself(tmp_path: Path) -> None:
    chexpert_csv(tmp_path / "CheXpert-v1.0-small" / "valid.csv", CHEX_ROWS[:1])
    frame = read("chexpert", tmp_path / "CheXpert-v1.0-small", csv="valid.csv")
    assert frame["path"].tolist() == ["train/patient00001/study1/view1_frontal.jpg"]
    assert frame["official_split"].tolist() == ["val"]


def test_chexpert_accepts_bom_and_windows_line_endings(tmp_path: Path) -> None:
    csv = chexpert_csv(tmp_path / "CheXpert-v1.0-small" / "train.csv", CHEX_ROWS)
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes().replace(b"\n", b"\r\n"))
    frame = read("chexpert", tmp_path)
    assert len(frame) == 4 and frame["raw_Cardiomegaly"].iloc[0] == 1.0


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"path": "/abs/patient00001/study1/view1_frontal.jpg"}, "line 2: path .* leaves the dataset root"),
        ({"path": "CheXpert-v1.0-small/../../etc/patient00001/study1/x.jpg"}, "line 2: path"),
        ({"patient": "00001", "Edema": "2.0"}, "line 2, column 'Edema': label value '2.0'"),
        ({"patient": "00001", "Edema": "yes"}, "line 2, column 'Edema'"),
    ],
)
def test_chexpert_bad_rows_are_named(tmp_path: Path, row: dict[str, str], message: str) -> None:
    chexpert_csv(tmp_path / "CheXpert-v1.0-small" / "train.csv", [row | {"patient": "00001"}])
    with pytest.raises(SourceError, match=message):
        read("chexpert", tmp_path)


def test_chexpert_missing_column_duplicate_and_empty(tmp_path: Path) -> None:
    csv = chexpert_csv(tmp_path / "CheXpert-v1.0-small" / "train.csv", CHEX_ROWS)
    text = csv.read_text()
    csv.write_text(text.replace(",Edema,", ",Oedema,"))
    with pytest.raises(SourceError, match=r"train\.csv: missing column\(s\) 'Edema'"):
        read("chexpert", tmp_path)
    lines = text.splitlines()
    csv.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(SourceError, match="duplicate image id"):
        read("chexpert", tmp_path)
    csv.write_text("")
    with pytest.raises(SourceError, match="not a readable CheXpert CSV"):
        read("chexpert", tmp_path)
    csv.unlink()
    with pytest.raises(SourceError, match=r"missing train.csv"):
        read("chexpert", tmp_path)


# ---------------------------------------------------------------- NIH
@pytest.mark.parametrize("variant", ["original2017", "v2020", "reexport"])
def test_nih_reads_all_three_data_entry_variants(tmp_path: Path, variant: str) -> None:
    nih_data_entry(tmp_path, variant)
    with pytest.warns(UserWarning, match="1 age"):
        frame = read("nih", tmp_path)
    assert frame["image_id"].tolist()[0] == "nih:00000001_000.png"
    assert frame["patient_id"].tolist() == ["nih:1", "nih:1", "nih:2", "nih:3", "nih:4"]
    np.testing.assert_array_equal(frame["raw_Cardiomegaly"], [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(frame["raw_Pleural Effusion"], [0, 1, 0, 0, 0])
    np.testing.assert_array_equal(frame["raw_Consolidation"], [0, 0, 0, 1, 0])
    assert frame["view"].tolist() == ["PA", "PA", "AP", "PA", "AP"]
    assert frame["frontal"].all()
    assert frame["sex"].tolist() == ["M", "M", "F", "F", "M"]
    assert frame["official_split"].tolist() == ["train_val", "train_val", "train_val", "test", "test"]
    assert frame["age"].iloc[0] == 58.0 and math.isnan(frame["age"].iloc[4])
    if variant == "original2017":
        assert frame["age"].iloc[2] == pytest.approx(11 / 12)
        assert frame["age"].iloc[3] == pytest.approx(5 / 365.25)


def test_nih_finds_images_flat_or_in_numbered_folders(tmp_path: Path) -> None:
    nih_data_entry(tmp_path, "v2020", images=False)
    (tmp_path / "images_001" / "images").mkdir(parents=True)
    (tmp_path / "images_001" / "images" / "00000001_000.png").write_bytes(b"")
    (tmp_path / "images_002" / "images").mkdir(parents=True)
    (tmp_path / "images_002" / "images" / "00000002_000.png").write_bytes(b"")
    with pytest.warns(UserWarning):
        frame = read("nih", tmp_path)
    assert frame["path"].tolist()[:3] == [
        "images_001/images/00000001_000.png",
        "images/00000001_001.png",
        "images_002/images/00000002_000.png",
    ]


def test_nih_bad_inputs(tmp_path: Path) -> None:
    path = nih_data_entry(tmp_path, "v2020")
    text = path.read_text()
    path.write_text(text.replace("Hernia", "Hernai"))
    with pytest.raises(SourceError, match=r"line 6, column 'Finding Labels': unknown label 'Hernai'"):
        read("nih", tmp_path)
    path.write_text(text.replace("Patient ID", "Patient"))
    with pytest.raises(SourceError, match="column 4 is 'Patient', expected 'Patient ID'"):
        read("nih", tmp_path)
    path.write_text(text + text.splitlines()[1] + "\n")
    with (
        pytest.warns(UserWarning, match="1 age"),
        pytest.raises(SourceError, match=r"duplicate image id.*00000001_000.png"),
    ):
        read("nih", tmp_path)
    path.write_text("")
    with pytest.raises(SourceError, match="empty file"):
        read("nih", tmp_path)
    path.unlink()
    with pytest.raises(SourceError, match="missing NIH metadata"):
        read("nih", tmp_path)


@pytest.mark.realdata
@pytest.mark.parametrize(
    "name", ["Data_Entry_2017.original2017_first12rows.csv", "Data_Entry_2017_v2020.official_first10rows.csv"]
)
def test_nih_reads_the_real_variant_files(realdata: Path, tmp_path: Path, name: str) -> None:
    frame = read("nih", realdata / "nih" / "metadata", metadata=name)
    assert frame["image_id"].iloc[0] == "nih:00000001_000.png" and frame["raw_Cardiomegaly"].iloc[0] == 1.0
    assert frame["patient_id"].iloc[0] == "nih:1" and frame["official_split"].iloc[0] == "train_val"


@pytest.mark.realdata
def test_nih_real_table_counts(realdata: Path) -> None:
    frame = read("nih", realdata / "nih" / "metadata", metadata="Data_Entry_2017_v2020.csv.gz")
    assert len(frame) == 112_120
    assert frame["patient_id"].nunique() == 30_805
    positives = {label: int(frame[f"raw_{label}"].sum()) for label in LABELS}
    assert positives == {
        "Atelectasis": 11_559,
        "Cardiomegaly": 2_776,
        "Consolidation": 4_667,
        "Edema": 2_303,
        "Pleural Effusion": 13_317,
    }
    assert frame["view"].value_counts().to_dict() == {"PA": 67_310, "AP": 44_810}
    assert frame["sex"].value_counts().to_dict() == {"M": 63_340, "F": 48_780}
    assert frame["official_split"].value_counts().to_dict() == {"train_val": 86_524, "test": 25_596}


# ---------------------------------------------------------------- MIMIC
@pytest.mark.parametrize("labeler", ["chexpert", "negbio"])
def test_mimic_joins_tables_on_keys(tmp_path: Path, labeler: str) -> None:
    root = mimic_root(tmp_path)
    frame = read("mimic", root, labels=labeler).set_index("image_id")
    first = "mimic:aaaa1111-00000000-00000000-00000000-00000001"
    assert frame.loc[first, "path"] == (
        "files/p10/p10000032/s50414267/aaaa1111-00000000-00000000-00000000-00000001.jpg"
    )
    assert frame.loc[first, "patient_id"] == "mimic:10000032"
    assert frame["official_split"].value_counts().to_dict() == {"test": 3, "val": 2}
    assert frame["view"].tolist() == ["PA", "LATERAL", "AP", "UNKNOWN", "LL"]
    # both images of study 50414267 take its labels
    second = "mimic:aaaa1111-00000000-00000000-00000000-00000002"
    assert frame.loc[first, "raw_Cardiomegaly"] == frame.loc[second, "raw_Cardiomegaly"] == 1.0
    expected_edema = -1.0 if labeler == "chexpert" else 1.0
    assert frame.loc[second, "raw_Edema"] == expected_edema
    assert frame.loc["mimic:bbbb2222-00000000-00000000-00000000-00000003", "raw_Pleural Effusion"] == (
        0.0 if labeler == "chexpert" else 1.0
    )
    assert np.isnan(frame.loc["mimic:cccc3333-00000000-00000000-00000000-00000004", "raw_Cardiomegaly"])


def test_mimic_bad_inputs(tmp_path: Path) -> None:
    root = mimic_root(tmp_path)
    split = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz")
    from helpers.native import gz_csv

    broken = split.copy()
    broken.loc[0, "split"] = "holdout"
    gz_csv(root / "mimic-cxr-2.0.0-split.csv.gz", broken)
    with pytest.raises(SourceError, match="line 2, column 'split': 'holdout'"):
        read("mimic", root)
    gz_csv(root / "mimic-cxr-2.0.0-split.csv.gz", pd.concat([split, split.iloc[:1]]))
    with pytest.raises(SourceError, match="duplicate dicom_id"):
        read("mimic", root)
    gz_csv(root / "mimic-cxr-2.0.0-split.csv.gz", split.drop(columns="split"))
    with pytest.raises(SourceError, match="missing column\\(s\\) 'split'"):
        read("mimic", root)
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(SourceError, match=r"missing MIMIC-CXR-JPG table mimic-cxr-2.0.0-split.csv.gz"):
        read("mimic", root)
    with pytest.raises(SourceError, match=r"mimic reader: labels: Input should be 'chexpert', 'negbio' or 'radio"):
        read("mimic", root, labels="other")
