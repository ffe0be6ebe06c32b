"""``reader: dicom_folder``: a PACS export read from its DICOM headers (issue 23), on real files written by pydicom."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from cxrgen.sources import READERS
from cxrgen.sources.common import SourceError
from cxrgen.study.config import load_study
from helpers.faults import ARCH, LABELS, cxrgen, error_lines

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

#: (path below the root, PatientID, StudyInstanceUID, ViewPosition, PatientSex, PatientAge): 3 patients,
#: 3 studies (the last file has no StudyInstanceUID: its own study), 5 images, two of them without ``.dcm``.
FILES = [
    ("2024/P1/IM0001.dcm", "P1", "1.2.3.1", "PA", "F", "063Y"),
    ("2024/P1/IM0002", "P1", "1.2.3.1", "LATERAL", "F", "063Y"),
    ("2024/P1/IM0003.dcm", "P1", "1.2.3.2", "AP", "F", "064Y"),
    ("2024/P2/x.dicom", "P2", "1.2.3.3", "AP", "M", "011M"),
    ("other/IMG9", "P3", None, None, None, None),
]


def write_dicom(path: Path, patient: str, study: str | None, view: str | None, sex: str | None,
                age: str | None, uid: str | None = None) -> str:
    """A real DICOM part-10 file (preamble, DICM, file meta, 16-bit pixels), as a modality writes it."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = patient, "DX"
    for key, value in (("StudyInstanceUID", study), ("ViewPosition", view), ("PatientSex", sex),
                       ("PatientAge", age)):  # fmt: skip
        if value is not None:
            setattr(ds, key, value)
    pixels = np.random.default_rng(len(str(path))).integers(0, 4096, (24, 20), dtype=np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def write_export(root: Path) -> list[str]:
    """The five DICOM files, a text file, and a ``.dcm`` that is not DICOM; returns the SOPInstanceUIDs."""
    uids = [write_dicom(root / path, *fields) for path, *fields in FILES]
    (root / "README.txt").write_text("exported by the PACS\n")
    (root / "2024" / "broken.dcm").write_bytes(b"\0" * 64)  # a .dcm name, but no preamble + DICM: not DICOM
    return uids


def read(root: Path, **options: Any) -> pd.DataFrame:
    return READERS["dicom_folder"](root, name="pacs", labels=LABELS, options=options)


def test_headers_give_ids_patients_studies_views_sex_and_age(tmp_path: Path) -> None:
    uids = write_export(tmp_path / "pacs")
    write_dicom(tmp_path / "pacs" / "other" / "IMG10", "P3", None, "PA", "O", "070Y")  # DICOM's 'other' sex
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every header value is in the vocabularies: nothing to warn about
        frame = read(tmp_path / "pacs").query("path != 'other/IMG10'")
    assert len(frame) == 5 and frame["patient_id"].nunique() == 3 and frame["study_id"].nunique() == 4
    by_path = frame.set_index("path")
    assert sorted(by_path.index) == sorted(path for path, *_ in FILES)  # found by content, not by extension
    assert by_path.loc["2024/P1/IM0002", "image_id"] == f"pacs:{uids[1]}"
    assert by_path.loc["2024/P1/IM0002", "patient_id"] == "pacs:P1"
    assert by_path.loc["2024/P1/IM0002", "study_id"] == "pacs:1.2.3.1"
    assert by_path.loc["other/IMG9", "study_id"] == f"pacs:{uids[4]}"  # no StudyInstanceUID: its own study
    assert [by_path.loc[p, "view"] for p, *_ in FILES] == ["PA", "LATERAL", "AP", "AP", "UNKNOWN"]
    assert [by_path.loc[p, "sex"] for p, *_ in FILES] == ["F", "F", "F", "M", "U"]
    ages = [by_path.loc[p, "age"] for p, *_ in FILES]
    assert ages[:4] == [63.0, 63.0, 64.0, pytest.approx(11 / 12)] and np.isnan(ages[4])
    assert not frame["labelled"].any() and frame[[f"raw_{label}" for label in LABELS]].isna().all().all()


def test_headers_are_read_without_pixel_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_export(tmp_path / "pacs")
    calls: list[dict[str, Any]] = []
    real = pydicom.dcmread

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", spy)
    read(tmp_path / "pacs", workers=3)
    assert len(calls) == 5 and all(call.get("stop_before_pixels") is True for call in calls)


def test_a_labels_table_keyed_by_uid_or_file_name(tmp_path: Path) -> None:
    uids = write_export(tmp_path / "pacs")
    table = pd.DataFrame({
        "key": [uids[0], "IM0002", "x.dicom", "IMG9", "not-an-image"],
        "herz": ["yes", "no", "yes", "", "no"], "erguss": ["no", "no", "u", "yes", "no"],
    })  # fmt: skip
    table.to_csv(tmp_path / "pacs" / "labels.csv", index=False)
    options = {"labels_table": "labels.csv", "labels_key": "key",
               "labels": {"Cardiomegaly": "herz", "Pleural Effusion": "erguss"},
               "values": {"positive": ["yes"], "negative": ["no"], "uncertain": ["u"]}}  # fmt: skip
    with pytest.warns(UserWarning) as caught:
        frame = read(tmp_path / "pacs", **options).set_index("path")
    said = " | ".join(str(w.message) for w in caught)
    assert "1 row(s) name no DICOM file" in said and "'not-an-image'" in said, said
    assert "1 of 5 DICOM file(s) have no row" in said, said  # IM0003
    assert frame["labelled"].tolist() == [True, True, False, True, True]
    assert frame["raw_Cardiomegaly"].fillna(9).tolist() == [1, 0, 9, 1, 9]
    assert frame["raw_Pleural Effusion"].fillna(9).tolist() == [0, 0, 9, -1, 1]


def test_prepare_until_manifest_reads_the_dicom_folders(tmp_path: Path) -> None:
    """A labelled DICOM folder trains, an unlabelled one is the external test set; counts exact in the manifest."""
    uids = write_export(tmp_path / "train")
    pd.DataFrame({"SOPInstanceUID": uids, "cm": ["1", "0", "1", "0", "1"]}).to_csv(tmp_path / "train" / "y.csv",
                                                                                    index=False)  # fmt: skip
    write_export(tmp_path / "pacs")
    labelled = {"labels_table": "y.csv", "labels": {"Cardiomegaly": "cm"}}
    study = {
        "name": "s", "out": "out", "labels": LABELS, "architectures": [ARCH],
        "splits": {"a": {"fractions": {"train": 0.5, "val": 0.0, "test": 0.5}}},
        "datasets": {"a": {"reader": "dicom_folder", "root": "train", **labelled},
                     "pacs": {"reader": "dicom_folder", "root": "pacs"}},
        "configurations": [{"name": "c", "train": ["a"], "internal": ["a"], "external": ["pacs"]}],
    }  # fmt: skip
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    assert not load_study(tmp_path / "study.yaml").datasets["pacs"].labelled()
    done = cxrgen("prepare", tmp_path / "study.yaml", "--until", "manifest", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    counts = manifest.groupby("dataset").agg(images=("image_id", "size"), patients=("patient_id", "nunique"))
    assert counts.to_dict("index") == {"a": {"images": 5, "patients": 3}, "pacs": {"images": 5, "patients": 3}}
    assert manifest.loc[manifest["dataset"] == "a", "Cardiomegaly"].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert manifest.loc[manifest["dataset"] == "pacs", "Cardiomegaly"].isna().all()
    assert "IM0002" in " ".join(manifest["path"])


@pytest.mark.parametrize(
    ("setup", "options", "pattern"),
    [
        ("empty", {}, r"pacs: no DICOM file below it \(2 file\(s\) looked at by content: a 128-byte preamble then "
                      r"'DICM'\); expected a PACS export of DICOM files"),
        ("no-patient", {}, r"nopat\.dcm: DICOM header has no PatientID \(1 file\(s\) below .* lack it\)"),
        ("twice", {}, r"pacs: 2024/P1/IM0001\.dcm and copy\.dcm have the same SOPInstanceUID"),
        ("full", {"labels": {"Edema": "e"}}, r"labels is given without labels_table"),
        ("full", {"labels_table": "../y.csv", "labels": {"Edema": "e"}}, r"labels_table: '\.\./y\.csv' is absolute"),
        ("full", {"labels_table": "y.csv", "labels": {"Edema": "e"}, "labels_key": "id"},
         r"y\.csv: labels_key: column 'id' does not exist"),
    ],
)  # fmt: skip
def test_bad_input_is_one_error_line(tmp_path: Path, setup: str, options: dict[str, Any], pattern: str) -> None:
    root = tmp_path / "pacs"
    if setup == "empty":
        root.mkdir()
        (root / "a.dcm").write_bytes(b"\0" * 200)
        (root / "notes.txt").write_text("nothing here")
    else:
        uids = write_export(root)
        pd.DataFrame({"SOPInstanceUID": uids, "e": ["1"] * 5}).to_csv(root / "y.csv", index=False)
        if setup == "no-patient":
            write_dicom(root / "nopat.dcm", "", "1.2", "PA", "F", "050Y")
        if setup == "twice":
            write_dicom(root / "copy.dcm", "P9", "1.9", "PA", "F", "050Y", uid=uids[0])
    with pytest.raises(SourceError, match=pattern) as caught, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read(root, **options)
    assert "\n" not in str(caught.value)


def test_an_empty_folder_through_the_command_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    write_export(tmp_path / "train")
    pd.DataFrame({"SOPInstanceUID": ["x"], "cm": ["1"]}).to_csv(tmp_path / "train" / "y.csv", index=False)
    study = {
        "name": "s", "out": "out", "labels": LABELS, "architectures": [ARCH],
        "datasets": {"t": {"reader": "dicom_folder", "root": "train", "labels_table": "y.csv",
                           "labels": {"Cardiomegaly": "cm"}},
                     "pacs": {"reader": "dicom_folder", "root": "a"}},
        "configurations": [{"name": "c", "train": ["t"], "internal": ["t"], "external": ["pacs"]}],
    }  # fmt: skip
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    done = cxrgen("prepare", tmp_path / "study.yaml", "--until", "manifest", cwd=tmp_path)
    assert done.returncode == 1
    lines = error_lines(done)
    assert len(lines) == 1 and "no DICOM file below it (0 file(s) looked at" in lines[0], done.stderr[-2000:]
