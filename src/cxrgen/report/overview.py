"""The report's first table, whatever the study's design: ``results/overview.csv``.

One row per model and test set: the AUC averaged over the labels that can be estimated on that set (two classes),
with a patient-clustered interval, the labels it averages over, and for an external set the gap to the same
model's internal set (internal minus external, over the labels estimable on both). A test set without any label
(an unlabelled external hospital: every ``y_`` NaN) has no AUC; its row gives the predicted prevalence and says
"not estimable" with the reason, never "inconclusive".

The mean's interval is the percentile interval of the mean over the same labels in each patient resample (the
labels share the resamples, :func:`cxrgen.metrics.clustered_bootstrap_auc`). With several training seeds the
point is the mean over seeds and the interval pools every seed's resamples (seed and patient variance together).
The gap's interval is unpaired (different patients): the gap plus or minus z times the root of the summed squared
bootstrap SEs, as the internal-versus-external comparisons.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

from cxrgen import metrics
from cxrgen.report.inputs import Predictions
from cxrgen.report.naming import model_label
from cxrgen.report.tables import format_interval
from cxrgen.study.config import StudyConfig

#: Columns of ``results/overview.csv``.
OVERVIEW_COLUMNS: tuple[str, ...] = (
    "configuration", "arch", "test_set", "kind", "n_images", "n_patients", "labelled", "labels", "n_labels_study",
    "mean_auc", "ci_low", "ci_high", "gap", "gap_low", "gap_high", "gap_labels", "predicted_prevalence",
    "observed_prevalence", "status", "unfinished",
)
NOT_ESTIMABLE_UNLABELLED = "not estimable: the test set has no labels"


@dataclass(frozen=True)
class _Mean:
    labels: tuple[str, ...]  # labels with two classes on this set
    point: dict[str, float]  # per-label AUC (mean over seeds)
    samples: dict[str, np.ndarray]  # per-label resampled AUCs, every seed's resamples stacked


def _auc_samples(files: Sequence[Predictions], config: StudyConfig) -> _Mean:
    evaluation = config.evaluation
    labels = list(files[0].labels)
    points: dict[str, list[float]] = {lab: [] for lab in labels}
    samples: dict[str, list[np.ndarray]] = {lab: [] for lab in labels}
    for pred in files:
        frame = pred.frame
        y = np.column_stack([frame[f"y_{lab}"].to_numpy(dtype=np.float64) for lab in labels])
        p = np.column_stack([frame[f"p_{lab}"].to_numpy(dtype=np.float64) for lab in labels])
        with warnings.catch_warnings():  # auc.csv already warned about one-class labels
            warnings.simplefilter("ignore", metrics.OneClassWarning)
            boot = metrics.clustered_bootstrap_auc(
                y, p, frame["patient_id"].to_numpy(), n_boot=evaluation.bootstrap, seed=evaluation.seed,
                ci=evaluation.ci, labels=labels,
            )  # fmt: skip
        for j, lab in enumerate(labels):
            points[lab].append(float(boot.auc[j]))
            samples[lab].append(boot.samples[:, j])
    estimable = tuple(lab for lab in labels if all(not math.isnan(v) for v in points[lab]))
    return _Mean(
        estimable,
        {lab: float(np.mean(points[lab])) for lab in estimable},
        {lab: np.concatenate(samples[lab]) for lab in estimable},
    )


def _mean_over(m: _Mean, labels: Sequence[str], ci: float) -> tuple[float, float, float, float]:
    """Mean AUC over ``labels``, its percentile interval and bootstrap SE (NaN when no label)."""
    if not labels:
        return math.nan, math.nan, math.nan, math.nan
    point = float(np.mean([m.point[lab] for lab in labels]))
    stacked = np.column_stack([m.samples[lab] for lab in labels])
    means = stacked[~np.isnan(stacked).any(axis=1)].mean(axis=1)
    if means.size < 2:
        return point, math.nan, math.nan, math.nan
    alpha = 1.0 - ci
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return point, float(low), float(high), float(np.std(means, ddof=1))


def describe_labels(used: Sequence[str], all_labels: Sequence[str]) -> str:
    """Which labels a mean is over: ``all 5`` or ``3 of 5 (not Edema, Consolidation: one class)``."""
    if not used:
        return "none"
    if len(used) == len(all_labels):
        return f"all {len(all_labels)}"
    left = [lab for lab in all_labels if lab not in used]
    return f"{len(used)} of {len(all_labels)} (not {', '.join(left)}: one class)"


def _prevalence(files: Sequence[Predictions], prefix: str) -> float:
    """Mean over labels and seeds of the mean of ``p_`` (predicted) or ``y_`` (observed) columns; NaN if none."""
    values = []
    for pred in files:
        for lab in pred.labels:
            column = pred.frame[f"{prefix}{lab}"].to_numpy(dtype=np.float64)
            if (~np.isnan(column)).any():
                values.append(float(np.nanmean(column)))
    return float(np.mean(values)) if values else math.nan


def overview_table(config: StudyConfig, predictions: Sequence[Predictions]) -> pd.DataFrame:
    """One row per (configuration, arch, test set) with :data:`OVERVIEW_COLUMNS`, in the predictions' order.

    ``labelled`` is False when every ``y_`` of the set is NaN; then ``mean_auc`` and the gap are NaN and
    ``status`` says why. ``labels`` names the labels behind ``mean_auc``; ``gap_labels`` those behind ``gap``
    (estimable on both the internal and this set). ``predicted_prevalence`` is the mean predicted probability
    averaged over labels; ``observed_prevalence`` the labelled positive rate averaged over labels (NaN unlabelled).
    """
    groups: dict[tuple[str, str, str], list[Predictions]] = {}
    for pred in predictions:
        groups.setdefault(pred.key, []).append(pred)
    means = {key: _auc_samples(files, config) for key, files in groups.items()}
    z = float(norm.ppf(0.5 + config.evaluation.ci / 2.0))
    rows: list[dict[str, object]] = []
    for key, files in groups.items():
        configuration, arch, test_set = key
        first = files[0]
        labelled = any(first.frame[f"y_{lab}"].notna().any() for lab in first.labels)
        m = means[key]
        point, low, high, _ = _mean_over(m, m.labels, config.evaluation.ci)
        gap = gap_low = gap_high = math.nan
        gap_labels: tuple[str, ...] = ()
        internal = next((k for k in groups if k[:2] == key[:2] and groups[k][0].kind == "internal"), None)
        if first.kind == "external" and internal is not None and labelled:
            common = tuple(lab for lab in means[internal].labels if lab in m.labels)
            gap_labels = common
            if common:
                i_point, _, _, i_se = _mean_over(means[internal], common, config.evaluation.ci)
                e_point, _, _, e_se = _mean_over(m, common, config.evaluation.ci)
                gap = i_point - e_point
                spread = z * math.sqrt(i_se**2 + e_se**2)
                gap_low, gap_high = gap - spread, gap + spread
        if not labelled:
            status = NOT_ESTIMABLE_UNLABELLED
        elif not m.labels:
            status = "not estimable: no label has both classes"
        else:
            status = "estimated"
        rows.append({
            "configuration": configuration, "arch": arch, "test_set": test_set, "kind": first.kind,
            "n_images": len(first.frame), "n_patients": int(first.frame["patient_id"].nunique()),
            "labelled": labelled, "labels": "; ".join(m.labels), "n_labels_study": len(first.labels),
            "mean_auc": point, "ci_low": low, "ci_high": high, "gap": gap, "gap_low": gap_low, "gap_high": gap_high,
            "gap_labels": "; ".join(gap_labels), "predicted_prevalence": _prevalence(files, "p_"),
            "observed_prevalence": _prevalence(files, "y_"), "status": status,
            "unfinished": any(p.unfinished for p in files),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=list(OVERVIEW_COLUMNS))


#: (configuration, arch, test_set) -> (mean label-free AUC estimate over labels, whether any label's flag rose).
LabelFree = dict[tuple[str, str, str], tuple[float, bool]]


def label_free_auc(estimates: pd.DataFrame, method: str = "cbpe") -> LabelFree:
    """The label-free AUC estimate of each model on each test set without labels, averaged over labels (and seeds),
    with its trust flag: what the first screen can say about a hospital before its labels exist (issue 24)."""
    rows = estimates.loc[(estimates["method"] == method) & (estimates["metric"] == "auc")
                         & ~estimates["labelled"].astype(bool) & estimates["estimate"].notna()]  # fmt: skip
    found: LabelFree = {}
    for (configuration, arch, test_set), part in rows.groupby(["configuration", "arch", "test_set"], sort=False):
        flagged = bool(part["flag"].astype("boolean").fillna(False).any())
        found[(str(configuration), str(arch), str(test_set))] = (float(part["estimate"].mean()), flagged)
    return found


def overview_display(
    config: StudyConfig, table: pd.DataFrame, all_labels: Sequence[str], label_free: LabelFree | None = None
) -> pd.DataFrame:
    """The first table as printed: one short text cell per statistic (fits a 1280 px window). An unlabelled set
    shows its label-free AUC estimate (``label_free``) beside "not estimable", never in its place."""
    level = f"{config.evaluation.ci * 100:g} %"
    out = []
    for r in table.itertuples(index=False):
        labels = [lab for lab in str(r.labels).split("; ") if lab]
        if r.labelled and labels:
            auc = format_interval(float(r.mean_auc), float(r.ci_low), float(r.ci_high))
            over = describe_labels(labels, all_labels)
        else:
            auc, over = str(r.status).replace(": ", " (", 1) + ")", ""
            estimate = (label_free or {}).get((str(r.configuration), str(r.arch), str(r.test_set)))
            if estimate is not None:
                trust = "flagged: do not trust" if estimate[1] else "not flagged"
                auc += f"; estimated before the labels {estimate[0]:.3f} (CBPE, {trust})"
        if r.kind == "internal":
            gap = "(reference)"
        elif not r.labelled:
            gap = "not estimable (no labels)"
        elif math.isnan(float(r.gap)):
            gap = "not estimable (no internal set with the same labels)"
        else:
            gap_labels = [lab for lab in str(r.gap_labels).split("; ") if lab]
            gap = f"{float(r.gap):+.3f} [{float(r.gap_low):+.3f}, {float(r.gap_high):+.3f}]"
            if gap_labels != labels:
                gap += f" over {describe_labels(gap_labels, all_labels)}"
        predicted = float(r.predicted_prevalence)
        observed = float(r.observed_prevalence)
        prevalence = f"{predicted:.3f}" + ("" if math.isnan(observed) else f" / {observed:.3f}")
        out.append({
            "Model": model_label(config, str(r.arch)) + (" (unfinished)" if r.unfinished else ""),
            "Trained on": r.configuration,
            "Test set": str(r.kind) if r.test_set == r.kind else f"{r.kind} {r.test_set}",
            "Images (patients)": f"{r.n_images} ({r.n_patients})",
            f"Mean AUC over labels [{level} CI]": auc,
            "Labels in the mean": over,
            "Gap: internal minus this set": gap,
            "Prevalence predicted / observed": prevalence,
        })  # fmt: skip
    return pd.DataFrame(out)


def paper_shape(config: StudyConfig, predictions: Sequence[Predictions]) -> str:
    """"" when the study has the paper's shape, else one sentence saying what it lacks.

    The paper's claims need a configuration trained on several datasets beside a configuration trained on one of
    them alone, several architectures, and internal and external test sets with labels.
    """
    lacks = []
    trained = {c.name: set(c.train) for c in config.configurations}
    singles = {next(iter(sources)) for sources in trained.values() if len(sources) == 1}
    if not any(len(sources) > 1 and sources & singles for sources in trained.values()):
        lacks.append("no configuration trained on several datasets beside one trained on one of them alone")
    if len({p.arch for p in predictions}) < 2:
        lacks.append("one architecture")
    kinds = {p.kind for p in predictions if any(p.frame[f"y_{lab}"].notna().any() for lab in p.labels)}
    if kinds != {"internal", "external"}:
        lacks.append("no labelled external test set" if "internal" in kinds else "no labelled internal test set")
    if not lacks:
        return ""
    return "The paper's claims are not tested: this study has " + "; ".join(lacks) + "."
