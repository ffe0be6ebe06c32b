"""Evaluate predictions files: per-label AUC with clustered-bootstrap and DeLong intervals, model comparisons.

A predictions file (DESIGN.md section 8) is a table with one row per image::

    image_id, patient_id, y_<label>, p_<label>   (one y_/p_ pair per label)

stored as parquet, CSV or TSV (``.csv.gz`` and ``.tsv.gz`` too), all validated alike; a published model's own CSV
becomes one with ``cxrgen predictions convert`` (:mod:`cxrgen.runner.convert`).

``y`` in {0, 1} or NaN (NaN = not labelled, excluded from that label), ``p`` a probability in [0, 1].
Any model, trained here or elsewhere, can be evaluated once its outputs are written in this schema.

Outputs of :func:`evaluate_files`:

* ``auc.csv``: one row per (file, label): AUC, percentile CI of the patient-clustered bootstrap
  (``ci_low``/``ci_high``), DeLong logit CI (``delong_low``/``delong_high``), counts.
* ``comparisons.csv`` (2+ files): one row per (pair of files, shared label), the same patient-clustered tests as
  the report (:mod:`cxrgen.metrics.pairing`): files sharing images are paired on the intersection (drops counted in
  ``n_dropped_a``/``n_dropped_b``, refused below 95 % overlap); files sharing no image are independent test sets
  (clustered unpaired z test). Image-level DeLong stays beside it as ``delong_se``/``delong_p``. ``p_holm`` is
  Holm-adjusted over the labels of each pair.

Both tables carry ``unfinished``: True for a file made by ``cxrgen predict --allow-unfinished`` (a run without
``done.json``), in ``comparisons.csv`` when either file is.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrgen import metrics
from cxrgen.errors import CxrgenError
from cxrgen.metrics.pairing import (
    CLUSTERED_COLUMNS,
    image_keys,
    pair_on_images,
    paired_clustered,
    unpaired_clustered,
    unpaired_reason,
)
from cxrgen.utils.fileio import parquet_metadata, write_csv

log = logging.getLogger(__name__)

__all__ = [
    "AUC_COLUMNS",
    "COMPARISON_COLUMNS",
    "PredictionsError",
    "auc_table",
    "compare_predictions",
    "evaluate_files",
    "predictions_stem",
    "read_predictions",
    "validate_predictions",
]

#: Columns of the tidy AUC table, after any caller-supplied columns (``test_set``, ``configuration``...).
AUC_COLUMNS: tuple[str, ...] = (
    "label",
    "auc",
    "ci_low",
    "ci_high",
    "n_pos",
    "n_neg",
    "n_patients",
    "boot_se",
    "n_boot",
    "n_boot_degenerate",
    "delong_se",
    "delong_low",
    "delong_high",
    "ci",
)

#: Columns of ``comparisons.csv``: the two files (their source names), the label, then the clustered test's
#: columns (:data:`cxrgen.metrics.pairing.CLUSTERED_COLUMNS`) with ``p_holm`` after ``p``.
COMPARISON_COLUMNS: tuple[str, ...] = (
    "a",
    "b",
    "label",
    *CLUSTERED_COLUMNS[: CLUSTERED_COLUMNS.index("p") + 1],
    "p_holm",
    *CLUSTERED_COLUMNS[CLUSTERED_COLUMNS.index("p") + 1 :],
)


class PredictionsError(CxrgenError, ValueError):
    """A predictions file breaks the schema; the message names the file and the column."""


def _label_columns(columns: Sequence[str], path: Path) -> list[str]:
    ys = [c[2:] for c in columns if c.startswith("y_")]
    ps = [c[2:] for c in columns if c.startswith("p_")]
    for lab in ys:
        if lab not in ps:
            raise PredictionsError(f"{path}: column 'y_{lab}' has no matching 'p_{lab}'")
    for lab in ps:
        if lab not in ys:
            raise PredictionsError(f"{path}: column 'p_{lab}' has no matching 'y_{lab}'")
    if not ys:
        raise PredictionsError(f"{path}: no label columns (expected pairs 'y_<label>', 'p_<label>')")
    return ys


def _numeric(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    try:
        values = pd.to_numeric(df[col], errors="raise")
    except (ValueError, TypeError) as exc:
        raise PredictionsError(f"{path}: column {col!r} is not numeric ({exc})") from exc
    return np.asarray(pd.Series(values).to_numpy(dtype=np.float64, na_value=np.nan))


#: Predictions-file metadata key: ``"true"`` when the run had no ``done.json`` (``cxrgen predict
#: --allow-unfinished``); the report marks such files.
UNFINISHED_KEY = "unfinished"
#: Predictions-file metadata key: a JSON list of labels the model does not predict (a model from elsewhere
#: without that output, issue 23); their ``p`` column is NaN throughout, and their AUC is NaN.
UNPREDICTED_KEY = "unpredicted_labels"


#: Suffixes of a predictions file and their column delimiter (None: parquet).
PREDICTIONS_SUFFIXES: dict[str, str | None] = {
    ".parquet": None, ".csv": ",", ".csv.gz": ",", ".tsv": "\t", ".tsv.gz": "\t", ".txt": "\t", ".txt.gz": "\t",
}


def predictions_suffix(path: Path) -> str:
    """The predictions suffix ``path`` ends with (``.csv.gz``...), case-insensitive; another is an error."""
    name = path.name.lower()
    for suffix in sorted(PREDICTIONS_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    raise PredictionsError(f"{path}: a predictions file must end in {', '.join(PREDICTIONS_SUFFIXES)}")


def predictions_stem(path: str | os.PathLike[str]) -> str:
    """The file name without its predictions suffix: ``mimic`` for ``mimic.parquet`` and ``mimic.csv.gz``."""
    p = Path(path)
    return p.name[: len(p.name) - len(predictions_suffix(p))]


def _read_raw(p: Path) -> pd.DataFrame:
    """The file's cells: parquet as stored; a text table with every cell as text (ids keep leading zeros)."""
    delimiter = PREDICTIONS_SUFFIXES[predictions_suffix(p)]
    if delimiter is None:
        try:
            return pd.read_parquet(p)
        except (OSError, ValueError) as exc:
            raise PredictionsError(f"{p}: cannot read as parquet ({exc})") from exc
    try:
        return pd.read_csv(p, sep=delimiter, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PredictionsError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, EOFError, pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        what = "tab" if delimiter == "\t" else "comma"
        raise PredictionsError(f"{p}: cannot read as a {what}-separated table ({' '.join(str(exc).split())})") from None


def read_predictions(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, list[str]]:
    """Read and validate one predictions file: parquet, CSV or TSV (optionally gzipped), by its suffix.

    Args:
        path: The ``.parquet``, ``.csv``, ``.tsv`` (``.txt`` = tab) file, the text ones optionally ``.gz``.

    Returns:
        ``(frame, labels)``: the frame has ``image_id`` and ``patient_id`` as strings and every
        ``y_<label>`` / ``p_<label>`` as float64 (NaN = unlabelled); ``labels`` in file order.

    Raises:
        FileNotFoundError: The file does not exist.
        PredictionsError: Unreadable file or suffix, missing column, ``y`` outside {0, 1, NaN}, ``p`` outside
            [0, 1] or NaN, missing ids, or a duplicate ``image_id``. The message names the file and the column.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: predictions file not found")
    raw = _read_raw(p)
    parquet = PREDICTIONS_SUFFIXES[predictions_suffix(p)] is None
    unpredicted = json.loads(parquet_metadata(p).get(UNPREDICTED_KEY, "[]")) if parquet else []
    return validate_predictions(raw, p, unpredicted=unpredicted)


def validate_predictions(
    raw: pd.DataFrame, p: Path, *, unpredicted: Sequence[str] = ()
) -> tuple[pd.DataFrame, list[str]]:
    """Check a predictions frame against the schema (see :func:`read_predictions`); ``p`` names it in messages.

    Args:
        raw: The table as read (numbers or text cells).
        p: The file the frame comes from or goes to.
        unpredicted: Labels whose ``p`` column may be NaN throughout (a model without that output).
    """
    for col in ("image_id", "patient_id"):
        if col not in raw.columns:
            raise PredictionsError(f"{p}: missing column {col!r}")
        if raw[col].isna().any():
            raise PredictionsError(f"{p}: column {col!r} has {int(raw[col].isna().sum())} missing values")
    labels = _label_columns([str(c) for c in raw.columns], p)
    out = pd.DataFrame({"image_id": raw["image_id"].astype(str), "patient_id": raw["patient_id"].astype(str)})
    dup = out["image_id"].duplicated(keep=False)
    if dup.any():
        examples = out.loc[dup, "image_id"].unique()[:3].tolist()
        raise PredictionsError(f"{p}: column 'image_id' has {int(dup.sum())} duplicated rows, e.g. {examples}")
    for lab in labels:
        y = _numeric(raw, f"y_{lab}", p)
        bad = ~(np.isnan(y) | (y == 0) | (y == 1))
        if bad.any():
            raise PredictionsError(
                f"{p}: column 'y_{lab}' must hold 0, 1 or NaN; found {np.unique(y[bad])[:5].tolist()} "
                f"in {int(bad.sum())} rows"
            )
        prob = _numeric(raw, f"p_{lab}", p)
        # NaN is refused, except in the whole column of a label the file says its model does not predict.
        bad = ~((prob >= 0) & (prob <= 1)) & ~(lab in unpredicted and np.isnan(prob).all())
        if bad.any():
            raise PredictionsError(
                f"{p}: column 'p_{lab}' must hold probabilities in [0, 1]; {int(bad.sum())} rows are outside "
                f"or NaN, e.g. {prob[bad][:3].tolist()}"
            )
        out[f"y_{lab}"] = y
        out[f"p_{lab}"] = prob
    return out.reset_index(drop=True), labels


def auc_table(
    df: pd.DataFrame,
    labels: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    extra: Mapping[str, object] | None = None,
) -> pd.DataFrame:
    """Tidy per-label AUC rows for one predictions frame (as returned by :func:`read_predictions`).

    Args:
        df: Frame with ``patient_id``, ``y_<label>``, ``p_<label>``.
        labels: Labels to evaluate.
        n_boot: Patient-clustered bootstrap resamples (shared by all labels).
        seed: Bootstrap seed.
        ci: Confidence level of both intervals.
        extra: Constant columns put first on every row, e.g. ``{"configuration": "nih", "arch": ...,
            "test_set": "mimic", "kind": "external"}`` (the study runner's keys).

    Returns:
        One row per label with ``extra`` keys then :data:`AUC_COLUMNS`. ``auc`` is NaN (with a warning)
        for a label with one class. ``ci_low``/``ci_high``: bootstrap percentile interval;
        ``delong_low``/``delong_high``: DeLong interval on the logit scale (images assumed independent).
    """
    y = np.column_stack([df[f"y_{lab}"].to_numpy(dtype=np.float64) for lab in labels])
    p = np.column_stack([df[f"p_{lab}"].to_numpy(dtype=np.float64) for lab in labels])
    unpredicted = np.isnan(p).all(axis=0) if len(p) else np.zeros(len(labels), dtype=bool)
    if unpredicted.any():  # a label the model lacks: undefined, never scored (its images count as unlabelled)
        missing = [lab for lab, lacking in zip(labels, unpredicted, strict=True) if lacking]
        warnings.warn(f"no predictions for {missing} (p is NaN throughout); their AUC is NaN", stacklevel=2)
        y = np.where(unpredicted[None, :], np.nan, y)
        p = np.where(unpredicted[None, :], 0.5, p)
    boot = metrics.clustered_bootstrap_auc(
        y, p, df["patient_id"].to_numpy(), n_boot=n_boot, seed=seed, ci=ci, labels=list(labels)
    )
    rows: list[dict[str, object]] = []
    for j, lab in enumerate(labels):
        with warnings.catch_warnings():
            # The bootstrap already warned about a one-class label; do not repeat it.
            warnings.simplefilter("ignore", metrics.OneClassWarning)
            dl = metrics.delong(y[:, j], p[:, j], ci=ci, ci_method="logit", name=lab)
        labelled = ~np.isnan(y[:, j])
        rows.append(
            {
                **(dict(extra) if extra else {}),
                "label": lab,
                "auc": boot.auc[j],
                "ci_low": boot.ci_low[j],
                "ci_high": boot.ci_high[j],
                "n_pos": int((y[:, j] == 1).sum()),
                "n_neg": int((y[:, j] == 0).sum()),
                "n_patients": int(df.loc[labelled, "patient_id"].nunique()),
                "boot_se": boot.se[j],
                "n_boot": n_boot,
                "n_boot_degenerate": int(boot.n_degenerate[j]),
                "delong_se": dl.se,
                "delong_low": dl.ci_low,
                "delong_high": dl.ci_high,
                "ci": ci,
            }
        )
    columns = [*(extra or {}), *AUC_COLUMNS]
    return pd.DataFrame(rows, columns=columns)


def compare_predictions(
    df_a: pd.DataFrame,
    df_b: pd.DataFrame,
    labels: Sequence[str],
    *,
    name_a: str = "a",
    name_b: str = "b",
    files: tuple[str, str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Compare two models label by label with the report's patient-clustered tests; Holm over ``labels``.

    Frames that share images are paired on the intersection (``test == "clustered_paired_bootstrap"``; one
    patient resample shared by both models; dropped images counted and logged); bare and namespaced ids of one
    dataset pair (:func:`cxrgen.metrics.pairing.image_keys`). Frames sharing no image are independent test sets
    (``test == "clustered_unpaired"``), with a warning line saying why they could not be paired. Partly
    overlapping frames are neither: refused.
    ``files`` (the two paths) name the frames in messages; ``name_a``/``name_b`` fill the ``a``/``b`` columns.

    Raises:
        PairingError: the frames share images but under 95 % of the larger one's, or disagree on the ground
            truth of a shared image; the message names both.
    """
    n_boot = max(n_boot, 2)  # a standard error needs two resamples
    what_a, what_b = files or (name_a, name_b)
    keys_a, keys_b, _ = image_keys(df_a["image_id"], df_b["image_id"], what_a, what_b)
    if keys_a.isin(keys_b).any():
        paired = pair_on_images(df_a, df_b, what_a, what_b)
        what = f"{what_a} vs {what_b}"
        results = [paired_clustered(paired, lab, what, n_boot=n_boot, seed=seed, ci=ci) for lab in labels]
    else:  # said in one line, never silently: a bare/namespaced mismatch the rule cannot resolve shows here
        log.warning("%s", unpaired_reason(df_a["image_id"], df_b["image_id"], what_a, what_b))
        results = [unpaired_clustered(df_a, df_b, lab, n_boot=n_boot, seed=seed, ci=ci) for lab in labels]
    rows = [{"a": name_a, "b": name_b, "label": lab, **res} for lab, res in zip(labels, results, strict=True)]
    out = pd.DataFrame(rows, columns=[c for c in COMPARISON_COLUMNS if c != "p_holm"])
    out.insert(out.columns.get_loc("p") + 1, "p_holm", metrics.holm(out["p"].to_numpy(dtype=np.float64)))
    return out


def _renamed(
    df: pd.DataFrame, labels: list[str], label_name: Callable[[str], str], path: Path
) -> tuple[pd.DataFrame, list[str]]:
    """``df`` with its labels' columns renamed through ``label_name``; two columns becoming one label is an error."""
    names = [label_name(lab) for lab in labels]
    seen: dict[str, str] = {}
    for lab, name in zip(labels, names, strict=True):
        if name in seen:
            raise PredictionsError(f"{path}: columns 'p_{seen[name]}' and 'p_{lab}' are both the label {name!r}")
        seen[name] = lab
    rename = {f"{k}_{lab}": f"{k}_{name}" for lab, name in zip(labels, names, strict=True) for k in ("y", "p")}
    return df.rename(columns=rename), names


def _source_names(paths: Sequence[Path]) -> list[str]:
    """Shortest trailing path (without suffix) that tells the files apart: ``mimic`` or ``nih/x/mimic``."""
    for parts in ([*p.parent.parts, predictions_stem(p)] for p in paths), (list(p.parts) for p in paths):
        listed = list(parts)  # without the suffix, then with it (``nih.csv`` beside ``nih.parquet``)
        for k in range(1, max(len(x) for x in listed) + 1):
            names = ["/".join(x[-k:]) for x in listed]
            if len(set(names)) == len(names):
                return names
    raise ValueError(f"the same predictions file is given twice: {[str(p) for p in paths]}")


def evaluate_files(
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    label_name: Callable[[str], str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Evaluate predictions files and write ``out_dir/auc.csv`` (and ``comparisons.csv`` for 2+ files).

    Every comparison is computed before anything is written, so a refused pairing leaves no partial output.

    Args:
        paths: Predictions files (parquet, CSV, TSV); each is a test set named by its file name without the
            suffix (``test_set``: ``mimic`` for ``mimic.parquet`` and ``mimic.csv.gz``).
        out_dir: Output folder, created if needed; CSVs are written atomically.
        n_boot: Patient-clustered bootstrap resamples per file.
        seed: Bootstrap seed (the same for every file, so a file's intervals do not depend on the others).
        ci: Confidence level of all intervals.
        label_name: The label vocabulary: each file's label names pass through it before files are compared
            (``cxrgen evaluate`` gives :func:`cxrgen.sources.labels.canonical_label`, so ``Effusion`` in one file
            is ``Pleural Effusion`` in the other). None keeps the names as written.

    Returns:
        ``(auc, comparisons)``; ``comparisons`` is None for a single file. ``auc`` has ``test_set`` (file
        stem), ``source`` (the shortest trailing path telling the files apart, used as ``a``/``b`` in
        comparisons), ``file``, ``unfinished``, then :data:`AUC_COLUMNS`. Comparisons cover every pair of
        files in the given order and the labels they share; a label in only one file of a pair is named in a
        warning.
    """
    files = [Path(p) for p in paths]
    if not files:
        raise ValueError("evaluate_files: no predictions files given")
    names = _source_names(files)
    frames: list[tuple[pd.DataFrame, list[str]]] = [read_predictions(f) for f in files]
    if label_name is not None:
        frames = [_renamed(df, labels, label_name, f) for f, (df, labels) in zip(files, frames, strict=True)]
    unfinished = [predictions_suffix(f) == ".parquet" and parquet_metadata(f).get(UNFINISHED_KEY) == "true"
                  for f in files]
    tables = [
        auc_table(
            df, labels, n_boot=n_boot, seed=seed, ci=ci,
            extra={"test_set": predictions_stem(f), "source": name, "file": str(f), "unfinished": flag},
        )
        for f, name, flag, (df, labels) in zip(files, names, unfinished, frames, strict=True)
    ]
    auc = pd.concat(tables, ignore_index=True)
    comparisons = None
    if len(files) >= 2:
        comps = []
        for i, j in itertools.combinations(range(len(files)), 2):
            (df_a, lab_a), (df_b, lab_b) = frames[i], frames[j]
            shared = [lab for lab in lab_a if lab in lab_b]
            only_a, only_b = [lab for lab in lab_a if lab not in lab_b], [lab for lab in lab_b if lab not in lab_a]
            if only_a or only_b:
                warnings.warn(
                    f"{files[i]} vs {files[j]}: label(s) {only_a} only in {files[i]} and {only_b} only in "
                    f"{files[j]} are not compared (label names go through the label vocabulary)", stacklevel=2,
                )
            if shared:
                comps.append(compare_predictions(
                    df_a, df_b, shared, name_a=names[i], name_b=names[j], files=(str(files[i]), str(files[j])),
                    n_boot=n_boot, seed=seed, ci=ci).assign(unfinished=unfinished[i] or unfinished[j]))
        comparisons = (
            pd.concat(comps, ignore_index=True)
            if comps
            else pd.DataFrame(columns=[*COMPARISON_COLUMNS, "unfinished"])
        )
    out = Path(out_dir)
    write_csv(auc, out / "auc.csv")  # atomic: temporary file + os.replace
    if comparisons is not None:
        write_csv(comparisons, out / "comparisons.csv")
    return auc, comparisons
