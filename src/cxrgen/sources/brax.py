"""BRAX 1.1.0 (Reis et al., Scientific Data 2022; https://physionet.org/content/brax/1.1.0/).

``master_spreadsheet_update.csv``: a row per image with ``PatientID``, ``PatientSex`` (M, F, O),
``PatientAge`` in 5-year bins (``85 or more`` for the oldest), ``ViewPosition``, ``AccessionNumber`` (the study)
and the 14 CheXpert-style labels (1, 0, -1, blank) under CheXpert's names, then the image paths ``DicomPath``
and ``PngPath`` (option ``images: dicom | png``, default png). Column names are those of the dataset's PhysioNet
description and the paper's data records section, and agree with public BRAX loaders on GitHub (datasets
modules that read ``PngPath``, ``PatientID``, ``PatientAge`` and ``PatientSex`` from this file, and scripts that
list the ``ViewPosition`` values found in it: ``PA``, ``AP``, ``AP LLD``, ``L``, ``RL``, ``LT-DECUB``, ``RLO``
and blank). ``L`` and ``RL`` are laterals; decubitus and oblique films (``AP LLD``, ``LT-DECUB``, ``RLO``) are
OTHER; a blank is UNKNOWN. A missing column is an error listing the columns found. Uncertainty and blank
policies apply as for CheXpert; ``Support Devices`` fills the manifest's ``device`` column. A binned age becomes
the bin's midpoint in ``age``, and the bin itself is kept in the manifest's ``age_bin`` column.
"""

from __future__ import annotations

import re
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
    check_raw_labels,
    check_relative_paths,
    device_presence,
    mark_not_recorded,
    normalize_sex,
    read_csv_table,
    require_columns,
)
from cxrgen.sources.labels import CHEXPERT_OBSERVATIONS
from cxrgen.sources.registry import ReaderOptions, register

CSV_NAME = "master_spreadsheet_update.csv"
META_COLUMNS = ("PatientID", "PatientSex", "PatientAge", "ViewPosition", "AccessionNumber")
IMAGE_COLUMNS = {"png": "PngPath", "dicom": "DicomPath"}
VIEWS = {"AP": "AP", "PA": "PA", "L": "LATERAL", "LL": "LL", "RL": "LATERAL", "LATERAL": "LATERAL"}
_BIN = re.compile(r"^\s*(\d+)\s*(?:-|to)\s*(\d+)\s*$")
_OPEN_BIN = re.compile(r"^\s*(\d+)\s*(?:or more|\+)\s*$", re.IGNORECASE)


def brax_age_midpoints(values: pd.Series, source: Path) -> pd.Series:
    """``45-49`` -> 47.0, ``85 or more`` -> 87.0 (the bin's width of 5 assumed), a plain number kept, blank NaN."""
    out = []
    for position, value in enumerate(values.to_numpy()):
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
        if not text:
            out.append(np.nan)
        elif match := _BIN.match(text):
            out.append((int(match.group(1)) + int(match.group(2))) / 2.0)
        elif match := _OPEN_BIN.match(text):
            out.append(int(match.group(1)) + 2.0)
        else:
            try:
                out.append(float(text))
            except ValueError:
                raise SourceError(
                    f"{source}: {at_line(source, values, position)}"
                    f", column 'PatientAge': {text!r} is not an age bin such as "
                    "'45-49' or '85 or more'"
                ) from None
    return pd.Series(out, index=values.index, dtype=float)


class BraxOptions(ReaderOptions):
    images: Literal["png", "dicom"] = Field("png", description="which image path column: PngPath or DicomPath")


@register("brax", options=BraxOptions)
def read(root: Path, *, name: str, labels: list[str], options: BraxOptions) -> pd.DataFrame:
    """Read ``master_spreadsheet_update.csv`` into manifest rows with raw labels in {1, 0, -1, NaN}."""
    images = options.images
    source = root / CSV_NAME
    if not source.is_file():
        raise SourceError(f"{root}: missing {CSV_NAME}")
    frame = read_csv_table(source, "BRAX spreadsheet")
    label_columns = [label for label in labels if label in CHEXPERT_OBSERVATIONS]  # CheXpert's names
    path_column = IMAGE_COLUMNS[images]
    require_columns(frame, [*META_COLUMNS, path_column, *label_columns], source)
    if frame.empty:
        raise SourceError(f"{source}: no rows")
    paths = frame[path_column].str.strip().str.replace("\\", "/", regex=False)
    check_relative_paths(paths, source)
    check_raw_labels(frame, label_columns, source)
    view_text = frame["ViewPosition"].fillna("").str.strip().str.upper()
    views = view_text.map(lambda v: VIEWS.get(v, "OTHER") if v else "UNKNOWN")
    result = assemble(
        dataset=name,
        native_ids=paths,
        paths=paths,
        patients=frame["PatientID"].str.strip(),
        studies=frame["AccessionNumber"].str.strip(),
        views=views,
        sexes=normalize_sex(frame["PatientSex"]),
        ages=brax_age_midpoints(frame["PatientAge"], source),
        official_split=None,
        raw={
            label: frame[label] if label in label_columns else pd.Series(np.nan, index=frame.index) for label in labels
        },
        source=source,
        device=device_presence(frame[DEVICE_COLUMN]) if DEVICE_COLUMN in frame else None,
        age_bins=frame["PatientAge"],
    )
    return mark_not_recorded(result, [label for label in labels if label not in label_columns], source, "BRAX")
