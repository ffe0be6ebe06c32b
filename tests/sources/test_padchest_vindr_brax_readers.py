"""The PadChest, VinDr-CXR and BRAX readers on small files written here from each release's column list."""

from __future__ import annotations

import csv
import gzip
import warnings
from pathlib import Path

import numpy as np
import pytest

from cxrgen.sources import get_reader
from cxrgen.sources.common import READING_NOTES, SourceError

LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
PADCHEST_COLUMNS = [
    "", "ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
    "ViewPosition_DICOM", "Projection", "MethodProjection", "Pediatric", "Modality_DICOM", "Manufacturer_DICOM",
    "PhotometricInterpretation_DICOM", "PixelRepresentation_DICOM", "PixelAspectRatio_DICOM",
    "SpatialResolution_DICOM", "BitsStored_DICOM", "WindowCenter_DICOM", "WindowWidth_DICOM", "Rows_DICOM",
    "Columns_DICOM", "XRayTubeCurrent_DICOM", "Exposure_DICOM", "ExposureInuAs_DICOM", "ExposureTime",
    "RelativeXRayExposure_DICOM", "ReportID", "Report", "MethodLabel", "Labels", "Localizations",
    "LabelsLocalizationsBySentence", "labelCUIS", "LocalizationsCUIS",
]  # fmt: skip
PADCHEST_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"


