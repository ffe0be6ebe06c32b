"""The report's tables: tidy AUCs with intervals, calibration, and the paper's Table 1 with its numbers beside ours.

All statistics come from :mod:`cxrgen.metrics.evaluate` and :mod:`cxrgen.metrics`; this module only arranges them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cxrgen import metrics
from cxrgen.metrics.evaluate import AUC_COLUMNS, auc_table
from cxrgen.report.inputs import Predictions, StudyInputs, count_excluded
from cxrgen.report.naming import model_label
from cxrgen.study.config import StudyConfig

#: Columns identifying a predictions file, first in ``auc.csv`` and ``calibration.csv``.
KEY_COLUMNS: tuple[str, ...] = ("configuration", "arch", "test_set", "kind")
#: Columns of ``auc.csv``: the run keys, :data:`cxrgen.metrics.evaluate.AUC_COLUMNS`, ``n_excluded``, then
#: ``unfinished`` (True for predictions of a run without ``done.json``, made with
#: ``cxrgen predict --allow-unfinished``).
AUC_CSV_COLUMNS: tuple[str, ...] = (*KEY_COLUMNS, *AUC_COLUMNS, "n_excluded", "unfinished")
#: Columns of ``calibration.csv``.
CALIBRATION_COLUMNS: tuple[str, ...] = (
    *KEY_COLUMNS, "label", "brier", "ece", "o_e", "o_e_low", "o_e_high", "slope", "slope_low", "slope_high",
    "intercept", "intercept_low", "intercept_high", "n", "n_pos", "note", "unfinished",
)
#: How the printed tables and figures mark a row of an unfinished run.
UNFINISHED = "unfinished"
#: Reliability bins of ``calibration.csv`` and the calibration figures.
CALIBRATION_BINS = 10


def _extra(pred: Predictions) -> dict[str, object]:
    return {"configuration": pred.configuration, "arch": pred.arch, "test_set": pred.test_set, "kind": pred.kind}


def auc_results(inputs: StudyInputs, predictions: Sequence[Predictions]) -> pd.DataFrame:
    """One row per (predictions file, label): the ``auc.csv`` of the study.

    ``ci_low``/``ci_high`` are the patient-clustered bootstrap percentile interval and ``delong_low``/
    ``delong_high`` the DeLong logit interval, both at ``evaluation.ci``; every file uses the same bootstrap
    seed, so a file's interval does not depend on which other files exist. ``n_excluded`` counts the test
    images that failed to decode (never predicted); empty when ``excluded.csv`` is absent. ``unfinished`` marks
    the files of runs without ``done.json``.
    """
    evaluation = inputs.config.evaluation
    frames = []
    for pred in predictions:
        table = auc_table(
            pred.frame,
            pred.labels,
            n_boot=evaluation.bootstrap,
            seed=evaluation.seed,
            ci=evaluation.ci,
            extra=_extra(pred),
        )
        excluded = count_excluded(inputs, pred.datasets)
        table["n_excluded"] = pd.array([excluded] * len(table), dtype="Int64")
        table["unfinished"] = pred.unfinished
        frames.append(table)
    return pd.concat(frames, ignore_index=True)[list(AUC_CSV_COLUMNS)]


def calibration_results(predictions: Sequence[Predictions], ci: float = 0.95) -> pd.DataFrame:
    """Brier score, expected calibration error (10 equal-width bins), observed/expected, calibration slope and
    intercept with ``ci`` Wald intervals (:func:`cxrgen.metrics.calibration_fit`) per (predictions file, label).
    ``note`` says why a statistic is NaN (an unlabelled set: "no labelled image").

    AUC ignores calibration; a model moved to another hospital often keeps its ranking but not its
    probabilities, which matters as soon as a threshold is used (the error review uses one).
    """
    rows: list[dict[str, object]] = []
    for pred in predictions:
        for label in pred.labels:
            y, p = pred.frame[f"y_{label}"].to_numpy(), pred.frame[f"p_{label}"].to_numpy()
            fit = metrics.calibration_fit(y, p, ci=ci, name=label)
            rows.append(
                {
                    **_extra(pred),
                    "label": label,
                    "brier": metrics.brier_score(y, p, name=label),
                    "ece": metrics.expected_calibration_error(y, p, n_bins=CALIBRATION_BINS, name=label),
                    **{f"{stat}{end}": value for stat, triple in
                       (("o_e", fit.o_e), ("slope", fit.slope), ("intercept", fit.intercept))
                       for end, value in zip(("", "_low", "_high"), triple, strict=True)},
                    "n": int((~np.isnan(y)).sum()),
                    "n_pos": int((y == 1).sum()),
                    "note": fit.note,
                    "unfinished": pred.unfinished,
                }
            )
    return pd.DataFrame(rows, columns=list(CALIBRATION_COLUMNS))


def study_labels(config: StudyConfig, auc: pd.DataFrame) -> list[str]:
    """Labels in the study's order, then any others found in the predictions files."""
    found = list(dict.fromkeys(auc["label"]))
    return [lab for lab in config.labels if lab in found] + [lab for lab in found if lab not in config.labels]


