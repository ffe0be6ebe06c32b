"""The report's shift-aware tables (issue 11): six tidy CSVs in ``results/`` (their HTML: ``shift_html.py``).

Per run (configuration, architecture), thresholds and temperatures are fitted on the run's validation
predictions (``runs/<c>/<a>/validation.parquet``) and applied unchanged to every test set. Files:
``protocols.csv``, ``operating_points.csv``, ``calibration_shift.csv``, ``subgroups.csv``, ``shortcut.csv``,
``borderline.csv`` (schemas in the README). Where an input is missing (no validation predictions, no device
record, no synthetic truth) the analysis is skipped and the section says why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxrgen.metrics import brier_score, expected_calibration_error, roc_auc
from cxrgen.metrics.evaluate import read_predictions
from cxrgen.report.inputs import Predictions, StudyInputs
from cxrgen.shift.borderline import borderline_trend, threshold_errors
from cxrgen.shift.calibration_shift import apply_temperature, em_prior_shift, fit_temperature
from cxrgen.shift.label_files import LabelFiles
from cxrgen.shift.operating_points import METRICS, RULES, choose_threshold, operating_point
from cxrgen.shift.protocols import get_protocol, protocol_differences, protocol_targets
from cxrgen.shift.shortcut import device_shortcut
from cxrgen.shift.subgroups import subgroup_gaps, subgroup_table, view_note
from cxrgen.study.config import StudyConfig
from cxrgen.study.layout import DatasetDir, RunDir
from cxrgen.utils.fileio import write_csv

log = logging.getLogger(__name__)

RUN_KEYS = ["configuration", "arch", "test_set", "kind"]
FILES = ("protocols", "operating_points", "calibration_shift", "subgroups", "shortcut", "borderline")
#: The shortcut and borderline analyses follow the paper's device remark: pacemakers and Cardiomegaly.
SHORTCUT_LABEL = "Cardiomegaly"


@dataclass
class ShiftTables:
    """The six analyses as frames (one per CSV) and notes on what could not be computed."""

    tables: dict[str, pd.DataFrame]
    notes: list[str] = field(default_factory=list)
    review: pd.DataFrame | None = None


def _validation(run: RunDir) -> pd.DataFrame | None:
    """The run's validation predictions, where its thresholds and temperatures are fitted; None when absent."""
    return read_predictions(run.validation)[0] if run.validation.is_file() else None


def truth_table(config: StudyConfig) -> pd.DataFrame | None:
    """``truth.parquet`` of every dataset that has one (synthetic), as ``dataset, path, ctr, true_device``."""
    frames = []
    for name, spec in config.datasets.items():
        path = DatasetDir(Path(spec.root)).truth
        if path.is_file():
            truth = pd.read_parquet(path, columns=["path", "ctr", "device"])
            frames.append(truth.rename(columns={"device": "true_device"}).assign(dataset=name))
    return pd.concat(frames, ignore_index=True) if frames else None


def _joined(pred: Predictions, manifest: pd.DataFrame, truth: pd.DataFrame | None) -> pd.DataFrame:
    """Predictions with the manifest's subgroup columns and raw labels, and the synthetic truth where known."""
    wanted = [
        c
        for c in manifest.columns
        if c in ("dataset", "path", "sex", "age", "view", "device", "labelled") or c.startswith("raw_")
    ]
    frame = pred.frame.merge(manifest[["image_id", *wanted]], on="image_id", how="left", validate="one_to_one")
    if truth is not None:
        frame = frame.merge(truth, on=["dataset", "path"], how="left", validate="many_to_one")
    return frame


def _operating_rows(pred: Predictions, val: pd.DataFrame, config: StudyConfig) -> list[dict[str, object]]:
    ev = config.evaluation
    rows = []
    for label in pred.labels:
        for rule in RULES:
            threshold = choose_threshold(val[f"y_{label}"], val[f"p_{label}"], rule)
            point = operating_point(
                pred.frame[f"y_{label}"],
                pred.frame[f"p_{label}"],
                pred.frame["patient_id"],
                threshold,
                n_boot=ev.bootstrap,
                seed=ev.seed,
                ci=ev.ci,
            )
            for metric in METRICS:
                value, low, high = point.values[metric]
                rows.append(
                    {
                        "label": label,
                        "rule": rule,
                        "threshold": threshold,
                        "metric": metric,
                        "value": value,
                        "ci_low": low,
                        "ci_high": high,
                        "tp": point.tp,
                        "fp": point.fp,
                        "tn": point.tn,
                        "fn": point.fn,
                        "status": point.status,
                    }
                )
    return rows