def _write_csv(path: Path, header: list[str], rows: list[dict[str, str]], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if gz else open
    with opener(path, "wt", newline="", encoding="utf-8") as handle:  # type: ignore[operator]
        writer = csv.DictWriter(handle, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _padchest_row(i: int, labels: str, projection: str = "PA", **fields: str) -> dict[str, str]:
    row = {"": str(i), "ImageID": f"img{i}.png", "ImageDir": str(i % 2), "StudyDate_DICOM": "20150412",
           "StudyID": f"s{i // 2}", "PatientID": f"p{i // 3}", "PatientBirth": "1950.0", "PatientSex_DICOM": "M",
           "Projection": projection, "MethodLabel": "Physician" if i % 2 else "RNN_model", "Labels": labels}
    row.update(fields)
    return row


def _padchest(root: Path, rows: list[dict[str, str]], gz: bool = False) -> Path:
    return _write_csv(root / (PADCHEST_CSV + (".gz" if gz else "")), PADCHEST_COLUMNS, rows, gz)


@pytest.mark.parametrize("gz", [False, True], ids=["csv", "csv.gz"])
def test_padchest_terms_views_ages_and_null_rows(tmp_path: Path, gz: bool) -> None:
    rows = [
        _padchest_row(0, "['normal']"),
        _padchest_row(1, "[' pleural effusion', 'cardiomegaly']", "AP_horizontal", PatientSex_DICOM="F"),
        _padchest_row(2, "['pericardial effusion', ' laminar atelectasis']", "L", PatientBirth=""),
        _padchest_row(3, "", "COSTAL"),  # null Labels: left out and counted
        _padchest_row(4, "['loculated fissural effusion', 'pulmonary edema', 'consolidation']", "WEIRD",
                      PatientSex_DICOM="O", StudyDate_DICOM="20120101", PatientBirth="1930"),
        _padchest_row(5, "['pacemaker']", "EXCLUDE"),
    ]
    _padchest(tmp_path, rows, gz)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = get_reader("padchest")(tmp_path, name="padchest", labels=[*LABELS, "Support Devices"])
    messages = " | ".join(str(w.message) for w in caught)
    assert "left out: 1 row(s)" in messages and "null Labels" in messages
    assert "1 image(s) with an unknown Projection" in messages
    notes = frame.attrs[READING_NOTES]
    assert [(n.kind, n.rows) for n in notes] == [("left out", 1)] and "null Labels" in notes[0].text
    assert list(frame["image_id"]) == [f"padchest:img{i}.png" for i in (0, 1, 2, 4, 5)]
    assert list(frame["path"]) == ["0/img0.png", "1/img1.png", "0/img2.png", "0/img4.png", "1/img5.png"]
    assert list(frame["view"]) == ["PA", "AP", "LATERAL", "UNKNOWN", "UNKNOWN"]
    assert list(frame["sex"]) == ["M", "F", "M", "U", "M"]
    np.testing.assert_array_equal(frame["age"], [65.0, 65.0, np.nan, 82.0, 65.0])
    assert list(frame["raw_Pleural Effusion"]) == [0, 1, 0, 1, 0]  # pericardial effusion is not pleural
    assert list(frame["raw_Cardiomegaly"]) == [0, 1, 0, 0, 0]
    assert list(frame["raw_Atelectasis"]) == [0, 0, 1, 0, 0]
    assert list(frame["raw_Edema"]) == [0, 0, 0, 1, 0]
    assert list(frame["raw_Consolidation"]) == [0, 0, 0, 1, 0]
    assert list(frame["raw_Support Devices"]) == [0, 0, 0, 0, 1]
    assert list(frame["device"]) == [0, 0, 0, 0, 1]  # PadChest's device terms fill the device column
    assert list(frame["patient_id"]) == ["padchest:p0", "padchest:p0", "padchest:p0", "padchest:p1", "padchest:p1"]


def test_padchest_labelled_by_physician(tmp_path: Path) -> None:
    _padchest(tmp_path, [_padchest_row(i, "['normal']") for i in range(6)])
    with pytest.warns(UserWarning, match="left out: 3 row"):
        frame = get_reader("padchest")(tmp_path, name="pc", labels=LABELS, options={"labelled_by": "physician"})
    assert list(frame["image_id"]) == ["pc:img1.png", "pc:img3.png", "pc:img5.png"]
    assert [(n.kind, n.rows) for n in frame.attrs[READING_NOTES]] == [("left out", 3)]
    assert (frame["device"] == 0).all()  # no device term in ['normal']


def test_padchest_unparseable_labels_named(tmp_path: Path) -> None:
    _padchest(tmp_path, [_padchest_row(0, "['normal']"), _padchest_row(1, "['cardiomegaly', oops]")])
    with pytest.raises(SourceError, match=r"line 3, column 'Labels': .*oops"):
        get_reader("padchest")(tmp_path, name="pc", labels=LABELS)


def test_padchest_refuses_eval(tmp_path: Path) -> None:
    _padchest(tmp_path, [_padchest_row(0, "__import__('os').getcwd()")])
    with pytest.raises(SourceError, match="not a list of terms"):
        get_reader("padchest")(tmp_path, name="pc", labels=LABELS)


def test_padchest_missing_column_named(tmp_path: Path) -> None:
    header = [c for c in PADCHEST_COLUMNS if c != "Projection"]
    _write_csv(tmp_path / PADCHEST_CSV, header, [{k: v for k, v in _padchest_row(0, "['normal']").items()
                                                  if k != "Projection"}])
    with pytest.raises(SourceError, match=r"missing column.*'Projection'"):
        get_reader("padchest")(tmp_path, name="pc", labels=LABELS)


VINDR_FINDINGS = [
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture", "Consolidation",
    "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity", "Lung cavity", "Lung cyst",
    "Mediastinal shift", "Nodule/Mass", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis", "Rib fracture", "Other lesion", "COPD", "Lung tumor", "Pneumonia", "Tuberculosis",
    "Other diseases", "No finding",
]  # fmt: skip


def _vindr_marks(image: str, rad: str, *positive: str) -> dict[str, str]:
    return {"image_id": image, "rad_id": rad, **{f: ("1" if f in positive else "0") for f in VINDR_FINDINGS}}


def test_vindr_physionet_majority_and_any(tmp_path: Path) -> None:
    header = ["image_id", "rad_id", *VINDR_FINDINGS]
    train = [
        _vindr_marks("a", "R1", "Cardiomegaly"), _vindr_marks("a", "R2", "Cardiomegaly"), _vindr_marks("a", "R3"),
        _vindr_marks("b", "R1", "Pleural effusion"), _vindr_marks("b", "R4"), _vindr_marks("b", "R5", "Edema"),
        _vindr_marks("c", "R2", "Atelectasis"), _vindr_marks("c", "R2", "Atelectasis"), _vindr_marks("c", "R3"),
    ]  # fmt: skip
    _write_csv(tmp_path / "annotations/image_labels_train.csv", header, train)
    test = [{k: v for k, v in _vindr_marks("t1", "", "Pleural effusion").items() if k != "rad_id"}]
    _write_csv(tmp_path / "annotations/image_labels_test.csv", ["image_id", *VINDR_FINDINGS], test)
    read = get_reader("vindr")
    with pytest.warns(UserWarning, match="note: 4 row.*no patient ids; each image counts as its own patient"):
        majority = read(tmp_path, name="vindr", labels=LABELS)
    assert [(n.kind, n.rows) for n in majority.attrs[READING_NOTES]] == [("note", 4)]
    assert list(majority["path"]) == ["train/a.dicom", "train/b.dicom", "train/c.dicom", "test/t1.dicom"]
    assert list(majority["official_split"]) == ["train_val", "train_val", "train_val", "test"]
    assert list(majority["raw_Cardiomegaly"]) == [1, 0, 0, 0]
    assert list(majority["raw_Pleural Effusion"]) == [0, 0, 0, 1]
    assert list(majority["raw_Atelectasis"]) == [0, 0, 0, 0]  # one radiologist twice is one vote
    assert majority["patient_id"].nunique() == 4
    with pytest.warns(UserWarning):
        anyone = read(tmp_path, name="vindr", labels=LABELS, options={"readers": "any"})
    assert list(anyone["raw_Pleural Effusion"]) == [0, 1, 0, 1]
    assert list(anyone["raw_Edema"]) == [0, 1, 0, 0]
    assert list(anyone["raw_Atelectasis"]) == [0, 0, 1, 0]


def test_vindr_kaggle_layout_edema_is_nan(tmp_path: Path) -> None:
    header = ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]
    def box(image: str, name: str, rad: str) -> dict[str, str]:
        return {"image_id": image, "class_name": name, "class_id": "0", "rad_id": rad,
                "x_min": "1", "y_min": "1", "x_max": "9", "y_max": "9"}
    rows = [box("a", "Cardiomegaly", "R1"), box("a", "Cardiomegaly", "R2"), box("a", "No finding", "R3"),
            box("b", "Pleural effusion", "R1"), box("b", "Pleural effusion", "R1"), box("b", "No finding", "R2")]
    _write_csv(tmp_path / "train.csv", header, rows)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = get_reader("vindr")(tmp_path, name="v", labels=LABELS)
    messages = [str(w.message) for w in caught]
    assert any("does not record 'Edema'" in m for m in messages)
    assert any("note: 2 row(s)" in m and "own patient" in m for m in messages)
    assert list(frame["raw_Cardiomegaly"]) == [1, 0]
    assert list(frame["raw_Pleural Effusion"]) == [0, 0]  # two boxes of one radiologist
    assert frame["raw_Edema"].isna().all()
    rows.append(box("c", "Dragon", "R1"))
    _write_csv(tmp_path / "train.csv", header, rows)
    with pytest.raises(SourceError, match="line 8, column 'class_name': unknown class 'Dragon'"):
        get_reader("vindr")(tmp_path, name="v", labels=LABELS)


BRAX_OBSERVATIONS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
]  # fmt: skip
BRAX_HEADER = ["PatientID", "PatientSex", "PatientAge", "AccessionNumber", "StudyDate", *BRAX_OBSERVATIONS,
               "ViewPosition", "Rows", "Columns", "Manufacturer", "DicomPath", "PngPath"]


