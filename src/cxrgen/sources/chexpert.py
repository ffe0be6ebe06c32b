"""CheXpert (Irvin et al., AAAI 2019; Stanford ML Group), as shipped in ``CheXpert-v1.0[-small]/``.

``train.csv`` / ``valid.csv`` (or any CSV of that layout) with columns ``Path, Sex, Age, Frontal/Lateral, AP/PA``
followed by the 14 observations in {1.0, 0.0, -1.0, blank}. ``Path`` carries the folder prefix
(``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``); the patient id comes from the path.

Views: ``frontal`` is the ``Frontal/Lateral`` column (the file name agrees with it). A lateral image's view is
``LL`` when ``AP/PA`` says so, else ``LATERAL``. A frontal image's view is its ``AP/PA`` (PA or AP); the 17
frontal rows of the real ``train.csv`` whose ``AP/PA`` is ``LL`` or ``RL`` are decubitus films, a frontal
projection of a patient lying on one side, so their view is ``OTHER`` and ``frontal`` stays true.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from cxrgen.sources.common import (
    DEVICE_COLUMN,
    SourceError,
    ages_in_years,
    assemble,
    at_line,
    check_raw_labels,
    check_relative_paths,
    check_unique_columns,
    csv_header,
    device_presence,
    mark_not_recorded,
    normalize_sex,
    normalize_view,
    read_csv_table,
    require_columns,
)
from cxrgen.sources.labels import CHEXPERT_OBSERVATIONS
from cxrgen.sources.registry import ReaderOptions, register

FOLDERS = ("CheXpert-v1.0-small", "CheXpert-v1.0")
META_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
OFFICIAL_SPLIT = {"train.csv": "train", "valid.csv": "val"}


def find_csv(root: Path, csv: str) -> Path:
    """The CSV under ``root`` itself or under one of the two release folders inside it."""
    for folder in (root, *(root / f for f in FOLDERS)):
        if (folder / csv).is_file():
            return folder / csv
    raise SourceError(f"{root}: missing {csv} (looked in {root} and in {', '.join(FOLDERS)}/ inside it)")


class ChexpertOptions(ReaderOptions):
    csv: str = Field("train.csv", description="which CSV: train.csv, valid.csv, or a file of that layout")


@register("chexpert", options=ChexpertOptions)
def read(root: Path, *, name: str, labels: list[str], options: ChexpertOptions) -> pd.DataFrame:
    """Read one CheXpert CSV into manifest rows; paths become relative to ``root``."""
    source = find_csv(root, options.csv)
    check_unique_columns(csv_header(source), source)
    frame = read_csv_table(source, "CheXpert CSV")
    label_columns = [label for label in labels if label in CHEXPERT_OBSERVATIONS]  # CheXpert's spelling is the study's
    require_columns(frame, [*META_COLUMNS, *label_columns], source)
    if frame.empty:
        raise SourceError(f"{source}: no rows")

    native = frame["Path"].str.strip().str.replace("\\", "/", regex=False)
    native = native.str.replace(rf"^({'|'.join(FOLDERS)})/", "", regex=True)
    check_relative_paths(native, source)
    folder = source.parent.relative_to(root).as_posix()
    paths = native if folder == "." else folder + "/" + native

    ids = native.str.extract(r"patient(?P<patient>\d+)/study(?P<study>\d+)/")
    missing = ids["patient"].isna()
    if missing.any():
        row = int(missing.to_numpy().nonzero()[0][0])
        raise SourceError(
            f"{source}: {at_line(source, frame, row)}"
            f": path {frame['Path'].iloc[row]!r} has no patientNNNNN/studyN/"
        )

    lateral = frame["Frontal/Lateral"].str.strip().str.lower() == "lateral"
    views = normalize_view(frame["AP/PA"])
    views = views.where(~(views == "LL"), "OTHER")  # frontal decubitus films (see the module docstring)
    views = views.where(~lateral, frame["AP/PA"].fillna("").str.strip().str.upper().map(
        lambda v: "LL" if v == "LL" else "LATERAL"))
    check_raw_labels(frame, label_columns, source)
    result = assemble(
        dataset=name,
        native_ids=native,
        paths=paths,
        patients=ids["patient"],
        studies=ids["patient"] + "/" + ids["study"],
        views=views,
        frontal=~lateral,
        sexes=normalize_sex(frame["Sex"], source),
        ages=ages_in_years(frame["Age"], source),
        official_split=pd.Series(OFFICIAL_SPLIT.get(options.csv, ""), index=frame.index),
        raw={
            label: frame[label] if label in label_columns else pd.Series(np.nan, index=frame.index) for label in labels
        },
        source=source,
        device=device_presence(frame[DEVICE_COLUMN]) if DEVICE_COLUMN in frame else None,
    )
    return mark_not_recorded(result, [label for label in labels if label not in label_columns], source, "CheXpert")
