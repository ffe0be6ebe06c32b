"""MIMIC-CXR-JPG v2.0.0 (Johnson et al., 2019; PhysioNet, credentialed access).

Four gzipped tables at the root are joined on their keys, never by row order: labels per study (CheXpert or
NegBio labeler), metadata per image, and the official split per image. Each image takes its study's labels.
Images live at ``files/p<first two digits>/p<subject_id>/s<study_id>/<dicom_id>.jpg``.
"""

from __future__ import annotations

import csv
import gzip
import warnings
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from cxrgen.sources.common import (
    DEVICE_COLUMN,
    SourceError,
    assemble,
    at_line,
    blank_missing,
    check_raw_labels,
    check_relative_paths,
    check_unique_columns,
    csv_header,
    device_presence,
    mark_not_recorded,
    normalize_view,
    not_utf8,
    read_csv_table,
    require_columns,
    require_file,
    unreadable_reason,
)
from cxrgen.sources.labels import CHEXPERT_OBSERVATIONS
from cxrgen.sources.registry import ReaderOptions, register

PREFIX = "mimic-cxr-2.0.0"
SPLITS = {"train": "train", "validate": "val", "test": "test"}
#: MIMIC-CXR-JPG 2.1.0: radiologists' labels of the test-split studies, one row per ``study_id``.
RADIOLOGIST_FILE = "mimic-cxr-2.1.0-test-set-labeled.csv"


