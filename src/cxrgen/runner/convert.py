"""``cxrgen predictions convert``: a published model's own table of outputs -> a valid predictions file.

A model trained elsewhere usually ships its outputs as a CSV with its own column names, e.g. reproduce-chexnet's
``preds.csv`` (``Image Index, prob_Atelectasis, ..., prob_Hernia``: no patient id, no ground truth). This module
renames and joins it into the schema of DESIGN.md section 8 (``image_id, patient_id, y_<label>, p_<label>``):

* probabilities: every ``--prob-prefix`` column (default ``prob_``; ``prob_Effusion`` -> ``Pleural Effusion``
  through the label vocabulary, :func:`cxrgen.sources.labels.canonical_label`), or the columns ``--label-map``
  names (``COLUMN=Label``);
* patient ids: a column of the input (``--patient-id``), or a metadata table joined on the image id
  (``--patients TABLE --patients-image-id COL --patients-id COL``), never by row order;
* ground truth, optional (else ``y`` is NaN): a findings column listing positive findings (``--findings
  "Finding Labels"``, ``|``-separated as NIH writes it; every finding spelt through the vocabulary), from the
  input or the metadata table, or 0/1 columns ``--truth-prefix``\\ ``<Label>`` of the input.

The result is validated exactly as ``cxrgen evaluate`` validates a file before it is written (atomically).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxrgen.errors import CxrgenError
from cxrgen.metrics.evaluate import validate_predictions
from cxrgen.sources.common import SourceError
from cxrgen.sources.labels import canonical_label
from cxrgen.sources.table import TableValues, raw_labels, read_table
from cxrgen.utils.fileio import write_parquet

log = logging.getLogger(__name__)

__all__ = ["Conversion", "ConvertError", "convert_predictions", "parse_label_map"]


class ConvertError(CxrgenError, ValueError):
    """The input cannot become a predictions file; the message names the file, the column and the option."""


@dataclass(frozen=True)
class Conversion:
    """How to read a published model's table (the options of ``cxrgen predictions convert``)."""

    image_id: str
    patient_id: str | None = None
    label_map: Mapping[str, str] = field(default_factory=dict)
    prob_prefix: str = "prob_"
    patients: Path | None = None
    patients_image_id: str | None = None
    patients_id: str | None = None
    findings: str | None = None
    findings_sep: str = "|"
    truth_prefix: str | None = None


def parse_label_map(items: Sequence[str]) -> dict[str, str]:
    """``["prob_Effusion=Pleural Effusion", ...]`` -> ``{column: label}``; a label may also be given as
    ``a=A,b=B``. The label goes through the vocabulary."""
    out: dict[str, str] = {}
    for item in items:
        for pair in item.split(","):
            column, sep, label = pair.partition("=")
            if not sep or not column.strip() or not label.strip():
                raise ConvertError(f"--label-map: {pair!r} is not COLUMN=Label (e.g. 'prob_Effusion=Pleural Effusion')")
            out[column.strip()] = canonical_label(label)
    return out


def _table(path: Path, what: str) -> pd.DataFrame:
    try:
        frame, _ = read_table(path)
    except SourceError as exc:
        raise ConvertError(f"{what}: {exc}") from None
    return frame


def _column(frame: pd.DataFrame, column: str, source: Path, option: str) -> pd.Series:
    if column not in frame.columns:
        raise ConvertError(f"{source}: {option}: column {column!r} does not exist; columns are {list(frame.columns)}")
    return frame[column]


def _probability_columns(frame: pd.DataFrame, conversion: Conversion, source: Path) -> dict[str, str]:
    """``{label: column}`` of the probabilities, labels in the study's spelling, each label once."""
    if conversion.label_map:
        pairs = [(column, label) for column, label in conversion.label_map.items()]
        for column, _ in pairs:
            _column(frame, column, source, "--label-map")
    else:
        prefix = conversion.prob_prefix
        pairs = [(c, canonical_label(c[len(prefix) :])) for c in frame.columns if c.startswith(prefix) and c != prefix]
        if not pairs:
            raise ConvertError(
                f"{source}: no column starts with {prefix!r} (--prob-prefix); name the probability columns with "
                f"--label-map COLUMN=Label; columns are {list(frame.columns)}"
            )
    out: dict[str, str] = {}
    for column, label in pairs:
        if label in out:
            raise ConvertError(f"{source}: columns {out[label]!r} and {column!r} are both the label {label!r}")
        out[label] = column
    return out


