"""The report's shift-aware part (issue 11): six tidy CSVs in ``results/`` and their HTML sections.

Per run (configuration, architecture), thresholds and temperatures are fitted on the run's validation
predictions (``runs/<c>/<a>/validation.parquet``) and applied unchanged to every test set. Files:
``protocols.csv``, ``operating_points.csv``, ``calibration_shift.csv``, ``subgroups.csv``, ``shortcut.csv``,
``borderline.csv`` (schemas in the README). Where an input is missing (no validation predictions, no device
record, no synthetic truth) the analysis is skipped and the section says why.
"""

from __future__ import annotations

import html
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxrgen.metrics import brier_score, expected_calibration_error, roc_auc
from cxrgen.metrics.evaluate import read_predictions
from cxrgen.report.html import frame_html
from cxrgen.report.inputs import Predictions, StudyInputs
from cxrgen.report.pvalues import bootstrap_p_text
from cxrgen.shift.borderline import borderline_trend, threshold_errors
from cxrgen.shift.calibration_shift import apply_temperature, em_prior_shift, fit_temperature
from cxrgen.shift.label_files import LabelFiles
from cxrgen.shift.operating_points import METRICS, RULES, choose_threshold, operating_point
from cxrgen.shift.protocols import get_protocol, paired_protocol_difference, protocol_targets
from cxrgen.shift.shortcut import MIN_NEGATIVES, device_shortcut
from cxrgen.shift.subgroups import subgroup_gaps, subgroup_table, view_note
from cxrgen.study.config import StudyConfig
from cxrgen.study.layout import RunDir
from cxrgen.synthetic.truth import TRUTH_FILE
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


def _truth(config: StudyConfig) -> pd.DataFrame | None:
    """``truth.parquet`` of every dataset that has one (synthetic), as ``dataset, path, ctr, true_device``."""
    frames = []
    for name, spec in config.datasets.items():
        path = Path(spec.root) / TRUTH_FILE
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
    """Per protocol and label: AUC under the study's targets and the protocol's, paired patient bootstrap."""
    ev = config.evaluation
    rows = []
    for protocol in ev.protocols:
        for label in pred.labels:
            y_alt = _protocol_targets(frame, label, protocol, config, label_files)
            if y_alt is None:
                continue
            diff = paired_protocol_difference(
                frame[f"y_{label}"], y_alt, frame[f"p_{label}"], frame["patient_id"],
                n_boot=ev.bootstrap, seed=ev.seed, ci=ev.ci, name=label,
            )  # fmt: skip
            rows.append({"label": label, "protocol": protocol, **diff})
    return rows


def _device_column(frame: pd.DataFrame) -> tuple[pd.Series, str]:
    if "true_device" in frame and frame["true_device"].notna().any():
        return frame["true_device"].astype(float), "truth.parquet (synthetic pacemaker)"
    if "device" in frame:
        return frame["device"].astype(float), "Support Devices label"
    return pd.Series(np.nan, index=frame.index), "none"


def shift_tables(inputs: StudyInputs, predictions: list[Predictions]) -> ShiftTables:
    """Compute the six analyses for every predictions file of the study."""
    config, ev = inputs.config, inputs.config.evaluation
    truth = _truth(config)
    out: dict[str, list[dict[str, object]]] = {name: [] for name in FILES}
    notes: list[str] = []
    subgroup_frames: list[pd.DataFrame] = []
    review_rows: list[pd.DataFrame] = []
    validations: dict[tuple[str, str, int | None], pd.DataFrame | None] = {}
    label_files = LabelFiles(config)
    for pred in predictions:
        keys: dict[str, object] = dict(
            zip(RUN_KEYS, (pred.configuration, pred.arch, pred.test_set, pred.kind), strict=True)
        )
        if pred.seed is not None:  # several training seeds: one row per seed's run, as in auc.csv
            keys["seed"] = pred.seed
        keys["unfinished"] = pred.unfinished  # issue 14: rows of a run without done.json say so
        run = (pred.configuration, pred.arch, pred.seed)
        if run not in validations:
            validations[run] = _validation(pred.run)
            if validations[run] is None:
                folder = pred.run.path.relative_to(inputs.study.dir.path).as_posix()
                notes.append(f"{folder}: no validation.parquet; no thresholds or temperatures fitted")
        val = validations[run]
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
        subgroup_frames.append(sub.assign(**keys))
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
            review_rows.append(wrong.assign(configuration=pred.configuration, arch=pred.arch, test_set=pred.test_set))
    notes += label_files.notes
    if truth is None:
        notes.append(
            "No synthetic truth (truth.parquet) beside any dataset: on real data the true cardiothoracic "
            "ratio is unknown, so the borderline-error claim is not tested."
        )
    tables = {name: pd.DataFrame(rows) for name, rows in out.items()}
    tables["subgroups"] = _with_gaps(subgroup_frames)
    return ShiftTables(tables, notes, _review_table(review_rows))