def read_table(root: Path, suffix: str, columns: list[str]) -> pd.DataFrame:
    """One gzipped table; a repeated column name, a non-UTF-8 byte or a row with too few or too many fields (a
    table cut short keeps a ragged last row) is an error naming the file and line."""
    path = require_file(root / f"{PREFIX}-{suffix}.csv.gz", f"MIMIC-CXR-JPG table {PREFIX}-{suffix}.csv.gz")
    header = csv_header(path)
    check_unique_columns(header, path)
    try:
        # The pyarrow parser refuses ragged rows, where pandas' own would fill them with NaN.
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig", engine="pyarrow"
        )
    except pd.errors.ParserError as exc:
        raise SourceError(f"{path}: {ragged_row(path, len(header)) or 'not a readable gzipped CSV'} ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None
    except (OSError, EOFError, zlib.error) as exc:
        raise SourceError(f"{path}: not a readable gzipped CSV: {unreadable_reason(path, exc)}") from exc
    except (pd.errors.EmptyDataError, ValueError) as exc:
        raise SourceError(f"{path}: not a readable gzipped CSV ({exc})") from exc
    blank_missing(frame)
    require_columns(frame, columns, path)
    for key in ("subject_id", "study_id"):
        if key in columns:
            bad = ~frame[key].fillna("").str.fullmatch(r"\d+")
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise SourceError(
                    f"{path}: {at_line(path, frame, row)}"
                    f", column {key!r}: {frame[key].iloc[row]!r} is not an id"
                )
    return frame


def ragged_row(path: Path, fields: int) -> str | None:
    """The first line whose field count differs from the header's, described; read only once a parse failed."""
    try:
        with gzip.open(path, "rt", encoding="utf-8-sig", errors="replace", newline="") as handle:
            reader = csv.reader(handle)
            for row in reader:
                if len(row) != fields:
                    return f"line {reader.line_num} has {len(row)} field(s), the header {fields} (a file cut short?)"
    except (OSError, EOFError, zlib.error) as exc:
        return unreadable_reason(path, exc)
    return None


def check_matched(images: pd.DataFrame, split: pd.DataFrame, root: Path, unmatched: str) -> None:
    """Metadata rows without a split row and split rows without metadata: an error, or with ``unmatched="warn"``
    a warning with both counts (unmatched split rows are dropped, unmatched images keep no official split)."""
    no_split = images["split"].isna()
    no_metadata = ~split["dicom_id"].isin(images["dicom_id"])
    if not no_split.any() and not no_metadata.any():
        return
    message = (
        f"{root / PREFIX}-metadata.csv.gz and -split.csv.gz disagree: {int(no_split.sum())} of {len(images)} "
        f"metadata row(s) have no split row (first {images.loc[no_split, 'dicom_id'].head(1).tolist()}), "
        f"{int(no_metadata.sum())} of {len(split)} split row(s) have no metadata "
        f"(first {split.loc[no_metadata, 'dicom_id'].head(1).tolist()})"
    )
    if unmatched != "warn":
        raise SourceError(f"{message}; a table cut short? set datasets.<name>.unmatched: warn to go on")
    warnings.warn(f"{message}; going on (unmatched: warn)", stacklevel=3)


def unique_keys(frame: pd.DataFrame, keys: list[str], path: str | Path) -> None:
    duplicated = frame.duplicated(keys, keep=False)
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise SourceError(
            f"{path}: {at_line(path, frame, row)}"
            f": duplicate {'+'.join(keys)} {frame.loc[row, keys].tolist()}"
        )


class MimicOptions(ReaderOptions):
    labels: Literal["chexpert", "negbio", "radiologist"] = Field(
        "chexpert", description="label file (radiologist: the 2.1.0 test-set labels)"
    )
    unmatched: Literal["error", "warn"] = Field(
        "error", description="split rows without metadata or metadata without split rows: an error, or a warning"
    )


@register("mimic", options=MimicOptions)
def read(root: Path, *, name: str, labels: list[str], options: MimicOptions) -> pd.DataFrame:
    """Read the four MIMIC-CXR-JPG tables into manifest rows; ``options.labels`` picks the label file.

    ``unmatched``: ``error`` (default) or ``warn`` when the metadata and split tables do not hold the same images.
    """
    labeler, unmatched = options.labels, options.unmatched
    label_columns = [label for label in labels if label in CHEXPERT_OBSERVATIONS]  # CheXpert spelling, every file
    if labeler == "radiologist":
        study_labels = read_radiologist_labels(root, label_columns)
        label_keys = ["study_id"]
    else:
        study_labels = read_table(root, labeler, ["subject_id", "study_id", *label_columns])
        label_file = f"{root / PREFIX}-{labeler}.csv.gz"
        unique_keys(study_labels, ["subject_id", "study_id"], label_file)
        check_raw_labels(study_labels, label_columns, Path(label_file))
        label_keys = ["subject_id", "study_id"]
    metadata = read_table(root, "metadata", ["dicom_id", "subject_id", "study_id", "ViewPosition"])
    unique_keys(metadata, ["dicom_id"], f"{root / PREFIX}-metadata.csv.gz")
    split = read_table(root, "split", ["dicom_id", "study_id", "subject_id", "split"])
    split_file = root / f"{PREFIX}-split.csv.gz"
    unique_keys(split, ["dicom_id"], f"{root / PREFIX}-split.csv.gz")
    unknown_split = ~split["split"].isin(list(SPLITS))
    if unknown_split.any():
        row = int(np.flatnonzero(unknown_split.to_numpy())[0])
        raise SourceError(
            f"{split_file}: {at_line(split_file, split, row)}, column 'split': {split['split'].iloc[row]!r} "
            f"is not one of {sorted(SPLITS)}"
        )

    # The official split is by subject: one subject in two splits would leak a patient between train and test.
    per_subject = split.groupby("subject_id", sort=False)["split"].transform("nunique")
    if (per_subject > 1).any():
        row = int(np.flatnonzero((per_subject > 1).to_numpy())[0])
        subject = split["subject_id"].iloc[row]
        found = sorted(split.loc[split["subject_id"] == subject, "split"].unique())
        raise SourceError(
            f"{split_file}: {at_line(split_file, split, row)}: subject_id {subject} is in more than one split "
            f"({', '.join(found)}); the official split keeps each patient in one"
        )

    images = metadata.merge(
        split[["dicom_id", "subject_id", "study_id", "split"]], on="dicom_id", how="left",
        suffixes=("", "_split"), validate="one_to_one",
    )  # fmt: skip
    mismatch = images["split"].notna() & (
        (images["subject_id"] != images["subject_id_split"]) | (images["study_id"] != images["study_id_split"])
    )
    if mismatch.any():
        bad = images.loc[mismatch].iloc[0]
        raise SourceError(
            f"{root / PREFIX}-split.csv.gz: dicom_id {bad['dicom_id']} has subject/study "
            f"{bad['subject_id_split']}/{bad['study_id_split']}, metadata says {bad['subject_id']}/{bad['study_id']}"
        )
    check_matched(images, split, root, unmatched)
    # A study with no label row was not labelled: its labels are blank, not negative.
    images = images.merge(
        study_labels, on=label_keys, how="left", validate="many_to_one", indicator="_label_row"
    )
    if labeler == "radiologist":  # the radiologists labelled the test split only
        images.loc[images["split"] != "test", "_label_row"] = "left_only"
    subject = images["subject_id"]
    paths = "files/p" + subject.str[:2] + "/p" + subject + "/s" + images["study_id"] + "/" + images["dicom_id"] + ".jpg"
    check_relative_paths(paths, root / f"{PREFIX}-metadata.csv.gz")
    result = assemble(
        dataset=name,
        native_ids=images["dicom_id"],
        paths=paths,
        patients=subject,
        studies=images["study_id"],
        views=normalize_view(images["ViewPosition"]),
        sexes=pd.Series("U", index=images.index),
        ages=pd.Series(np.nan, index=images.index),
        official_split=images["split"].map(SPLITS).fillna(""),
        raw={label: images[label] if label in label_columns else pd.Series(np.nan, index=images.index)
             for label in labels},
        source=root,
        device=device_presence(images[DEVICE_COLUMN]) if DEVICE_COLUMN in images else None,
        labelled=images["_label_row"] == "both",
    )
    not_recorded = [label for label in labels if label not in label_columns]
    return mark_not_recorded(result, not_recorded, root, "MIMIC-CXR-JPG")


def read_radiologist_labels(root: Path, label_columns: list[str]) -> pd.DataFrame:
    """``mimic-cxr-2.1.0-test-set-labeled.csv``: CheXpert-style labels by radiologists, keyed by study only."""
    path = require_file(root / RADIOLOGIST_FILE, f"MIMIC-CXR-JPG 2.1.0 radiologist label file {RADIOLOGIST_FILE}")
    frame = read_csv_table(path, "CSV")
    require_columns(frame, ["study_id", *label_columns], path)
    frame["study_id"] = frame["study_id"].str.strip().str.lstrip("s")
    bad = ~frame["study_id"].fillna("").str.fullmatch(r"\d+")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise SourceError(
            f"{path}: {at_line(path, frame, row)}"
            f", column 'study_id': {frame['study_id'].iloc[row]!r} is not an id"
        )
    unique_keys(frame, ["study_id"], str(path))
    check_raw_labels(frame, label_columns, path)
    keep = ["study_id", *label_columns, *([DEVICE_COLUMN] if DEVICE_COLUMN in frame else [])]
    return frame[list(dict.fromkeys(keep))]
