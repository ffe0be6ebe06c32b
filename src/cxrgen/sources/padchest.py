"""PadChest (Bustos et al., Medical Image Analysis 2020; BIMCV, https://bimcv.cipf.es/bimcv-projects/padchest/).

One CSV as released, ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` (or ``.csv.gz``), first column an
unnamed row index; images at ``<root>/<ImageDir>/<ImageID>`` (16-bit grayscale PNG). Column names follow the
release (DESIGN.md section 3b). ``Labels`` is a Python-literal list of lower-case terms, some with a leading
space; it is parsed with :func:`ast.literal_eval` (never ``eval``), every term stripped and matched exactly
against :data:`TERMS`. PadChest has no uncertain or blank labels: a label is 1 when any of its terms is present,
else 0. Rows whose ``Labels`` is null are left out and counted in the cohort table (a reading note), as are the rows
``labelled_by: physician`` leaves out. ``device`` is 1 when any ``Support Devices`` term is present. There is no
official split.
"""

from __future__ import annotations

import ast
import warnings
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
    normalize_sex,
    read_csv_table,
    require_columns,
)
from cxrgen.sources.registry import ReaderOptions, register

CSV_NAMES = (
    "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
    "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz",
)
COLUMNS = (
    "ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
    "Projection", "MethodLabel", "Labels",
)  # fmt: skip

#: Optional column: the bit depth of the image's source DICOM, by which its 16-bit PNG is scaled (as stated in the
#: release, per image); a PNG without an ``sBIT`` chunk would otherwise be scaled by its container, 65535.
BITS_COLUMN = "BitsStored_DICOM"

#: The one mapping from PadChest terms to study labels (printed in the README): a label is 1 when any term is.
TERMS: dict[str, frozenset[str]] = {
    "Atelectasis": frozenset({
        "atelectasis", "laminar atelectasis", "lobar atelectasis", "segmental atelectasis", "round atelectasis",
        "total atelectasis", "atelectasis basal",
    }),
    "Cardiomegaly": frozenset({"cardiomegaly"}),
    "Consolidation": frozenset({"consolidation"}),
    "Edema": frozenset({"pulmonary edema"}),
    "Pleural Effusion": frozenset({"pleural effusion", "loculated pleural effusion", "loculated fissural effusion"}),
    "Support Devices": frozenset({"pacemaker", "single chamber device", "dual chamber device", "electrical device"}),
}  # fmt: skip

#: ``Projection`` -> manifest view; any other value counts as UNKNOWN with a warning.
PROJECTIONS = {
    "PA": "PA", "AP": "AP", "AP_horizontal": "AP", "L": "LATERAL", "COSTAL": "OTHER", "EXCLUDE": "UNKNOWN",
    "UNK": "UNKNOWN",
}  # fmt: skip
LABELLED_BY = {"any": None, "physician": "Physician"}
#: The :data:`TERMS` entry that fills the manifest's ``device`` column (issue 11's shortcut and subgroups).
DEVICE_LABEL = "Support Devices"


def find_csv(root: Path, csv: str | None) -> Path:
    for name in (csv,) if csv else CSV_NAMES:
        if (root / name).is_file():
            return root / name
    raise SourceError(f"{root}: missing PadChest CSV (looked for {', '.join((csv,) if csv else CSV_NAMES)})")


def parse_padchest_labels(cells: pd.Series, source: Path) -> pd.Series:
    """Each non-null ``Labels`` cell -> frozenset of stripped terms; a cell that is not a list of strings is
    an error naming its file line and text."""
    parsed: list[frozenset[str] | None] = []
    for position, cell in enumerate(cells.to_numpy()):
        if cell is None or (isinstance(cell, float) and np.isnan(cell)):
            parsed.append(None)
            continue
        try:
            value = ast.literal_eval(str(cell))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = None
        if not isinstance(value, list | tuple) or not all(isinstance(term, str) for term in value):
            raise SourceError(
                f"{source}: {at_line(source, cells, position)}"
                f", column 'Labels': {str(cell)[:80]!r} is not a list of terms"
            )
        parsed.append(frozenset(term.strip() for term in value))
    return pd.Series(parsed, index=cells.index, dtype=object)


