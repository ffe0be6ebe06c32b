"""``reader: dicom_folder``: a PACS export, every DICOM file below a folder, described by its own headers.

The study file (DESIGN.md section 8)::

    pacs:
      reader: dicom_folder
      root: /data/pacs_export                # every DICOM file below it, at any depth, whatever its name
      labels_table: labels.csv               # optional, relative to root: a row per image
      labels_key: SOPInstanceUID             # the table's column naming the image: its SOPInstanceUID or file name
      labels: {Cardiomegaly: cardiomegaly}   # as in ``reader: table``
      values: {positive: [1, "yes"], negative: [0, "no"]}

A file is DICOM by its content (DICOM part 10: a 128-byte preamble then ``DICM``), not by its name, so a PACS
export's extension-less files are found and a stray ``README`` or ``.png`` is not. Headers are read without
pixel data (``pydicom.dcmread(stop_before_pixels=True)``) in a thread pool (the work is file I/O). From the header:
image id ``SOPInstanceUID``, patient ``PatientID``, study ``StudyInstanceUID`` (else the image is its own study),
view ``ViewPosition``, sex ``PatientSex``, age ``PatientAge`` (``063Y``, ``011M``, ``005D``, ``002W``), through the
vocabularies of the other readers. The image path is the file's path relative to ``root``.

Without ``labels_table`` the dataset is unlabelled: an external test set only. With it, its label cells are read
as the table reader reads them (:func:`cxrgen.sources.table.raw_labels`); an image without a row is unlabelled
(targets NaN, counted in one warning), and a row naming no image is counted in one warning.
"""

from __future__ import annotations

import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from cxrgen.sources.common import SourceError, ages_in_years, assemble, normalize_sex
from cxrgen.sources.registry import ReaderOptions, register
from cxrgen.sources.table import TableValues, raw_labels, read_table, table_views

#: The header fields read, and the manifest column each fills.
HEADER_FIELDS = ("SOPInstanceUID", "PatientID", "StudyInstanceUID", "ViewPosition", "PatientSex", "PatientAge")
#: A DICOM age string (VR AS): three digits and a unit; plain numbers are taken as years.
AGE = re.compile(r"^\s*\d+\s*[DWMY]?\s*$", re.IGNORECASE)


class DicomFolderOptions(ReaderOptions):
    labels_table: str | None = Field(default=None, description="labels, relative to root; omitted = unlabelled")
    labels_key: str = Field(default="SOPInstanceUID", description="its column holding SOPInstanceUID or file name")
    labels: dict[str, str] | None = Field(default=None, description="study label -> column of labels_table")
    values: TableValues = TableValues()
    workers: int = Field(default=8, ge=1, description="threads reading headers")

    @model_validator(mode="after")
    def _labels_need_a_table(self) -> DicomFolderOptions:
        if (self.labels_table is None) != (self.labels is None):
            given, missing = ("labels", "labels_table") if self.labels_table is None else ("labels_table", "labels")
            raise ValueError(f"{given} is given without {missing}; a labelled DICOM folder needs both")
        return self

    def labelled(self) -> bool:
        """False without ``labels_table``: its images may only be tested, never trained on."""
        return self.labels_table is not None


def is_dicom_file(path: Path) -> bool:
    """DICOM part 10 by content: a 128-byte preamble followed by ``DICM``."""
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _files(root: Path) -> list[Path]:
    """Every regular file below ``root``, sorted, hidden folders included (a PACS export names its own)."""
    found: list[Path] = []
    for folder, _, names in os.walk(root):
        found.extend(Path(folder) / name for name in names)
    return sorted(p for p in found if p.is_file())


def _header(path: Path) -> dict[str, Any] | None:
    """The header fields of one file, None when it is not DICOM; an unreadable DICOM header is an error."""
    if not is_dicom_file(path):
        return None
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise SourceError(f"{path}: DICOM header cannot be read ({' '.join(str(exc).split())})") from None
    values = {name: header.get(name) for name in HEADER_FIELDS}
    return {name: "" if value is None else str(value).strip() for name, value in values.items()}


def read_headers(root: Path, workers: int) -> tuple[pd.DataFrame, int]:
    """One row per DICOM file below ``root`` (``path`` relative, then :data:`HEADER_FIELDS`), and the number of
    files looked at."""
    files = _files(root)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        headers = list(pool.map(_header, files))
    rows = [{"path": path.relative_to(root).as_posix(), **header}
            for path, header in zip(files, headers, strict=True) if header is not None]  # fmt: skip
    return pd.DataFrame(rows, columns=["path", *HEADER_FIELDS]), len(files)


def _required(frame: pd.DataFrame, field: str, root: Path) -> None:
    blank = frame[field] == ""
    if blank.any():
        raise SourceError(
            f"{root / frame.loc[blank, 'path'].iloc[0]}: DICOM header has no {field} ({int(blank.sum())} file(s) "
            f"below {root} lack it); the dicom_folder reader needs it"
        )


def _ages(frame: pd.DataFrame, root: Path) -> pd.Series:
    text = frame["PatientAge"]
    odd = (text != "") & ~text.str.match(AGE)
    if odd.any():
        warnings.warn(
            f"{root}: {int(odd.sum())} PatientAge value(s) are not DICOM ages such as '063Y' and became NaN, "
            f"e.g. {text[odd].iloc[0]!r} in {frame.loc[odd, 'path'].iloc[0]}",
            stacklevel=3,
        )
    return ages_in_years(text.mask(odd | (text == "")), root)