def test_brax_bins_views_and_raw_labels(tmp_path: Path) -> None:
    rows = [
        {"PatientID": "A", "PatientSex": "M", "PatientAge": "45-49", "AccessionNumber": "1", "ViewPosition": "PA",
         "Cardiomegaly": "1", "Edema": "-1", "DicomPath": "images/A/1/i0.dcm", "PngPath": "images/A/1/i0.png"},
        {"PatientID": "A", "PatientSex": "M", "PatientAge": "45-49", "AccessionNumber": "1", "ViewPosition": "L",
         "Cardiomegaly": "0", "DicomPath": "images/A/1/i1.dcm", "PngPath": "images/A/1/i1.png"},
        {"PatientID": "B", "PatientSex": "O", "PatientAge": "85 or more", "AccessionNumber": "2",
         "ViewPosition": "AP LLD", "Pleural Effusion": "1", "Support Devices": "1", "DicomPath": "images/B/2/i2.dcm",
         "PngPath": "images/B/2/i2.png"},
    ]
    _write_csv(tmp_path / "master_spreadsheet_update.csv", BRAX_HEADER, rows)
    frame = get_reader("brax")(tmp_path, name="brax", labels=LABELS)
    assert list(frame["path"]) == ["images/A/1/i0.png", "images/A/1/i1.png", "images/B/2/i2.png"]
    np.testing.assert_array_equal(frame["age"], [47.0, 47.0, 87.0])
    assert list(frame["age_bin"]) == ["45-49", "45-49", "85 or more"]  # the bin is kept beside its midpoint
    np.testing.assert_array_equal(frame["device"], [0.0, 0.0, 1.0])  # a blank Support Devices: not mentioned
    assert list(frame["view"]) == ["PA", "LATERAL", "OTHER"] and list(frame["frontal"]) == [True, False, False]
    assert list(frame["sex"]) == ["M", "M", "U"]
    np.testing.assert_array_equal(frame["raw_Edema"], [-1.0, np.nan, np.nan])
    np.testing.assert_array_equal(frame["raw_Cardiomegaly"], [1.0, 0.0, np.nan])
    assert frame["patient_id"].nunique() == 2 and frame["study_id"].nunique() == 2
    dicom = get_reader("brax")(tmp_path, name="brax", labels=LABELS, options={"images": "dicom"})
    assert dicom["path"].iloc[0] == "images/A/1/i0.dcm"
    rows[1]["PatientAge"] = "old"
    _write_csv(tmp_path / "master_spreadsheet_update.csv", BRAX_HEADER, rows)
    with pytest.raises(SourceError, match="line 3, column 'PatientAge': 'old'"):
        get_reader("brax")(tmp_path, name="brax", labels=LABELS)


