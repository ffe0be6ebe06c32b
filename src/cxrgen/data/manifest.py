"""The study manifest: every dataset of the study read by its reader, label policies and view filter applied."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from cxrgen.sources import get_reader
from cxrgen.sources.common import (
    BASE_COLUMNS,
    EXTRA_COLUMNS,
    NOT_RECORDED,
    READING_NOTES,
    VIEWS,
    ReadingNote,
    SourceError,
)
from cxrgen.sources.labels import apply_policies, raw_column
from cxrgen.study.config import StudyConfig

log = logging.getLogger(__name__)


def read_dataset(config: StudyConfig, name: str) -> tuple[pd.DataFrame, list[ReadingNote]]:
    """One dataset's manifest rows, with targets after the study's policies and its views filter, and the
    reader's notes for the cohort table."""
    spec = config.datasets[name]
    reader = get_reader(spec.reader)
    if not spec.root.is_dir():
        raise SourceError(f"datasets.{name}.root: folder {spec.root} does not exist")
    frame = reader(spec.root, name=name, labels=list(config.labels), options=spec.options())
    notes: list[ReadingNote] = list(frame.attrs.pop(READING_NOTES, []))
    never = set(frame.attrs.pop(NOT_RECORDED, []))
    not_recorded = [label for label in config.labels if label in never]
    frame, missing = leave_out_missing(frame, spec.root, name, spec.missing_images)
    if missing is not None:
        notes.append(missing)
    frame = apply_policies(frame, list(config.labels), config.uncertainty, config.blank)
    frame = mask_unlabelled(frame, list(config.labels), name)
    if not_recorded:
        # Never recorded is unknown, not absent: NaN whatever ``blank`` says, so the loss and metrics mask it.
        frame[not_recorded] = float("nan")
    if config.views != "all":
        unknown = sorted(set(config.views) - set(VIEWS))
        if unknown:
            raise SourceError(f"views: {unknown} are not view names; use {', '.join(VIEWS)}")
        keep = frame["view"].isin(list(config.views))
        log.info("dataset %s: views filter %s keeps %d of %d images", name, config.views, keep.sum(), len(frame))
        frame = frame.loc[keep].reset_index(drop=True)
    if frame.empty:
        raise SourceError(f"dataset {name!r}: no images left after the views filter {config.views}")
    for label in not_recorded:
        notes.append(ReadingNote("note", len(frame), f"{label}: not recorded (NaN, masked out of loss and metrics)"))
    return frame, notes


#: How many missing paths a ``left out`` note names.
SHOWN_MISSING = 3


def on_disk(root: Path, paths: pd.Series) -> np.ndarray:
    """Whether each relative path names an entry under ``root``: one directory listing per folder, not a stat per
    image (NIH's 112,120 files are one folder)."""
    listed: dict[str, set[str]] = {}
    found = np.zeros(len(paths), dtype=bool)
    for position, path in enumerate(paths.astype(str)):
        folder, _, file = path.replace("\\", "/").rpartition("/")
        names = listed.get(folder)
        if names is None:
            try:
                with os.scandir(root / folder) as entries:
                    names = {entry.name for entry in entries}
            except OSError:
                names = set()
            listed[folder] = names
        found[position] = file in names
    return found


def leave_out_missing(
    frame: pd.DataFrame, root: Path, name: str, policy: str
) -> tuple[pd.DataFrame, ReadingNote | None]:
    """Drop the rows whose image file is not on disk (a partial copy) and say so in a ``left out`` note.

    Such rows never reach the manifest, so no plan, split, verify or cache counts them, and verify never calls
    them "failed to decode". ``policy`` ``error`` (``datasets.<name>.missing_images``) makes any of them fatal.
    """
    present = on_disk(root, frame["path"])
    if present.all():
        return frame, None
    missing = frame.loc[~present, "path"].astype(str)
    shown = ", ".join(missing.head(SHOWN_MISSING)) + (", ..." if len(missing) > SHOWN_MISSING else "")
    if policy == "error" or not present.any():
        why = "missing_images: error" if policy == "error" else "none of its images is there"
        raise SourceError(
            f"datasets.{name}: {len(missing)} of {len(frame)} image(s) its metadata lists are not on disk under "
            f"{root} ({why}), e.g. {shown}"
        )
    note = ReadingNote("left out", len(missing), f"listed but not on disk under {root}: {shown}")
    warnings.warn(f"dataset {name}: {note.kind}: {note.rows} image(s) {note.text}", stacklevel=3)
    return frame.loc[present].reset_index(drop=True), note


def mask_unlabelled(frame: pd.DataFrame, labels: list[str], name: str) -> pd.DataFrame:
    """Targets of images without a label row become NaN: unknown, never negative under ``blank: zeros``."""
    if "labelled" not in frame:
        return frame
    unlabelled = ~frame["labelled"].to_numpy(dtype=bool)
    if unlabelled.any():
        log.info("dataset %s: %d image(s) have no label row; their targets are NaN", name, int(unlabelled.sum()))
        frame = frame.copy()
        frame.loc[unlabelled, labels] = float("nan")
    return frame


def build_manifest(config: StudyConfig) -> pd.DataFrame:
    """The union of all datasets; checks one label schema and unique, namespaced ids."""
    return build_manifest_with_notes(config)[0]


def build_manifest_with_notes(config: StudyConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`build_manifest` and the readers' notes as a :func:`reading_notes` table (rows left out while
    reading, properties such as "no patient ids"), which the cohort table shows."""
    read = {name: read_dataset(config, name) for name in config.datasets}
    frames = [frame for frame, _ in read.values()]
    columns = [*BASE_COLUMNS, *(raw_column(label) for label in config.labels), *EXTRA_COLUMNS, *config.labels]
    for name, frame in zip(config.datasets, frames, strict=True):
        if list(frame.columns) != columns:
            raise SourceError(f"dataset {name!r}: reader returned columns {list(frame.columns)}, expected {columns}")
    manifest = pd.concat(frames, ignore_index=True)
    duplicated = manifest["image_id"].duplicated()
    if duplicated.any():
        raise SourceError(f"duplicate image ids across datasets, e.g. {manifest.loc[duplicated, 'image_id'].iloc[0]}")
    return manifest, reading_notes([(name, note) for name, (_, notes) in read.items() for note in notes])


NOTE_COLUMNS = ("dataset", "kind", "rows", "note")


def reading_notes(notes: list[tuple[str, ReadingNote]]) -> pd.DataFrame:
    """``dataset, kind, rows, note``: one row per reader note (``prepare`` writes it as ``reading_notes.csv``
    beside the manifest; the report's cohort table reads it back)."""
    rows = [(name, note.kind, note.rows, note.text) for name, note in notes]
    return pd.DataFrame(rows, columns=list(NOTE_COLUMNS)).astype({"rows": int})