def _label_rows(
    frame: pd.DataFrame, options: DicomFolderOptions, labels: list[str], root: Path
) -> tuple[dict[str, pd.Series], pd.Series]:
    """Raw labels per study label and the images that have a row of ``labels_table``."""
    assert options.labels_table is not None and options.labels is not None
    slashed = options.labels_table.replace("\\", "/")
    if slashed.startswith("/") or ".." in slashed.split("/") or options.labels_table[1:2] == ":":
        raise SourceError(f"labels_table: {options.labels_table!r} is absolute or leaves the dataset root {root}")
    source = root / options.labels_table
    table, first_line = read_table(source)
    for key, column in {"labels_key": options.labels_key,
                        **{f"labels.{lab}": col for lab, col in options.labels.items()}}.items():  # fmt: skip
        if column not in table.columns:
            raise SourceError(
                f"{source}: {key}: column {column!r} does not exist; expected one of {list(table.columns)}"
            )
    keys = table[options.labels_key].astype("string").str.strip()
    twice = keys.duplicated(keep=False) & keys.notna()
    if twice.any():
        rows = np.flatnonzero(twice.to_numpy())[:2] + first_line
        raise SourceError(
            f"{source}: rows {rows[0]} and {rows[1]}: image {keys.iloc[rows[0] - first_line]!r} "
            f"(labels_key: {options.labels_key!r}) is listed twice; expected each image once"
        )
    # A key names an image by its SOPInstanceUID, its path below root or its file name (when that is unique).
    names = frame["path"].str.rsplit("/", n=1).str[-1]
    lookup: dict[str, int] = {}
    for position, name in enumerate(names):
        lookup.setdefault(name, position if (names == name).sum() == 1 else -1)
    lookup.update({path: i for i, path in enumerate(frame["path"])})
    lookup.update({uid: i for i, uid in enumerate(frame["SOPInstanceUID"])})
    matched = keys.map(lambda k: lookup.get(k, -2) if isinstance(k, str) else -2).astype(int)
    ambiguous = matched == -1
    if ambiguous.any():
        row = int(np.flatnonzero(ambiguous.to_numpy())[0]) + first_line
        raise SourceError(
            f"{source}: row {row}: file name {keys.iloc[row - first_line]!r} is the name of several DICOM files "
            f"below {root}; key the row by SOPInstanceUID or by the path below the root"
        )
    unknown = matched < 0
    if unknown.any():
        warnings.warn(f"{source}: {int(unknown.sum())} row(s) name no DICOM file below {root} (by SOPInstanceUID, "
                      f"path or file name), e.g. {keys[unknown].iloc[0]!r}; not read", stacklevel=3)  # fmt: skip
    at = matched.to_numpy()
    have = np.zeros(len(frame), dtype=bool)
    have[at[at >= 0]] = True
    if not have.all():
        warnings.warn(f"{source}: {int((~have).sum())} of {len(frame)} DICOM file(s) have no row "
                      f"(labels_key: {options.labels_key!r}); their targets are NaN", stacklevel=3)  # fmt: skip
    stray = sorted(set(options.labels) - set(labels))
    if stray:
        warnings.warn(f"{source}: labels {stray} are not among the study's labels {labels}; not read", stacklevel=3)
    raw: dict[str, pd.Series] = {}
    for label in labels:
        values = np.full(len(frame), np.nan)
        label_column = options.labels.get(label)
        if label_column is None:
            warnings.warn(f"{source}: labels has no column for {label!r}; {label} is NaN", stacklevel=3)
        else:
            cells = raw_labels(table[label_column], label_column, options.values, source, first_line).to_numpy()
            values[at[at >= 0]] = cells[at >= 0]
        raw[label] = pd.Series(values, index=frame.index)
    return raw, pd.Series(have, index=frame.index)


@register("dicom_folder", options=DicomFolderOptions)
def read(root: Path, *, name: str, labels: list[str], options: DicomFolderOptions) -> pd.DataFrame:
    """Read every DICOM header below ``root`` into manifest rows; raw labels all NaN without ``labels_table``."""
    if not root.is_dir():
        raise SourceError(f"{root}: not a folder; expected a folder of DICOM files (datasets.{name}.root)")
    frame, looked_at = read_headers(root, options.workers)
    if frame.empty:
        raise SourceError(
            f"{root}: no DICOM file below it ({looked_at} file(s) looked at by content: a 128-byte preamble then "
            "'DICM'); expected a PACS export of DICOM files"
        )
    _required(frame, "SOPInstanceUID", root)
    _required(frame, "PatientID", root)
    twice = frame["SOPInstanceUID"].duplicated(keep=False)
    if twice.any():
        paths, uid = frame.loc[twice, "path"].head(2).tolist(), frame.loc[twice, "SOPInstanceUID"].iloc[0]
        raise SourceError(f"{root}: {paths[0]} and {paths[1]} have the same SOPInstanceUID {uid!r}; "
                          "expected each image once")  # fmt: skip
    if options.labels_table is None:
        raw = {label: pd.Series(np.nan, index=frame.index) for label in labels}
        labelled = pd.Series(False, index=frame.index)
    else:
        raw, labelled = _label_rows(frame, options, labels, root)
    studies = frame["StudyInstanceUID"].where(frame["StudyInstanceUID"] != "", frame["SOPInstanceUID"])
    return assemble(
        dataset=name,
        native_ids=frame["SOPInstanceUID"],
        paths=frame["path"],
        patients=frame["PatientID"],
        studies=studies,
        views=table_views(frame["ViewPosition"].mask(frame["ViewPosition"] == ""), root),
        sexes=normalize_sex(frame["PatientSex"].mask(frame["PatientSex"].str.upper() == "O", ""), root),  # O: other
        ages=_ages(frame, root),
        official_split=None,
        raw=raw,
        source=root,
        labelled=labelled,
    )