def padchest_ages(study_dates: pd.Series, births: pd.Series, source: Path) -> pd.Series:
    """Year of ``StudyDate_DICOM`` (YYYYMMDD) minus ``PatientBirth`` (a year); NaN where either is missing."""
    years = pd.to_numeric(study_dates.astype("string").str.strip().str[:4], errors="coerce")
    birth = pd.to_numeric(births, errors="coerce")
    bad = births.notna() & (births.astype("string").str.strip() != "") & birth.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise SourceError(
            f"{source}: {at_line(source, births, row)}"
            f", column 'PatientBirth': {births.iloc[row]!r} is not a year"
        )
    age = (years - birth).astype(float)
    return age.where((age >= 0) & (age <= 120))


def padchest_views(projections: pd.Series, source: Path) -> pd.Series:
    text = projections.fillna("").astype(str).str.strip()
    views = text.map(PROJECTIONS)
    unknown = views.isna()
    if unknown.any():
        values = sorted(set(text[unknown]))[:5]
        warnings.warn(
            f"{source}: {int(unknown.sum())} image(s) with an unknown Projection ({values}) counted as UNKNOWN",
            stacklevel=3,
        )
    return views.fillna("UNKNOWN").astype(str)


class PadchestOptions(ReaderOptions):
    csv: str | None = Field(None, description="the labels CSV's name; the released name (.csv or .csv.gz) if omitted")
    labelled_by: Literal["any", "physician"] = Field("any", description="MethodLabel: any, or Physician rows only")


@register("padchest", options=PadchestOptions)
def read(root: Path, *, name: str, labels: list[str], options: PadchestOptions) -> pd.DataFrame:
    """Read the PadChest CSV into manifest rows; raw labels in {1, 0}."""
    csv, labelled_by = options.csv, options.labelled_by
    not_recorded = [label for label in labels if label not in TERMS]  # no term of PadChest's maps to them
    source = find_csv(root, csv)
    frame = read_csv_table(source, "PadChest CSV")
    require_columns(frame, COLUMNS, source)
    if frame.empty:
        raise SourceError(f"{source}: no rows")
    terms = parse_padchest_labels(frame["Labels"], source)
    keep = terms.notna().to_numpy().copy()
    notes = []
    if not keep.all():
        notes.append(ReadingNote("left out", int((~keep).sum()), "null Labels cell"))
    wanted = LABELLED_BY[labelled_by]
    if wanted is not None:
        by = (frame["MethodLabel"].fillna("").str.strip() == wanted).to_numpy()
        if (keep & ~by).any():
            dropped = int((keep & ~by).sum())
            notes.append(ReadingNote("left out", dropped, f"labelled_by={labelled_by}: MethodLabel is not {wanted}"))
        keep &= by
    # The index stays the record number read_csv gave, so an error below names the line the user finds.
    frame, terms = frame.loc[keep], terms.loc[keep]
    if frame.empty:
        raise SourceError(f"{source}: no rows left with labels (labelled_by={labelled_by})")
    for column in ("ImageID", "ImageDir", "PatientID", "StudyID"):
        empty = frame[column].isna().to_numpy()
        if empty.any():
            position = int(np.flatnonzero(empty)[0])
            raise SourceError(
                f"{source}: {at_line(source, frame, position)}"
                f", column {column!r}: empty, expected a value"
            )
    folders = frame["ImageDir"].str.strip().str.replace(r"\.0$", "", regex=True)
    paths = folders + "/" + frame["ImageID"].str.strip()
    check_relative_paths(paths, source)
    present = {label: terms.map(lambda ts, label=label: 1.0 if ts & TERMS[label] else 0.0) for label in TERMS}
    result = assemble(
        dataset=name,
        native_ids=frame["ImageID"].str.strip(),
        paths=paths,
        patients=frame["PatientID"].str.strip(),
        studies=frame["StudyID"].str.strip(),
        views=padchest_views(frame["Projection"], source),
        sexes=normalize_sex(frame["PatientSex_DICOM"]),
        ages=padchest_ages(frame["StudyDate_DICOM"], frame["PatientBirth"], source),
        official_split=None,
        raw={label: present[label] if label in TERMS else pd.Series(np.nan, index=frame.index) for label in labels},
        source=source,
        device=present[DEVICE_LABEL],
        bits_stored=frame.get(BITS_COLUMN),  # optional: None without the column
    )
    for note in notes:
        add_reading_note(result, note)
    return mark_not_recorded(result, not_recorded, source, "PadChest")
