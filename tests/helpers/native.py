"""Writers of tiny datasets in the native layouts of DESIGN.md section 3, independent of the readers."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pandas as pd

CHEXPERT_COLUMNS = [
    "Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly",
    "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
    "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices",
]  # fmt: skip
MIMIC_LABEL_COLUMNS = [
    "subject_id", "study_id", "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
    "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
]  # fmt: skip
MIMIC_METADATA_COLUMNS = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]  # fmt: skip
LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


def touch_images(root: Path, paths: list[str]) -> None:
    """Empty placeholder files where the metadata puts images: a reader's rows whose file is not on disk are left
    out of the manifest (a partial copy, issue 23), and these writers test the metadata, not the pixels."""
    for relative in paths:
        if relative.startswith("/") or ".." in relative.split("/") or "\\" in relative or ":" in relative:
            continue  # a hostile path a test feeds the reader on purpose
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()


def chexpert_csv(path: Path, rows: list[dict[str, str]], prefix: str = "CheXpert-v1.0-small") -> Path:
    """Rows give ``patient, study, view (frontal|lateral), appa`` and any label values as strings."""
    lines = [",".join(CHEXPERT_COLUMNS)]
    for i, row in enumerate(rows):
        values = {c: "" for c in CHEXPERT_COLUMNS}
        kind = row.get("view", "frontal")
        values["Path"] = (
            f"{prefix}/train/patient{row['patient']}/study{row.get('study', '1')}/view{i + 1}_{kind}.jpg"
            if "path" not in row
            else row["path"]
        )
        values["Sex"] = row.get("sex", "Female")
        values["Age"] = row.get("age", "60")
        values["Frontal/Lateral"] = "Lateral" if kind == "lateral" else "Frontal"
        values["AP/PA"] = row.get("appa", "" if kind == "lateral" else "AP")
        for label in CHEXPERT_COLUMNS[5:]:
            values[label] = row.get(label, "")
        lines.append(",".join(values[c] for c in CHEXPERT_COLUMNS))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    touch_images(path.parent.parent, [line.split(",")[0] for line in lines[1:]])
    return path


def gz_csv(path: Path, frame: pd.DataFrame) -> None:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        handle.write(buffer.getvalue())


def mimic_root(root: Path, labeler_values: dict[str, dict[tuple[int, int], dict[str, str]]] | None = None) -> Path:
    """Two subjects, three studies, five images; tables written in different row orders."""
    images = [
        ("aaaa1111-00000000-00000000-00000000-00000001", 10000032, 50414267, "PA", "test"),
        ("aaaa1111-00000000-00000000-00000000-00000002", 10000032, 50414267, "LATERAL", "test"),
        ("bbbb2222-00000000-00000000-00000000-00000003", 10000032, 53189527, "AP", "test"),
        ("cccc3333-00000000-00000000-00000000-00000004", 11000011, 55555555, "", "validate"),
        ("cccc3333-00000000-00000000-00000000-00000005", 11000011, 55555555, "LL", "validate"),
    ]
    metadata = pd.DataFrame(
        [
            {c: "" for c in MIMIC_METADATA_COLUMNS}
            | {"dicom_id": d, "subject_id": s, "study_id": st, "ViewPosition": v, "Rows": 3056, "Columns": 2544}
            for d, s, st, v, _ in images
        ]
    )[MIMIC_METADATA_COLUMNS]
    split = pd.DataFrame([{"dicom_id": d, "study_id": st, "subject_id": s, "split": sp} for d, s, st, _, sp in images])
    labelers = labeler_values or {
        "chexpert": {
            (10000032, 50414267): {"Cardiomegaly": "1.0", "Edema": "-1.0", "Atelectasis": "-1.0"},
            (10000032, 53189527): {"Pleural Effusion": "0.0", "Consolidation": "-1.0"},
            (11000011, 55555555): {"No Finding": "1.0"},
        },
        "negbio": {
            (10000032, 50414267): {"Cardiomegaly": "1.0", "Edema": "1.0"},
            (10000032, 53189527): {"Pleural Effusion": "1.0"},
            (11000011, 55555555): {"No Finding": "1.0"},
        },
    }
    for name, studies in labelers.items():
        rows = []
        for (subject, study), values in studies.items():
            row = {c: "" for c in MIMIC_LABEL_COLUMNS} | {"subject_id": subject, "study_id": study}
            rows.append(row | values)
        gz_csv(root / f"mimic-cxr-2.0.0-{name}.csv.gz", pd.DataFrame(rows)[MIMIC_LABEL_COLUMNS][::-1])
    gz_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", metadata)
    gz_csv(root / "mimic-cxr-2.0.0-split.csv.gz", split.iloc[[3, 0, 4, 2, 1]])
    touch_images(root, [f"files/p{str(s)[:2]}/p{s}/s{st}/{d}.jpg" for d, s, st, _, _ in images])
    return root


NIH_2017_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
NIH_ROWS = [
    ("00000001_000.png", "Cardiomegaly", 0, 1, "058Y", "M", "PA"),
    ("00000001_001.png", "Cardiomegaly|Effusion", 1, 1, "058Y", "M", "PA"),
    ("00000002_000.png", "No Finding", 0, 2, "011M", "F", "AP"),
    ("00000003_000.png", "Atelectasis|Edema|Consolidation", 0, 3, "005D", "F", "PA"),
    ("00000004_000.png", "Hernia", 0, 4, "413Y", "M", "AP"),
]


def nih_data_entry(root: Path, variant: str, images: bool = True) -> Path:
    """Write one of the three Data_Entry variants: ``original2017``, ``v2020`` or ``reexport``, and (``images``)
    empty placeholder images in ``images/``."""
    root.mkdir(parents=True, exist_ok=True)
    if variant == "original2017":
        name, header, end = "Data_Entry_2017.csv", NIH_2017_HEADER, ""
    elif variant == "v2020":
        name, header, end = "Data_Entry_2017_v2020.csv", NIH_2017_HEADER.replace("Gender", "Sex"), ","
    else:
        name, header, end = "Data_Entry_2017_v2020.csv", NIH_2017_HEADER[:-1], ""
    lines = [header]
    for image, findings, follow, patient, age, sex, view in NIH_ROWS:
        if variant != "original2017":
            age = str(int(age[:-1])) if age.endswith("Y") else "0"
        lines.append(f"{image},{findings},{follow},{patient},{age},{sex},{view},2500,2048,0.143,0.143{end}")
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    (root / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000002_000.png")
    (root / "test_list.txt").write_text("00000003_000.png\n00000004_000.png")
    if images:
        touch_images(root, [f"images/{row[0]}" for row in NIH_ROWS])
    return path

CHEX_FIXTURE_ROWS = [
    {"patient": "00001", "appa": "AP", "Cardiomegaly": "1.0", "Edema": "-1.0", "age": "68", "sex": "Female"},
    {"patient": "00001", "view": "lateral", "Cardiomegaly": "1.0", "age": "68", "sex": "Female"},
    {"patient": "00002", "study": "2", "appa": "PA", "Pleural Effusion": "0.0", "age": "87", "sex": "Male"},
    {"patient": "00003", "appa": "LL", "Atelectasis": "1.0", "sex": "Unknown", "age": "41"},
]
