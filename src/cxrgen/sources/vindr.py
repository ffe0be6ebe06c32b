"""VinDr-CXR (Nguyen et al., Scientific Data 2022; https://physionet.org/content/vindr-cxr/1.0.0/), two layouts.

The layout is detected from the files present:

* PhysioNet 1.0.0: ``annotations/image_labels_train.csv`` (a row per image and radiologist: ``image_id``,
  ``rad_id``, then one 0/1 column per finding and diagnosis, e.g. ``Atelectasis``, ``Cardiomegaly``,
  ``Consolidation``, ``Edema``, ``Pleural effusion``, as listed in the dataset's PhysioNet description and
  Table 2 of the paper), ``annotations/image_labels_test.csv`` (the five-reader consensus, a row per image,
  no ``rad_id`` needed), images ``train/<image_id>.dicom`` and ``test/<image_id>.dicom``. The official split is
  train/test; validation is carved from train by image (see :mod:`cxrgen.data.splits`).
* Kaggle VinBigData: ``train.csv`` with ``image_id, class_name, class_id, rad_id, x_min, y_min, x_max, y_max``
  (a row per box, or per "No finding" reading), images ``train/<image_id>.dicom``. Its 14 classes have no Edema:
  that label is not recorded (NaN under every policy, masked out of loss and metrics), and a warning says so.

Three radiologists read each training image: ``readers: majority`` (default) calls a finding positive when at
least two distinct ``rad_id`` marked it, ``readers: any`` when one did. Neither layout has patient ids: every
image is its own patient, which the cohort table states (a reading note).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from cxrgen.sources.common import (
    ReadingNote,
    SourceError,
    add_reading_note,
    assemble,
    at_line,
    check_relative_paths,
    mark_not_recorded,
    read_csv_table,
    require_columns,
)
from cxrgen.sources.registry import ReaderOptions, register

#: Study label -> the VinDr spelling (column in the PhysioNet tables, class_name in Kaggle's train.csv).
VINDR_NAMES = {"Pleural Effusion": "Pleural effusion", "Lung Opacity": "Lung Opacity"}
#: The 14 Kaggle classes (and "No finding"): Edema is not among them.
KAGGLE_CLASSES = frozenset({
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD", "Infiltration",
    "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis", "No finding",
})  # fmt: skip
#: The 28 columns of findings and diagnoses of the PhysioNet tables (the dataset's description, Table 2 of the paper).
PHYSIONET_COLUMNS = frozenset({
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture", "Consolidation",
    "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity", "Lung cavity", "Lung cyst",
    "Mediastinal shift", "Nodule/Mass", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis", "Rib fracture", "Other lesion", "COPD", "Lung tumor", "Pneumonia", "Tuberculosis",
    "Other diseases", "Other disease", "No finding",
})  # fmt: skip
PHYSIONET_TRAIN = Path("annotations/image_labels_train.csv")
PHYSIONET_TEST = Path("annotations/image_labels_test.csv")
KAGGLE_TRAIN = Path("train.csv")
KAGGLE_COLUMNS = ("image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max")
#: ``readers`` option -> distinct radiologists needed to call a training image positive.
VOTES_NEEDED = {"majority": 2, "any": 1}


def _read(source: Path) -> pd.DataFrame:
    frame = read_csv_table(source, "VinDr-CXR CSV")
    if frame.empty:
        raise SourceError(f"{source}: no rows")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _votes(marks: pd.DataFrame, column: str, source: Path) -> pd.Series:
    """Distinct radiologists per image who marked ``column`` (0/1 values checked)."""
    values = pd.to_numeric(marks[column], errors="coerce")
    bad = ~values.isin([0.0, 1.0])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise SourceError(
            f"{source}: {at_line(source, marks, row)}"
            f", column {column!r}: {marks[column].iloc[row]!r} is not 0 or 1"
        )
    positive = marks.loc[values.to_numpy() == 1.0]
    return positive.groupby("image_id")["rad_id"].nunique()


def _physionet(
    root: Path, labels: list[str], need: int
) -> tuple[pd.DataFrame, dict[str, pd.Series], Path, list[str]]:
    train_source, test_source = root / PHYSIONET_TRAIN, root / PHYSIONET_TEST
    train = _read(train_source)
    not_recorded = [label for label in labels if VINDR_NAMES.get(label, label) not in PHYSIONET_COLUMNS]
    recorded = [label for label in labels if label not in not_recorded]
    columns = [VINDR_NAMES.get(label, label) for label in recorded]
    require_columns(train, ["image_id", "rad_id", *columns], train_source)
    train["image_id"] = train["image_id"].str.strip()
    first_rows = train["image_id"].drop_duplicates()
    ids = pd.Index(first_rows)
    raw: dict[str, list[pd.Series]] = {label: [] for label in recorded}
    for label, column in zip(recorded, columns, strict=True):
        votes = _votes(train, column, train_source).reindex(ids, fill_value=0)
        raw[label].append((votes >= need).astype(float))
    images = [pd.DataFrame({"image_id": ids, "split": "train"})]
    if test_source.is_file():
        test = _read(test_source)
        require_columns(test, ["image_id", *columns], test_source)
        test["image_id"] = test["image_id"].str.strip()
        dup = test["image_id"].duplicated()
        if dup.any():
            row = int(np.flatnonzero(dup.to_numpy())[0])
            raise SourceError(
                f"{test_source}: {at_line(test_source, test, row)}"
                f": image {test['image_id'].iloc[row]} repeats "
                              "(the test table holds one consensus row per image)")
        both = test["image_id"].isin(ids).to_numpy()
        if both.any():
            row = int(np.flatnonzero(both)[0])
            image = test["image_id"].iloc[row]
            train_row = int(np.flatnonzero((first_rows == image).to_numpy())[0])
            raise SourceError(
                f"{test_source}: {at_line(test_source, test, row)}: image {image} is also in {train_source} "
                f"({at_line(train_source, first_rows, train_row)}); an image belongs to train or to test"
            )
        test_ids = pd.Index(test["image_id"])
        for label, column in zip(recorded, columns, strict=True):
            test["rad_id"] = "consensus"
            votes = _votes(test, column, test_source).reindex(test_ids, fill_value=0)
            raw[label].append((votes >= 1).astype(float))
        images.append(pd.DataFrame({"image_id": test_ids, "split": "test"}))
    frame = pd.concat(images, ignore_index=True)
    values = {label: pd.concat(raw[label]).reset_index(drop=True) if label in raw
              else pd.Series(np.nan, index=frame.index) for label in labels}
    return frame, values, train_source, not_recorded


def _kaggle(root: Path, labels: list[str], need: int) -> tuple[pd.DataFrame, dict[str, pd.Series], Path, list[str]]:
    source = root / KAGGLE_TRAIN
    boxes = _read(source)
    require_columns(boxes, KAGGLE_COLUMNS, source)
    boxes["image_id"] = boxes["image_id"].str.strip()
    boxes["class_name"] = boxes["class_name"].str.strip()
    unknown = ~boxes["class_name"].isin(list(KAGGLE_CLASSES))
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        found = boxes["class_name"].iloc[row]
        raise SourceError(f"{source}: {at_line(source, boxes, row)}, column 'class_name': unknown class {found!r}")
    ids = pd.Index(boxes["image_id"].drop_duplicates())
    raw: dict[str, pd.Series] = {}
    not_recorded = []
    for label in labels:
        name = VINDR_NAMES.get(label, label)
        if name not in KAGGLE_CLASSES:  # e.g. Edema: NaN under every policy, never 15,000 false negatives
            not_recorded.append(label)
            raw[label] = pd.Series(np.nan, index=range(len(ids)))
            continue
        votes = boxes.loc[boxes["class_name"] == name].groupby("image_id")["rad_id"].nunique()
        raw[label] = (votes.reindex(ids, fill_value=0) >= need).astype(float).reset_index(drop=True)
    return pd.DataFrame({"image_id": ids, "split": "train"}), raw, source, not_recorded


class VindrOptions(ReaderOptions):
    readers: Literal["majority", "any"] = Field(
        "majority", description="a finding is positive when 2 of the 3 radiologists marked it, or any one"
    )


@register("vindr", options=VindrOptions, labels=VINDR_NAMES)
def read(root: Path, *, name: str, labels: list[str], options: VindrOptions) -> pd.DataFrame:
    """Read either VinDr-CXR layout into manifest rows; raw labels in {1, 0} (NaN for a label it lacks)."""
    readers = options.readers
    if (root / PHYSIONET_TRAIN).is_file():
        frame, raw, source, not_recorded = _physionet(root, labels, VOTES_NEEDED[readers])
        layout = "VinDr-CXR"
    elif (root / KAGGLE_TRAIN).is_file():
        frame, raw, source, not_recorded = _kaggle(root, labels, VOTES_NEEDED[readers])
        layout = "VinBigData (Kaggle)"
    else:
        raise SourceError(f"{root}: missing VinDr-CXR annotations (looked for {PHYSIONET_TRAIN} and {KAGGLE_TRAIN})")
    paths = frame["split"] + "/" + frame["image_id"] + ".dicom"
    official = frame["split"].map({"train": "train_val", "test": "test"})  # val carved from train, by image
    check_relative_paths(paths, source)
    n = len(frame)
    result = assemble(
        dataset=name,
        native_ids=frame["image_id"],
        paths=paths,
        patients=frame["image_id"],
        studies=frame["image_id"],
        views=pd.Series(["PA"] * n),  # VinDr-CXR holds posteroanterior films only (the paper)
        sexes=pd.Series(["U"] * n),
        ages=pd.Series([np.nan] * n),
        official_split=official,
        raw=raw,
        source=source,
    )
    note = ReadingNote("note", n, "no patient ids; each image counts as its own patient")
    return mark_not_recorded(add_reading_note(result, note), not_recorded, source, layout)