def _calibration_rows(pred: Predictions, val: pd.DataFrame) -> list[dict[str, object]]:
    rows = []
    for label in pred.labels:
        y, p = pred.frame[f"y_{label}"].to_numpy(float), pred.frame[f"p_{label}"].to_numpy(float)
        vy, vp = val[f"y_{label}"].to_numpy(float), val[f"p_{label}"].to_numpy(float)
        temperature = fit_temperature(vy, vp)
        train_prev = float(np.nanmean(vy)) if (~np.isnan(vy)).any() else math.nan
        true_prev = float(np.nanmean(y)) if (~np.isnan(y)).any() else math.nan
        scaled = apply_temperature(p, temperature) if temperature == temperature else p
        variants: list[tuple[str, np.ndarray, float]] = [("none", p, math.nan), ("temperature", scaled, math.nan)]
        em: dict[str, object] = {"em_iterations": pd.NA, "em_converged": pd.NA}  # issue 27: EM's convergence
        if 0.0 < train_prev < 1.0:
            shifted = em_prior_shift(scaled, train_prev)
            em = {"em_iterations": shifted.iterations, "em_converged": shifted.converged}
            variants.append(("prior_shift", shifted.adjusted, shifted.prevalence))
        for method, q, estimate in variants:
            rows.append(
                {
                    "label": label,
                    "method": method,
                    "temperature": temperature,
                    "train_prevalence": train_prev,
                    "estimated_prevalence": estimate,
                    "true_prevalence": true_prev,
                    "brier": brier_score(y, q, name=label),
                    "ece": expected_calibration_error(y, q, name=label),
                    "auc": roc_auc(y, q, name=label),
                    **(em if method == "prior_shift" else {"em_iterations": pd.NA, "em_converged": pd.NA}),
                }
            )
    return rows


def _protocol_targets(
    frame: pd.DataFrame, label: str, protocol: str, config: StudyConfig, label_files: LabelFiles
) -> np.ndarray | None:
    """Targets [N] of one label under ``protocol`` in the order of ``frame``; None: no row for this test set."""
    spec = get_protocol(protocol)
    if spec.label_file is None:
        if f"raw_{label}" not in frame:
            return None
        labelled = frame["labelled"].fillna(True) if "labelled" in frame else np.ones(len(frame), bool)
        uncertainty = config.uncertainty.get(label, "zeros")
        return protocol_targets(frame[f"raw_{label}"], labelled, protocol, uncertainty=uncertainty, blank=config.blank)
    if label not in config.labels or frame["dataset"].isna().any():  # images the manifest does not know
        return None
    alt = label_files.targets(sorted(set(frame["dataset"])), spec.label_file, protocol)
    if alt is None:
        return None
    return frame[["image_id"]].merge(alt, on="image_id", how="left", validate="one_to_one")[label].to_numpy(float)


def _protocol_rows(
    pred: Predictions, frame: pd.DataFrame, config: StudyConfig, label_files: LabelFiles
) -> list[dict[str, object]]:
    """Per protocol and label: AUC under the study's targets and the protocol's, paired patient bootstrap (each
    label's study AUCs computed once for all its protocols)."""
    ev = config.evaluation
    found: dict[tuple[str, str], Mapping[str, float]] = {}
    for label in pred.labels:
        targets = {protocol: _protocol_targets(frame, label, protocol, config, label_files)
                   for protocol in ev.protocols}
        asked = {protocol: y for protocol, y in targets.items() if y is not None}
        diffs = protocol_differences(
            frame[f"y_{label}"], list(asked.values()), frame[f"p_{label}"], frame["patient_id"],
            n_boot=ev.bootstrap, seed=ev.seed, ci=ev.ci, name=label,
        )  # fmt: skip
        found.update(((protocol, label), diff) for protocol, diff in zip(asked, diffs, strict=True))
    return [{"label": label, "protocol": protocol, **found[protocol, label]}
            for protocol in ev.protocols for label in pred.labels if (protocol, label) in found]


def _device_column(frame: pd.DataFrame) -> tuple[pd.Series, str]:
    if "true_device" in frame and frame["true_device"].notna().any():
        return frame["true_device"].astype(float), "truth.parquet (synthetic pacemaker)"
    if "device" in frame:
        return frame["device"].astype(float), "Support Devices label"
    return pd.Series(np.nan, index=frame.index), "none"