def _patients(frame: pd.DataFrame, conversion: Conversion, source: Path) -> tuple[pd.Series, pd.DataFrame | None]:
    """Each row's patient id, and the metadata rows aligned with the input's rows (None without a table)."""
    if conversion.patients is None:
        if conversion.patient_id is None:
            raise ConvertError(
                f"{source}: no patient id: give --patient-id COLUMN, or --patients TABLE --patients-id COLUMN "
                "(a metadata table joined on the image id)"
            )
        return _column(frame, conversion.patient_id, source, "--patient-id"), None
    if conversion.patient_id is not None:
        raise ConvertError("--patient-id and --patients both give the patient id; use one")
    table_path = conversion.patients
    meta = _table(table_path, "--patients")
    key = conversion.patients_image_id or conversion.image_id
    keys = _column(meta, key, table_path, "--patients-image-id").astype(str).str.strip()
    if conversion.patients_id is None:
        raise ConvertError("--patients needs --patients-id COLUMN (the table's patient id column)")
    _column(meta, conversion.patients_id, table_path, "--patients-id")
    duplicated = keys.duplicated()
    if duplicated.any():
        raise ConvertError(f"{table_path}: column {key!r} (--patients-image-id): image {keys[duplicated].iloc[0]!r} "
                           f"is listed twice; expected each image once")  # fmt: skip
    meta = meta.set_axis(pd.Index(keys.to_numpy()), axis=0)
    ids = frame[conversion.image_id].astype(str).str.strip()
    absent = ~ids.isin(meta.index)
    if absent.any():
        raise ConvertError(
            f"{source}: {int(absent.sum())} of {len(ids)} image ids are not in {table_path} column {key!r}, "
            f"e.g. {ids[absent].head(3).tolist()}; the patient id of every image is needed"
        )
    aligned = meta.loc[ids.to_numpy()].reset_index(drop=True)
    return aligned[conversion.patients_id], aligned


def _findings_truth(cells: pd.Series, labels: Sequence[str], sep: str) -> dict[str, np.ndarray]:
    """``y`` per label from a findings list (``Cardiomegaly|Effusion``; ``No Finding``): 1 when listed, else 0;
    a blank cell is NaN (not read)."""
    blank = cells.isna() | (cells.astype(str).str.strip() == "")
    listed = [
        {canonical_label(word) for word in str(cell).split(sep) if word.strip()} if not missing else set()
        for cell, missing in zip(cells.tolist(), blank.tolist(), strict=True)
    ]
    return {
        label: np.where(blank.to_numpy(), np.nan, [float(label in words) for words in listed]) for label in labels
    }


def convert_predictions(source: Path, out: Path, conversion: Conversion) -> tuple[pd.DataFrame, list[str]]:
    """Convert ``source`` (CSV/TSV, optionally gzipped, or parquet) into the predictions file ``out``.

    Returns:
        The validated predictions frame (as :func:`cxrgen.metrics.evaluate.read_predictions` returns it) and its
        labels, in the study's spelling.

    Raises:
        ConvertError: A named column, the patient table or an image's patient is missing; two columns give one
            label; or the result breaks the predictions schema (the message names ``out`` and the column).
    """
    if not out.name.lower().endswith(".parquet"):
        raise ConvertError(f"--out {out}: the predictions file must end in .parquet")
    frame = _table(source, "IN")
    if frame.empty:
        raise ConvertError(f"{source}: no rows; expected a row per image")
    ids = _column(frame, conversion.image_id, source, "--image-id")
    columns = _probability_columns(frame, conversion, source)
    patients, meta = _patients(frame, conversion, source)
    result = pd.DataFrame({"image_id": ids.astype(str).str.strip().to_numpy(),
                           "patient_id": patients.astype(str).str.strip().to_numpy()})  # fmt: skip
    truth: dict[str, np.ndarray] = {}
    if conversion.findings is not None:
        holder = frame if conversion.findings in frame.columns or meta is None else meta
        where = source if holder is frame else conversion.patients
        assert where is not None
        cells = _column(holder, conversion.findings, where, "--findings").reset_index(drop=True)
        truth = _findings_truth(cells, list(columns), conversion.findings_sep)
    elif conversion.truth_prefix is not None:
        found = {canonical_label(c[len(conversion.truth_prefix) :]): c for c in frame.columns
                 if c.startswith(conversion.truth_prefix) and c != conversion.truth_prefix}  # fmt: skip
        for label in columns:
            if label not in found:
                raise ConvertError(f"{source}: --truth-prefix {conversion.truth_prefix!r}: no column for {label!r}; "
                                   f"columns are {list(frame.columns)}")  # fmt: skip
            cells = frame[found[label]]
            truth[label] = raw_labels(cells, found[label], TableValues(), source, 2).to_numpy(dtype=float)
    else:
        log.warning("%s: no ground truth given (--findings or --truth-prefix): every y_<label> is NaN", source)
    for label, column in columns.items():
        result[f"y_{label}"] = truth.get(label, np.full(len(frame), np.nan))
        result[f"p_{label}"] = frame[column].to_numpy()
    checked, labels = validate_predictions(result, out)
    write_parquet(checked, out)
    return checked, labels
