"""NIH ChestX-ray14 (Wang et al., CVPR 2017; NIH Clinical Center, https://nihcc.app.box.com/v/ChestXray-NIHCC).

Three variants of ``Data_Entry`` are accepted: the original 2017 file (header ends with a comma, rows do not,
ages such as ``058Y``), the official v2020 file (``Patient Sex``, every line ends with a comma, integer ages) and
re-exports without trailing commas. Only the first seven columns are used; the header's bracketed names contain
commas, so columns are taken by position after checking their names. Images live flat in ``images/`` or in
``images_001/images/ ... images_012/images/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from cxrgen.sources.common import (
    SourceError,
    ages_in_years,
    assemble,
    at_line,
    check_relative_paths,
    check_unique_columns,
    csv_header,
    mark_not_recorded,
    normalize_sex,
    normalize_view,
    read_csv_table,
    read_text,
)
from cxrgen.sources.registry import ReaderOptions, register

METADATA_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv.gz")
EXPECTED_HEADER = ("Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", None, "View Position")
SEX_HEADERS = ("Patient Gender", "Patient Sex")
TOKENS = frozenset({
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis", "Hernia",
    "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax", "No Finding",
})  # fmt: skip
SPLIT_LISTS = {"train_val_list.txt": "train_val", "test_list.txt": "test"}


def find_metadata(root: Path, metadata: str | None) -> Path:
    names = (metadata,) if metadata else METADATA_NAMES
    for name in names:
        if (root / name).is_file():
            return root / name
    raise SourceError(f"{root}: missing NIH metadata (looked for {', '.join(names)})")


def read_header(source: Path) -> list[str]:
    header = csv_header(source)
    if not "".join(header).strip():
        raise SourceError(f"{source}: empty file, expected the Data_Entry header")
    check_unique_columns(header, source)
    return header


def check_header(header: list[str], source: Path) -> None:
    for position, expected in enumerate(EXPECTED_HEADER):
        found = header[position].strip() if position < len(header) else "<missing>"
        allowed = SEX_HEADERS if expected is None else (expected,)
        if found not in allowed:
            raise SourceError(f"{source}: column {position + 1} is {found!r}, expected {' or '.join(allowed)!r}")


def image_folders(root: Path) -> dict[str, str]:
    """Map each PNG name to its folder relative to ``root`` (flat ``images/`` or ``images_0XX/images/``)."""
    found: dict[str, str] = {}
    candidates = [root / "images", *sorted(p / "images" for p in root.glob("images_[0-9][0-9][0-9]"))]
    for folder in candidates:
        if folder.is_dir():
            relative = folder.relative_to(root).as_posix()
            for entry in os.scandir(folder):
                found.setdefault(entry.name, relative)
    return found


def read_split_lists(root: Path) -> dict[str, str]:
    """Image name -> ``train_val`` / ``test`` from the official lists, when they are present."""
    split: dict[str, str] = {}
    for name, value in SPLIT_LISTS.items():
        path = root / name
        if path.is_file():
            for line in read_text(path).splitlines():
                if line.strip():
                    split[line.strip()] = value
    return split


class NihOptions(ReaderOptions):
    metadata: str | None = Field(None, description="the Data_Entry file's name; found when omitted")


#: Study label -> the ``Finding Labels`` token, where NIH spells it differently.
NIH_NAMES = {"Pleural Effusion": "Effusion", "Pleural Thickening": "Pleural_Thickening"}


@register("nih", options=NihOptions, labels=NIH_NAMES)
def read(root: Path, *, name: str, labels: list[str], options: NihOptions) -> pd.DataFrame:
    """Read ``Data_Entry_2017*.csv`` into manifest rows with raw labels in {1, 0} (NIH has no uncertain labels)."""
    source = find_metadata(root, options.metadata)
    header = read_header(source)
    check_header(header, source)
    try:
        frame = read_csv_table(
            source, "Data_Entry table", header=None, skiprows=1, usecols=range(7),
            names=["image", "findings", "followup", "patient", "age", "sex", "view"],
        )  # fmt: skip
    except ValueError as exc:
        if isinstance(exc, SourceError):
            raise
        raise SourceError(f"{source}: not a readable Data_Entry table ({exc})") from exc
    if frame.empty:
        raise SourceError(f"{source}: no rows")
    frame["image"] = frame["image"].fillna("").str.strip()
    check_relative_paths(frame["image"], source)

    tokens = frame["findings"].fillna("").str.split("|")
    unknown = tokens.map(lambda ts: next((t for t in ts if t not in TOKENS), None))
    if unknown.notna().any():
        row = int(np.flatnonzero(unknown.notna().to_numpy())[0])
        raise SourceError(
            f"{source}: {at_line(source, frame, row)}, column 'Finding Labels': unknown label {unknown.iloc[row]!r}"
        )
    raw, not_recorded = {}, []
    for label in labels:
        token = NIH_NAMES.get(label, label)
        if token not in TOKENS:  # NIH ChestX-ray14 has no such label: NaN, never "absent"
            not_recorded.append(label)
            raw[label] = pd.Series(np.nan, index=frame.index)
            continue
        raw[label] = tokens.map(lambda ts, token=token: 1.0 if token in ts else 0.0)

    folders = image_folders(root)
    default = "images"
    paths = frame["image"].map(lambda n: f"{folders.get(n, default)}/{n}")
    split_lists = read_split_lists(root)
    patients = pd.to_numeric(frame["patient"], errors="coerce")
    if patients.isna().any():
        row = int(np.flatnonzero(patients.isna().to_numpy())[0])
        raise SourceError(
            f"{source}: {at_line(source, frame, row)}"
            f", column 'Patient ID': {frame['patient'].iloc[row]!r} is not an id"
        )
    result = assemble(
        dataset=name,
        native_ids=frame["image"],
        paths=paths,
        patients=patients.astype(int).astype(str),
        studies=frame["image"].str.replace(".png", "", regex=False),
        views=normalize_view(frame["view"]),
        sexes=normalize_sex(frame["sex"], source),
        ages=ages_in_years(frame["age"], source),
        official_split=frame["image"].map(split_lists).fillna(""),
        raw=raw,
        source=source,
    )
    return mark_not_recorded(result, not_recorded, source, "NIH ChestX-ray14")
