"""MIMIC label-file protocols: targets of the same MIMIC images under another of MIMIC's label files.

MIMIC-CXR-JPG ships two labelers' files (CheXpert, NegBio) and, in 2.1.0, radiologists' labels of the test
split keyed by study; which one a study trains and tests on is a setting, so a finding's external AUC can move
with it alone. The other file is read by the MIMIC reader itself (:func:`cxrgen.data.manifest.read_dataset` with the
dataset's ``labels`` swapped), so its joins, checks, the study's uncertainty and blank policies, unlabelled
studies (NaN) and the views filter are exactly those the manifest was built with. The one module of
:mod:`cxrgen.shift` that reads files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from cxrgen.data.manifest import read_dataset
from cxrgen.shift.protocols import LabelFile
from cxrgen.sources.mimic import PREFIX, RADIOLOGIST_FILE
from cxrgen.study.config import StudyConfig


def label_file_path(root: Path, label_file: LabelFile) -> Path:
    """Where the MIMIC reader looks for ``label_file`` under a dataset root."""
    return root / (RADIOLOGIST_FILE if label_file == "radiologist" else f"{PREFIX}-{label_file}.csv.gz")


class LabelFiles:
    """Per (dataset, label file) the study's targets, read once; what could not be read is in :attr:`notes`."""

    def __init__(self, config: StudyConfig) -> None:
        self.config = config
        self.notes: list[str] = []
        self._read: dict[tuple[str, LabelFile], pd.DataFrame | None] = {}
        #: Every (dataset, label file) asked for, in order, and the note of those that could not be read: a
        #: caller sharing one instance over several files learns which notes its own files raised.
        self.asked: list[tuple[str, LabelFile]] = []
        self.note_of: dict[tuple[str, LabelFile], str] = {}

    def targets(self, datasets: Iterable[str], label_file: LabelFile, protocol: str) -> pd.DataFrame | None:
        """``image_id`` and one target column per study label (in {0, 1, NaN}) for every image of ``datasets``.

        None when a dataset is not read by the MIMIC reader (the protocol does not apply: no row, never a
        silent zero) or its label file is missing (a note names the file).
        """
        names = list(datasets)
        specs = [self.config.datasets.get(name) for name in names]
        if not names or any(spec is None or spec.reader != "mimic" for spec in specs):
            return None
        frames = [self._one(name, label_file, protocol) for name in names]
        if any(frame is None for frame in frames):
            return None
        return pd.concat(frames, ignore_index=True)

    def _one(self, name: str, label_file: LabelFile, protocol: str) -> pd.DataFrame | None:
        key = (name, label_file)
        self.asked.append(key)
        if key not in self._read:
            spec = self.config.datasets[name]
            path = label_file_path(spec.root, label_file)
            if not path.is_file():
                self.note_of[key] = (
                    f"{protocol}: {path} (datasets.{name}) is missing; the {name} test set is not scored "
                    "under that label file"
                )
                self.notes.append(self.note_of[key])
                self._read[key] = None
            else:
                swapped = spec.model_copy(update={"labels": label_file})
                config = self.config.model_copy(update={"datasets": {**self.config.datasets, name: swapped}})
                frame, _ = read_dataset(config, name)  # its reading notes are already in the cohort table
                self._read[key] = frame[["image_id", *self.config.labels]]
        return self._read[key]