def reference_auc(config: StudyConfig, configuration: str, arch: str, test_set: str, kind: str) -> dict[str, float]:
    """The published AUCs of one Table 1 row, or {} when the study carries none for it.

    The paper's cells name the kind (internal/external), not the test set; an external cell is matched to
    the configuration's first external dataset only, since the paper had exactly one (MIMIC).
    """
    if config.reference is None:
        return {}
    if kind == "external":
        conf = next((c for c in config.configurations if c.name == configuration), None)
        if conf is None or not conf.external or conf.external[0] != test_set:
            return {}
    for cell in config.reference.table1:
        if (cell.arch, cell.configuration, cell.kind) == (arch, configuration, kind):
            return dict(cell.auc)
    return {}


def has_reference(config: StudyConfig) -> bool:
    return config.reference is not None and bool(config.reference.table1)


def table1(config: StudyConfig, auc: pd.DataFrame) -> pd.DataFrame:
    """Table 1 as numbers: one row per (arch, configuration, test set), per label our AUC and interval.

    Columns: ``arch, configuration, test_set, kind, unfinished``, then for each label ``<label>``,
    ``<label> ci_low``, ``<label> ci_high`` and, when the study carries the paper's Table 1, ``<label> paper``
    (NaN where the paper has no value). ``unfinished`` is True when any file behind the row comes from an
    unfinished run. Rows follow the paper: by architecture, then configuration, internal before external.
    """
    labels = study_labels(config, auc)
    with_reference = has_reference(config)
    arch_rank = {a: i for i, a in enumerate(dict.fromkeys([*config.architectures, *auc["arch"]]))}
    keyed = auc.assign(_arch_rank=auc["arch"].map(arch_rank), _order=np.arange(len(auc)))
    keyed = keyed.sort_values(["_arch_rank", "_order"], kind="stable")
    rows: list[dict[str, object]] = []
    for (arch, configuration, test_set, kind), group in keyed.groupby(
        ["arch", "configuration", "test_set", "kind"], sort=False
    ):
        row: dict[str, object] = {"arch": arch, "configuration": configuration, "test_set": test_set, "kind": kind,
                                  "unfinished": is_unfinished(group)}  # fmt: skip
        by_label = group.set_index("label")
        paper = reference_auc(config, str(configuration), str(arch), str(test_set), str(kind))
        for label in labels:
            present = label in by_label.index
            row[label] = float(by_label.at[label, "auc"]) if present else math.nan
            row[f"{label} ci_low"] = float(by_label.at[label, "ci_low"]) if present else math.nan
            row[f"{label} ci_high"] = float(by_label.at[label, "ci_high"]) if present else math.nan
            if with_reference:
                row[f"{label} paper"] = paper.get(label, math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def is_unfinished(rows: pd.DataFrame) -> bool:
    """Whether any row of an ``auc.csv``-like frame comes from an unfinished run (False without the column)."""
    return bool("unfinished" in rows and rows["unfinished"].astype(bool).any())


def format_auc(value: float) -> str:
    """An AUC as printed everywhere in the report: 3 decimals, ``n/a`` when undefined (one class)."""
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def format_interval(auc: float, low: float, high: float) -> str:
    """``0.853 [0.840, 0.866]``; the interval is left out when it is undefined."""
    if math.isnan(low) or math.isnan(high):
        return format_auc(auc)
    return f"{format_auc(auc)} [{format_auc(low)}, {format_auc(high)}]"


def table1_display(config: StudyConfig, table: pd.DataFrame) -> pd.DataFrame:
    """Table 1 as printed text: ``AUC [CI]`` per label, with a ``paper`` column after each when available."""
    labels = [c for c in table.columns if f"{c} ci_low" in table.columns]
    unfinished = table["unfinished"] if "unfinished" in table else pd.Series(False, index=table.index)
    with_reference = has_reference(config)
    level = f"{config.evaluation.ci * 100:g} %"
    out = pd.DataFrame(
        {
            "Model": [
                model_label(config, str(arch)) + (f" ({UNFINISHED})" if marked else "")
                for arch, marked in zip(table["arch"], unfinished, strict=True)
            ],
            "Configuration": table["configuration"],
            "Test set": [
                str(k) if t == k else f"{k} {t}" for k, t in zip(table["kind"], table["test_set"], strict=True)
            ],
        }
    )
    for label in labels:
        out[f"{label} AUC [{level} CI]"] = [
            format_interval(a, lo, hi)
            for a, lo, hi in zip(table[label], table[f"{label} ci_low"], table[f"{label} ci_high"], strict=True)
        ]
        if with_reference:
            out[f"{label} paper"] = [format_auc(v) if not math.isnan(v) else "" for v in table[f"{label} paper"]]
    return out


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (``DataFrame.to_markdown`` needs ``tabulate``, not a dependency)."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(frame[c]) else "---" for c in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def latex_table(frame: pd.DataFrame, caption: str) -> str:
    """A booktabs LaTeX table with special characters escaped (``%``, ``_``, ``&``...)."""
    return str(frame.to_latex(index=False, escape=True, caption=caption, label="tab:table1", position="htbp"))