@dataclass
class FileShift:
    """The six analyses of one predictions file (rows per CSV), before the study-wide gaps and Holm."""

    rows: dict[str, list[dict[str, object]]]
    subgroups: pd.DataFrame
    notes: list[str]
    label_notes: list[str]
    review: pd.DataFrame | None = None


def shift_file(
    inputs: StudyInputs, pred: Predictions, truth: pd.DataFrame | None, label_files: LabelFiles
) -> FileShift:
    """The analyses of one predictions file: depends on that file, its run's validation predictions, the
    manifest, the synthetic truth and the label files only (a unit of the report's cache)."""
    config, ev = inputs.config, inputs.config.evaluation
    out: dict[str, list[dict[str, object]]] = {name: [] for name in FILES}
    notes: list[str] = []
    review: pd.DataFrame | None = None
    asked = len(label_files.asked)
    keys: dict[str, object] = dict(
        zip(RUN_KEYS, (pred.configuration, pred.arch, pred.test_set, pred.kind), strict=True)
    )
    if pred.seed is not None:  # several training seeds: one row per seed's run, as in auc.csv
        keys["seed"] = pred.seed
    keys["unfinished"] = pred.unfinished  # issue 14: rows of a run without done.json say so
    val = _validation(pred.run)
    if val is None:
        folder = pred.run.path.relative_to(inputs.study.dir.path).as_posix()
        notes.append(f"{folder}: no validation.parquet; no thresholds or temperatures fitted")
    frame = _joined(pred, inputs.manifest, truth)
    notes += [n for n in [view_note(frame, pred.test_set)] if n is not None and n not in notes]
    out["protocols"] += [{**keys, **row} for row in _protocol_rows(pred, frame, config, label_files)]
    if val is not None:
        out["operating_points"] += [{**keys, **row} for row in _operating_rows(pred, val, config)]
        out["calibration_shift"] += [{**keys, **row} for row in _calibration_rows(pred, val)]
    youden = (
        {lab: choose_threshold(val[f"y_{lab}"], val[f"p_{lab}"], "youden") for lab in pred.labels}
        if val is not None
        else None
    )
    sub = subgroup_table(frame, pred.labels, n_boot=ev.bootstrap, seed=ev.seed, ci=ev.ci, thresholds=youden)
    subgroups = sub.assign(**keys)
    device, source = _device_column(frame)
    for label in pred.labels:
        if val is None or not device.notna().any():
            continue
        threshold = choose_threshold(val[f"y_{label}"], val[f"p_{label}"], "youden")
        result = device_shortcut(
            frame[f"y_{label}"],
            frame[f"p_{label}"],
            device,
            frame["patient_id"],
            threshold,
            n_boot=max(ev.bootstrap, 1),
            seed=ev.seed,
            ci=ev.ci,
        )
        out["shortcut"].append(
            {
                **keys,
                "label": label,
                "device_source": source,
                "threshold": threshold,
                "n_neg_device": result.n_neg_device,
                "n_neg_no_device": result.n_neg_no_device,
                "fpr_device": result.fpr_device[0],
                "fpr_device_low": result.fpr_device[1],
                "fpr_device_high": result.fpr_device[2],
                "fpr_no_device": result.fpr_no_device[0],
                "fpr_no_device_low": result.fpr_no_device[1],
                "fpr_no_device_high": result.fpr_no_device[2],
                "difference": result.difference[0],
                "ci_low": result.difference[1],
                "ci_high": result.difference[2],
                "status": result.status,
                "detected": result.detected,
            }
        )
    label = SHORTCUT_LABEL
    if val is not None and "ctr" in frame and frame["ctr"].notna().any() and f"p_{label}" in frame:
        threshold = choose_threshold(val[f"y_{label}"], val[f"p_{label}"], "youden")
        y = frame[f"y_{label}"].to_numpy(float)
        error = threshold_errors(y, frame[f"p_{label}"].to_numpy(float), threshold)
        trend = borderline_trend(
            error, frame["ctr"], frame["patient_id"], n_boot=ev.bootstrap, seed=ev.seed, ci=ev.ci,
            threshold=threshold,
        )
        for band in trend.bands.to_dict("records"):
            out["borderline"].append(
                {
                    **keys,
                    "label": label,
                    "threshold": threshold,
                    **band,
                    "slope": trend.slope[0],
                    "slope_low": trend.slope[1],
                    "slope_high": trend.slope[2],
                    "p": trend.p,
                }
            )
        wrong = frame.loc[error == 1, ["image_id", "ctr", f"y_{label}", f"p_{label}"]]
        review = (wrong.assign(configuration=pred.configuration, arch=pred.arch, test_set=pred.test_set))
    keys_asked = dict.fromkeys(label_files.asked[asked:])
    label_notes = [label_files.note_of[key] for key in keys_asked if key in label_files.note_of]
    return FileShift(out, subgroups, notes, label_notes, review)