def test_padchest_nan_text_cells_are_missing_and_null_labels_left_out(tmp_path: Path) -> None:
    """The released table writes missing cells as the text ``nan``: in ``Labels`` they are null rows, left out and
    counted; elsewhere (sex, birth year, projection, ViewPosition_DICOM) they are missing values."""
    rows = [
        _padchest_row(0, "['cardiomegaly']", ViewPosition_DICOM="nan"),
        _padchest_row(1, "nan"),
        _padchest_row(2, "['normal']", "nan", PatientSex_DICOM="nan", PatientBirth="NaN"),
        _padchest_row(3, "NAN "),
        _padchest_row(4, "['pleural effusion']", PatientSex_DICOM="", ViewPosition_DICOM="NaN"),
    ]
    _padchest(tmp_path, rows, gz=True)
    with pytest.warns(UserWarning, match="left out: 2 row"):
        frame = get_reader("padchest")(tmp_path, name="pc", labels=LABELS)
    assert [(n.kind, n.rows, n.text) for n in frame.attrs[READING_NOTES]] == [("left out", 2, "null Labels cell")]
    assert list(frame["image_id"]) == ["pc:img0.png", "pc:img2.png", "pc:img4.png"]
    assert list(frame["sex"]) == ["M", "U", "U"]
    assert list(frame["view"]) == ["PA", "UNKNOWN", "PA"]
    np.testing.assert_array_equal(frame["age"], [65.0, np.nan, 65.0])
    assert list(frame["raw_Cardiomegaly"]) == [1, 0, 0] and list(frame["raw_Pleural Effusion"]) == [0, 0, 1]


def test_padchest_error_names_the_file_line_not_the_position_after_left_out_rows(tmp_path: Path) -> None:
    rows = [
        _padchest_row(0, "['normal']", Report="first line\nsecond line of a quoted report"),  # lines 2-3
        _padchest_row(1, "nan"),  # line 4, left out
        _padchest_row(2, ""),  # line 5, left out
        _padchest_row(3, "['normal']", ImageDir="/etc"),  # line 6
    ]
    _padchest(tmp_path, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SourceError, match=r"\.csv: line 6: path '/etc/img3\.png' is absolute"):
            get_reader("padchest")(tmp_path, name="pc", labels=LABELS)


def test_vindr_image_in_train_and_test_is_named_by_both_file_lines(tmp_path: Path) -> None:
    header = ["image_id", "rad_id", *VINDR_FINDINGS]
    train = [_vindr_marks("a", "R1"), _vindr_marks("a", "R2"), _vindr_marks("b", "R1"), _vindr_marks("b", "R2")]
    _write_csv(tmp_path / "annotations/image_labels_train.csv", header, train)
    test = [{k: v for k, v in _vindr_marks(image, "").items() if k != "rad_id"} for image in ("t1", "t2", "b")]
    _write_csv(tmp_path / "annotations/image_labels_test.csv", ["image_id", *VINDR_FINDINGS], test)
    with pytest.raises(
        SourceError, match=r"image_labels_test\.csv: line 4: image b is also in .*image_labels_train\.csv \(line 4\)"
    ):
        get_reader("vindr")(tmp_path, name="v", labels=LABELS)


@pytest.mark.parametrize("damage", ["truncated", "not gzip"])
def test_damaged_csv_gz_is_one_error_naming_the_file(tmp_path: Path, damage: str) -> None:
    path = _padchest(tmp_path, [_padchest_row(i, "['normal']", Report="x" * 200) for i in range(200)], gz=True)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        expected = "the gzip stream ends early, the file is cut short"
    else:
        path.write_bytes(gzip.decompress(path.read_bytes()))  # plain text under a .gz name
        expected = "not gzip data although named .gz"
    with pytest.raises(SourceError, match=rf"{path.name}: not a readable PadChest CSV: {expected}") as info:
        get_reader("padchest")(tmp_path, name="pc", labels=LABELS)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