def _with_gaps(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Subgroup rows; external rows carry the gap to the same run's internal subgroup and Holm per family."""
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    parts = []
    for _, run in table.groupby(_with_seed(table, "configuration", "arch"), sort=False):
        internal = run.loc[run["kind"] == "internal"]
        for _, part in run.groupby("test_set", sort=False):
            if (part["kind"] == "external").all() and not internal.empty:
                gaps = subgroup_gaps(internal, part)[["label", "family", "subgroup", "gap", "p", "p_holm"]]
                part = part.merge(gaps, on=["label", "family", "subgroup"], how="left")
            parts.append(part)
    ordered = pd.concat(parts, ignore_index=True)
    first = [*_with_seed(ordered, *RUN_KEYS), "label", "family", "subgroup"]
    return ordered[first + [c for c in ordered.columns if c not in first]]


def _with_seed(frame: pd.DataFrame, *columns: str) -> list[str]:
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
    shift = shift_tables(inputs, predictions)
    for name in FILES:
        table = shift.tables[name]
        if table.columns.empty:  # nothing to analyse (e.g. no synthetic truth): still a readable CSV with a header
            table = pd.DataFrame(columns=[*RUN_KEYS, "label"])
        write_csv(table, results / f"{name}.csv")
    return shift


# --------------------------------------------------------------------------------------------- HTML


def _interval(frame: pd.DataFrame, value: str, low: str, high: str) -> pd.Series:
    return frame.apply(
        lambda r: f"{r[value]:.3f} [{r[low]:.3f}, {r[high]:.3f}]" if r[value] == r[value] else "", axis=1
    )


def shift_html(shift: ShiftTables, ci: float) -> str:
    """The shift sections: one ``<h2>`` per analysis, compact tables; full rows are in the CSVs."""
    t = shift.tables
    level = f"{ci * 100:g} %"
    parts = [
        '<h2 id="shift">Shift-aware evaluation</h2>',
        f"<p>Thresholds and temperatures are fitted on each run's validation set and applied unchanged to "
        f"every test set. Intervals: {level} patient-clustered bootstrap. Full tables: protocols.csv, "
        "operating_points.csv, calibration_shift.csv, subgroups.csv, shortcut.csv, borderline.csv.</p>",
    ]
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in shift.notes]
    sc = t["shortcut"]
    parts.append("<h3>Device shortcut (false-positive rate among negatives, device vs none)</h3>")
    if sc.empty:
        parts.append("<p>(no test set records devices, or no validation predictions)</p>")
    else:
        shown = sc.loc[sc["label"] == SHORTCUT_LABEL].copy()
        sources = ", ".join(sorted(set(shown["device_source"].astype(str))))
        shown["verdict"] = ["detected" if d else (st if st != "ok" else "not detected")
                            for d, st in zip(shown["detected"], shown["status"], strict=True)]
        shown["FPR device"] = _interval(shown, "fpr_device", "fpr_device_low", "fpr_device_high")
        shown["FPR none"] = _interval(shown, "fpr_no_device", "fpr_no_device_low", "fpr_no_device_high")
        shown["difference"] = _interval(shown, "difference", "ci_low", "ci_high")
        parts.append(
            f"<p>{SHORTCUT_LABEL}, Youden threshold from validation; devices from {html.escape(sources)}; "
            f"highlighted: interval above 0 (shortcut detected); fewer than {MIN_NEGATIVES} negatives with or "
            "without a device: too few to say.</p>"
        )
        parts.append(
            frame_html(
                shown[
                    [
                        *_with_seed(shown, "configuration", "arch", "test_set"),
                        "n_neg_device",
                        "FPR device",
                        "FPR none",
                        "difference",
                        "verdict",
                    ]
                ],
                shown["detected"].astype(bool).tolist(),
            )
        )
    op = t["operating_points"]
    parts.append("<h3>Operating points chosen at home</h3>")
    if op.empty:
        parts.append("<p>(no validation predictions)</p>")
    else:
        sens = op.loc[(op["rule"] == "sensitivity90") & (op["metric"] == "sensitivity")].copy()
        sens["sensitivity"] = _interval(sens, "value", "ci_low", "ci_high")
        wide = sens.pivot_table(
            index=_with_seed(sens, "configuration", "arch", "label"), columns="test_set", values="sensitivity",
            aggfunc="first",
        ).reset_index()
        parts.append("<p>Sensitivity at the threshold that gave 90 % sensitivity on validation, per test set.</p>")
        parts.append(frame_html(wide))
    cal = t["calibration_shift"]
    parts.append("<h3>Calibration and prevalence shift</h3>")
    if cal.empty:
        parts.append("<p>(no validation predictions)</p>")
    else:
        keys = _with_seed(cal, "configuration", "arch", "test_set", "label")
        wide = cal.pivot_table(index=keys, columns="method", values="ece").reset_index()
        prev = cal.loc[
            cal["method"] == "prior_shift",
            [
                *keys,
                "train_prevalence",
                "estimated_prevalence",
                "true_prevalence",
            ],
        ]
        merged = wide.merge(prev, on=keys, how="left")
        merged = merged.rename(columns={"none": "ECE", "temperature": "ECE temp.", "prior_shift": "ECE EM"})
        parts.append(
            "<p>ECE before and after temperature scaling and EM prior-shift correction (Saerens et al. "
            "2002); EM's prevalence is estimated from the predictions alone. AUC is unchanged by both "
            "(calibration_shift.csv).</p>"
        )
        parts.append(frame_html(merged))
    sub = t["subgroups"]
    parts.append("<h3>Subgroups</h3>")
    if sub.empty:
        parts.append("<p>(none)</p>")
    else:
        shown = sub.loc[
            sub["label"] == (SHORTCUT_LABEL if SHORTCUT_LABEL in set(sub["label"]) else sub["label"].iloc[0])
        ].copy()
        shown["AUC"] = [
            f"{a:.3f} [{lo:.3f}, {hi:.3f}]" if s == "ok" else "too few"
            for a, lo, hi, s in zip(shown["auc"], shown["ci_low"], shown["ci_high"], shown["status"], strict=True)
        ]
        wide = shown.pivot_table(
            index=_with_seed(shown, "configuration", "arch", "family", "subgroup"), columns="test_set", values="AUC",
            aggfunc="first",
        ).reset_index()
        parts.append(
            f"<p>{html.escape(str(shown['label'].iloc[0]))} AUC per subgroup (fewer than 20 positives or "
            "negatives: too few). Internal-external gaps with Holm's adjustment per family are in "
            "subgroups.csv. NIH ChestX-ray14 records no devices, so it has no device subgroup.</p>"
        )
        parts.append(frame_html(wide))
    pr = t["protocols"]
    parts.append("<h3>Label protocols (same predictions, re-scored)</h3>")
    if pr.empty:
        parts.append("<p>(no protocols configured)</p>")
    else:
        shown = pr.copy()
        shown["protocol - study"] = _interval(shown, "difference", "ci_low", "ci_high")
        wide = shown.pivot_table(
            index=_with_seed(shown, "configuration", "arch", "test_set", "label"),
            columns="protocol",
            values="protocol - study",
            aggfunc="first",
        ).reset_index()
        parts.append(
            "<p>AUC under each protocol minus AUC under the study's own, paired patient bootstrap. The mimic_* "
            "protocols re-read MIMIC's other label files and score MIMIC test sets only (blank elsewhere).</p>"
        )
        parts.append(frame_html(wide.head(40)))
    bl = t["borderline"]
    parts.append("<h3>Borderline errors against the true cardiothoracic ratio</h3>")
    if bl.empty:
        parts.append("<p>No true cardiothoracic ratio is known for these datasets (real data): not tested.</p>")
    else:
        shown = bl.copy()
        shown["error rate"] = _interval(shown, "error_rate", "ci_low", "ci_high")
        wide = shown.pivot_table(
            index=_with_seed(shown, "configuration", "arch", "test_set"), columns="band", values="error rate",
            aggfunc="first",
        ).reset_index()
        run_keys = _with_seed(bl, *RUN_KEYS[:3])
        slopes = bl.drop_duplicates(run_keys)[[*run_keys, "slope", "slope_low", "slope_high", "p", "n_boot"]]
        slopes["p"] = [bootstrap_p_text(p, n) for p, n in zip(slopes["p"], slopes.pop("n_boot"), strict=True)]
        parts.append(
            "<p>Cardiomegaly error rate by |CTR - 0.5| band; a negative slope means errors concentrate "
            "near the borderline.</p>"
        )
        parts.append(frame_html(wide.merge(slopes, on=run_keys)))
        if shift.review is not None:
            parts.append(
                "<p>Misclassified external images closest to the borderline: true CTR beside both "
                "models' probabilities.</p>"
            )
            parts.append(frame_html(shift.review))
    return "\n".join(parts)