def assemble_shift(parts: list[FileShift], has_truth: bool) -> ShiftTables:
    """The study's :class:`ShiftTables` from its files' parts, in the files' order."""
    out: dict[str, list[dict[str, object]]] = {name: [] for name in FILES}
    notes: list[str] = []
    for part in parts:
        for name in FILES:
            out[name] += part.rows[name]
        notes += [n for n in part.notes if n not in notes]
    label_notes = list(dict.fromkeys(n for part in parts for n in part.label_notes))
    notes += label_notes
    if not has_truth:
        notes.append(
            "No synthetic truth (truth.parquet) beside any dataset: on real data the true cardiothoracic "
            "ratio is unknown, so the borderline-error claim is not tested."
        )
    tables = {name: pd.DataFrame(rows) for name, rows in out.items()}
    tables["subgroups"] = _with_gaps([part.subgroups for part in parts])
    return ShiftTables(tables, notes, _review_table([p.review for p in parts if p.review is not None]))


def shift_tables(inputs: StudyInputs, predictions: list[Predictions]) -> ShiftTables:
    """Compute the six analyses for every predictions file of the study."""
    truth = truth_table(inputs.config)
    label_files = LabelFiles(inputs.config)
    parts = [shift_file(inputs, pred, truth, label_files) for pred in predictions]
    return assemble_shift(parts, truth is not None)


def _with_gaps(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Subgroup rows; external rows carry the gap to the same run's internal subgroup and Holm per family."""
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    parts = []
    for _, run in table.groupby(with_seed(table, "configuration", "arch"), sort=False):
        internal = run.loc[run["kind"] == "internal"]
        for _, part in run.groupby("test_set", sort=False):
            if (part["kind"] == "external").all() and not internal.empty:
                gaps = subgroup_gaps(internal, part)[["label", "family", "subgroup", "gap", "p", "p_holm"]]
                part = part.merge(gaps, on=["label", "family", "subgroup"], how="left")
            parts.append(part)
    ordered = pd.concat(parts, ignore_index=True)
    first = [*with_seed(ordered, *RUN_KEYS), "label", "family", "subgroup"]
    return ordered[first + [c for c in ordered.columns if c not in first]]


def with_seed(frame: pd.DataFrame, *columns: str) -> list[str]:
    """``columns`` with ``seed`` after ``arch`` when the rows carry one (a study with several seeds)."""
    out = list(columns)
    if "seed" in frame.columns and "arch" in out:
        out.insert(out.index("arch") + 1, "seed")
    return out


def _review_table(rows: list[pd.DataFrame]) -> pd.DataFrame | None:
    """Misclassified Cardiomegaly images of external test sets: true CTR beside each architecture's probability."""
    if not rows:
        return None
    errors = pd.concat(rows, ignore_index=True)
    errors = errors.loc[errors["test_set"] != "internal"]
    if errors.empty:
        return None
    wide = errors.pivot_table(
        index=["configuration", "test_set", "image_id", "ctr", f"y_{SHORTCUT_LABEL}"],
        columns="arch",
        values=f"p_{SHORTCUT_LABEL}",
    ).reset_index()
    wide.columns = [f"p_{c}" if c in set(errors["arch"]) else str(c) for c in wide.columns]
    wide["distance"] = (wide["ctr"] - 0.5).abs()
    return wide.sort_values("distance").head(12).drop(columns="distance")


def write_shift_results(inputs: StudyInputs, predictions: list[Predictions], results: Path) -> ShiftTables:
    """Compute the analyses and write the six CSVs into ``results``."""
    return write_shift_tables(shift_tables(inputs, predictions), results)


def write_shift_tables(shift: ShiftTables, results: Path) -> ShiftTables:
    """Write the six CSVs of ``shift`` into ``results``."""
    for name in FILES:
        table = shift.tables[name]
        if table.columns.empty:  # nothing to analyse (e.g. no synthetic truth): still a readable CSV with a header
            table = pd.DataFrame(columns=[*RUN_KEYS, "label"])
        write_csv(table, results / f"{name}.csv")
    return shift
