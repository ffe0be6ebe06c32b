"""Before the labels (issue 24): ``results/estimates.csv``, its summary, a scatter figure and the report section.

Per run (configuration, architecture, seed) the home side of every method is fitted on the run's validation
predictions (``runs/<c>/<a>/validation.parquet``); the estimates use the external test set's scores only
(:mod:`cxrgen.shift.estimates`). Unlabelled external sets are always estimated (``evaluation.estimate.enabled``);
labelled ones when ``evaluation.estimate.labelled`` is true, where every estimate sits beside the truth.

``estimates.csv``: ``configuration, arch, [seed], test_set, label, method, metric, rule, estimate, ci_low,
ci_high, true_value, true_se, error, covered, note, flag, flag_reasons`` and every signal of the flag (``spread,
prevalence_odds, outside, score_shift, expected_se, embedding_auc, embedding_note``), then ``labelled``. ``note`` says
why an estimate or a truth is NaN (the home validation set or the target holds one class of the label);
``true_se`` is the truth's own patient-bootstrap standard error (AUC rows): on a small target much of an error is
the truth's noise, not the estimator's. Two baseline "methods" that need no estimator ride along on AUC rows of
labelled sets: ``internal_auc`` (the model's AUC on its internal test set) and ``other_hospitals_auc`` (the mean
true AUC of the same architecture and label on the other external test sets of the study). Every model, external
set and label has one AUC row per method, NaN with its note where undefined.

``estimates_summary.csv``: per method, over labelled folds and labels, the AUC estimate's mean absolute error, its
90th percentile, bias, interval coverage, the noise floor (the mean absolute error a perfect estimator would still
show against a truth measured with ``true_se``: ``sqrt(2/pi)`` times the mean ``true_se``), and the flag's hit rate
on errors above :data:`BIG_ERROR`, its false-alarm rate on the others, and the share of rows it flags.
"""

from __future__ import annotations

import html
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from cxrgen.metrics import clustered_bootstrap_auc, roc_auc
from cxrgen.metrics.evaluate import read_predictions
from cxrgen.report import figures as figs
from cxrgen.report.estimate_embeddings import EmbeddingLookup
from cxrgen.report.html import frame_html
from cxrgen.report.inputs import Predictions, StudyInputs
from cxrgen.shift.estimates import (
    MAX_EMBEDDING_AUC,
    MAX_OUTSIDE,
    MAX_PREVALENCE_ODDS,
    MAX_SCORE_SHIFT,
    MAX_SPREAD,
    METHODS,
    SMALL_TARGET_SE,
    SPREAD_METHODS,
    Estimate,
    Home,
    agreement_on_the_line,
    estimate_label,
    fit_home,
    true_values,
    trust_signals,
)
from cxrgen.utils.fileio import write_csv

log = logging.getLogger(__name__)

BASELINES = ("internal_auc", "other_hospitals_auc")
#: An AUC estimate this far from the truth is a failure the flag should have caught.
BIG_ERROR = 0.05
#: The flag's signals, each a column of ``estimates.csv``.
SIGNALS = ("spread", "prevalence_odds", "outside", "score_shift", "expected_se", "embedding_auc")
COLUMNS = ["configuration", "arch", "seed", "test_set", "label", "method", "metric", "rule", "estimate", "ci_low",
           "ci_high", "true_value", "true_se", "error", "covered", "note", "flag", "flag_reasons", *SIGNALS,
           "embedding_note", "labelled"]  # fmt: skip


@dataclass
class Estimates:
    """``estimates.csv`` and its summary as frames, and notes on what was skipped."""

    table: pd.DataFrame
    summary: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _labelled(pred: Predictions) -> bool:
    return any(pred.frame[f"y_{label}"].notna().any() for label in pred.labels)


@dataclass(frozen=True)
class Truth:
    """The labelled target's values of one label (empty for an unlabelled set), its AUC's bootstrap SE, and
    why a value is undefined."""

    values: dict[tuple[str, str], float]
    auc_se: float = math.nan
    why: str = ""


def _truth(home: Home | None, y: pd.Series, p: pd.Series, groups: pd.Series, n_boot: int, seed: int) -> Truth:
    ya = y.to_numpy(float)
    known = ~pd.isna(ya)
    n_pos, n_neg = int(ya[known].sum()), int(known.sum() - ya[known].sum())
    why = f"{n_pos} positive, {n_neg} negative" if min(n_pos, n_neg) == 0 else ""
    if home is None:
        auc = roc_auc(ya, p, name=str(y.name)) if not why else math.nan
        return Truth({("auc", ""): auc}, why=why)
    values = true_values(home, ya, p.to_numpy(float))
    se = math.nan
    if not why and n_boot > 1:
        se = float(clustered_bootstrap_auc(ya[known], p.to_numpy(float)[known], groups.to_numpy()[known],
                                           n_boot=n_boot, seed=seed).se[0])  # fmt: skip
    return Truth(values, se, why)


def _row(pred: Predictions, label: str, e: Estimate, truth: Truth, note: str = "") -> dict[str, object]:
    """One row; ``note`` says why nothing was estimated, else the estimate's own reason (:attr:`Estimate.note`)
    and the truth's reason where either is NaN."""
    true = truth.values.get((e.metric, e.rule), math.nan)
    if not note:
        why_true = truth.values and true != true
        note = "; ".join(filter(None, [e.note, f"true {'AUC' if e.metric == 'auc' else e.metric} undefined: "
                                                f"{truth.why or 'no images'}" if why_true else ""]))  # fmt: skip
    return {
        "configuration": pred.configuration, "arch": pred.arch, "seed": pred.seed, "test_set": pred.test_set,
        "label": label, "method": e.method, "metric": e.metric, "rule": e.rule, "estimate": e.estimate,
        "ci_low": e.ci_low, "ci_high": e.ci_high, "true_value": true,
        "true_se": truth.auc_se if e.metric == "auc" else math.nan, "error": e.estimate - true,
        "covered": (e.ci_low <= true <= e.ci_high) if true == true and e.ci_low == e.ci_low else pd.NA,
        "note": note or None,
    }  # fmt: skip


def estimates_table(inputs: StudyInputs, predictions: list[Predictions]) -> Estimates:
    """Every estimate of every model, external test set, label and method (the module docstring's schema)."""
    config = inputs.config
    spec, ev = config.evaluation.estimate, config.evaluation
    notes: list[str] = []
    rows: list[dict[str, object]] = []
    if not spec.enabled:
        empty = pd.DataFrame(columns=COLUMNS), pd.DataFrame(columns=list(SUMMARY_COLUMNS))
        return Estimates(*empty, ["evaluation.estimate.enabled is false"])
    methods = [m for m in spec.methods if m in METHODS]
    embeddings = EmbeddingLookup(inputs.study.dir.embeddings, ev.seed)
    homes: dict[tuple[str, str, int | None], pd.DataFrame | None] = {}
    fitted: dict[tuple[str, str, int | None, str], Home | None] = {}
    internal: dict[tuple[str, str, int | None, str], float] = {}
    chosen: list[Predictions] = []
    for pred in predictions:
        run = (pred.configuration, pred.arch, pred.seed)
        if pred.kind == "internal":
            internal |= {(*run, lab): roc_auc(pred.frame[f"y_{lab}"], pred.frame[f"p_{lab}"], name=lab)
                         for lab in pred.labels}  # fmt: skip
            continue
        labelled = _labelled(pred)
        if labelled and not spec.labelled:
            continue
        if run not in homes:
            homes[run] = read_predictions(pred.run.validation)[0] if pred.run.validation.is_file() else None
            if homes[run] is None:
                notes.append(f"{pred.configuration}/{pred.arch}: no validation.parquet; no label-free estimates")
        val = homes[run]
        if val is None:
            continue
        chosen.append(pred)
        for label in pred.labels:
            key = (*run, label)
            if key not in fitted:
                fitted[key] = fit_home(val[f"y_{label}"], val[f"p_{label}"], spec.calibrate)
            home = fitted[key]
            frame = pred.frame
            truth = (_truth(home, frame[f"y_{label}"], frame[f"p_{label}"], frame["patient_id"], ev.bootstrap,
                            ev.seed) if labelled else Truth({}))  # fmt: skip
            if home is None:
                y = val[f"y_{label}"].dropna()
                why = f"home validation set has one class: {int(y.sum())} positive, {int(len(y) - y.sum())} negative"
                notes.append(f"{pred.configuration}/{pred.arch} {label}: {why}; no label-free estimates")
                rows += [{**_row(pred, label, Estimate(m, "auc", "", math.nan, math.nan, math.nan), truth, why),
                          "labelled": labelled} for m in methods]  # fmt: skip
            else:
                p = frame[f"p_{label}"].to_numpy(float)
                found = estimate_label(home, p, frame["patient_id"].to_numpy(), methods,
                                       n_boot=ev.bootstrap, seed=ev.seed, ci=ev.ci)  # fmt: skip
                distance, why = embeddings.distance((pred.configuration, pred.test_set), val, frame)
                signals = trust_signals(home, p, found, distance)
                trust = {
                    "flag": signals.flag, "flag_reasons": ";".join(signals.reasons), "spread": signals.spread,
                    "prevalence_odds": signals.prevalence_odds, "outside": signals.outside,
                    "score_shift": signals.score_shift,
                    "expected_se": signals.expected_se, "embedding_auc": signals.embedding_auc,
                    "embedding_note": why or None, "labelled": labelled,
                }  # fmt: skip
                rows += [{**_row(pred, label, e, truth), **trust} for e in found]
            if labelled:
                estimate = Estimate("internal_auc", "auc", "", internal.get(key, math.nan), math.nan, math.nan)
                rows.append({**_row(pred, label, estimate, truth), "labelled": True})
    if "agreement" in spec.methods:
        rows += _agreement_rows(chosen, homes, fitted, rows, ev.bootstrap, ev.seed, ev.ci)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table = _other_hospitals(table)
    if table["seed"].isna().all():
        table = table.drop(columns="seed")
    return Estimates(table, summary_table(table), list(dict.fromkeys(notes)))


def _agreement_rows(
    chosen: list[Predictions],
    homes: dict[tuple[str, str, int | None], pd.DataFrame | None],
    fitted: dict[tuple[str, str, int | None, str], Home | None],
    rows: list[dict[str, object]],
    n_boot: int,
    seed: int,
    ci: float,
) -> list[dict[str, object]]:
    """ALine-S across the models (architectures, seeds) of one configuration on one external test set."""
    out: list[dict[str, object]] = []
    flags = {(r["configuration"], r["arch"], r["seed"], r["test_set"], r["label"]): r for r in rows if "flag" in r}
    groups: dict[tuple[str, str], list[Predictions]] = {}
    for pred in chosen:
        groups.setdefault((pred.configuration, pred.test_set), []).append(pred)
    for models in groups.values():
        for label in models[0].labels:
            usable = [m for m in models if fitted.get((m.configuration, m.arch, m.seed, label)) is not None]
            if len(usable) < 2:
                continue
            vals = [homes[(m.configuration, m.arch, m.seed)] for m in usable]
            common_val = set.intersection(*(set(v["image_id"]) for v in vals if v is not None))
            common_t = set.intersection(*(set(m.frame["image_id"]) for m in usable))
            home_pred, target_pred = [], []
            home_y = None
            for m, v in zip(usable, vals, strict=True):
                assert v is not None
                home = fitted[(m.configuration, m.arch, m.seed, label)]
                assert home is not None
                t = home.thresholds["youden"]
                hv = v.loc[v["image_id"].isin(common_val) & v[f"y_{label}"].notna()].sort_values("image_id")
                ft = m.frame.loc[m.frame["image_id"].isin(common_t)].sort_values("image_id")
                home_pred.append(hv[f"p_{label}"].to_numpy(float) >= t)
                target_pred.append(ft[f"p_{label}"].to_numpy(float) >= t)
                home_y = hv[f"y_{label}"].to_numpy(float)
                target_frame = ft
            if home_y is None or len({len(h) for h in home_pred}) != 1 or not len(home_y):
                continue
            result = agreement_on_the_line(home_pred, home_y, target_pred, target_frame["patient_id"].to_numpy(),
                                           n_boot=n_boot, seed=seed, ci=ci)  # fmt: skip
            if result is None:
                continue
            for m, (value, low, high) in zip(usable, result, strict=True):
                home = fitted[(m.configuration, m.arch, m.seed, label)]
                assert home is not None
                labelled = _labelled(m)
                truth = Truth(true_values(home, m.frame[f"y_{label}"], m.frame[f"p_{label}"]) if labelled else {})
                same = flags.get((m.configuration, m.arch, m.seed, m.test_set, label), {})
                trust = {k: same.get(k) for k in ("flag", "flag_reasons", *SIGNALS, "embedding_note")}
                est = Estimate("agreement", "accuracy", "youden", value, low, high)
                out.append({**_row(m, label, est, truth), **trust, "labelled": labelled})
    return out


def _other_hospitals(table: pd.DataFrame) -> pd.DataFrame:
    """Add the ``other_hospitals_auc`` baseline: the mean true AUC of the same arch and label on other test sets."""
    truth = table.loc[(table["metric"] == "auc") & (table["method"] == "internal_auc")]
    extra = []
    for row in truth.itertuples(index=False):
        others = truth.loc[(truth["arch"] == row.arch) & (truth["label"] == row.label)
                           & (truth["test_set"] != row.test_set), "true_value"]  # fmt: skip
        value = float(others.mean()) if others.notna().any() else math.nan
        extra.append({**row._asdict(), "method": "other_hospitals_auc", "estimate": value,
                      "error": value - row.true_value})  # fmt: skip
    if not extra:
        return table
    return pd.concat([table, pd.DataFrame(extra, columns=table.columns)], ignore_index=True)


#: Columns of ``estimates_summary.csv``, written even when no labelled set allows a summary.
SUMMARY_COLUMNS = ("method", "n", "mae", "p90", "bias", "coverage", "noise_floor", "n_big_error", "flag_hit_rate",
                   "flag_false_alarm_rate", "flag_rate")  # fmt: skip


def _share(flags: pd.Series) -> float:
    """Share of True among known flags; NaN with none."""
    known = flags.dropna()
    return float(known.astype(float).mean()) if len(known) else math.nan


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per method, AUC estimates on labelled sets: folds, MAE, 90th percentile, coverage, noise floor, flag rates."""
    auc = table.loc[(table["metric"] == "auc") & table["true_value"].notna() & table["estimate"].notna()]
    rows = []
    for method, part in auc.groupby("method", sort=False):
        err = part["error"].abs()
        big = err > BIG_ERROR
        flagged = part["flag"].astype("boolean") if method not in BASELINES else pd.Series(pd.NA, index=part.index)
        rows.append({
            "method": method, "n": len(part), "mae": float(err.mean()), "p90": float(err.quantile(0.9)),
            "bias": float(part["error"].mean()),
            "coverage": float(part["covered"].dropna().astype(float).mean()) if part["covered"].notna().any()
            else math.nan,
            "noise_floor": math.sqrt(2 / math.pi) * float(part["true_se"].mean()),
            "n_big_error": int(big.sum()),
            "flag_hit_rate": _share(flagged[big]),
            "flag_false_alarm_rate": _share(flagged[~big]),
            "flag_rate": _share(flagged),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def scatter_figure(table: pd.DataFrame) -> Figure | None:
    """Estimated against true AUC, one point per fold and label, a colour per method; None without truth."""
    auc = table.loc[(table["metric"] == "auc") & table["true_value"].notna() & table["estimate"].notna()]
    if auc.empty:
        return None
    fig = figs.new_figure(5.5, 5.0)
    ax = fig.add_subplot()
    for method, part in auc.groupby("method", sort=False):
        marker = "x" if method in BASELINES else "o"
        ax.scatter(part["true_value"], part["estimate"], s=14, marker=marker, label=str(method), alpha=0.75)
    low = float(min(auc["true_value"].min(), auc["estimate"].min(), 0.5))
    ax.plot([low, 1], [low, 1], color="grey", lw=1, ls="--")
    ax.set(xlabel="true AUC (labels of the held-out hospital)", ylabel="estimated AUC (no labels)",
           title="Before the labels: estimated vs true AUC")  # fmt: skip
    ax.legend(fontsize=7)
    return fig


FLAG_RULE = (
    f"The flag is raised when the AUC estimates of {', '.join(SPREAD_METHODS)} spread by more than {MAX_SPREAD} "
    f"(so one of them misses by more than {MAX_SPREAD / 2}); the mean calibrated probability on the target moves "
    f"from home by an odds ratio beyond {MAX_PREVALENCE_ODDS}; more than {MAX_OUTSIDE:.0%} of the target scores "
    f"fall outside the home scores' 1st-99th percentiles; the target scores' distribution differs from the home "
    f"validation scores' by a Kolmogorov-Smirnov statistic D above {MAX_SCORE_SHIFT} (black-box shift detection, "
    f"Rabanser et al. 2019; the effect size, not the p-value); or, where embeddings exist, a domain classifier tells "
    f"the target's images from the home validation images with a cross-validated AUC above {MAX_EMBEDDING_AUC}. "
    f"Not flagged but shown: expected_se, how far the labelled AUC of a target this small would itself scatter "
    f"(above {SMALL_TARGET_SE}, even a perfect estimate misses it by more than 0.05 more often than not)."
)


def write_estimates(
    inputs: StudyInputs, predictions: list[Predictions], results: Path
) -> tuple[Estimates, Path | None]:
    """Write ``estimates.csv``, ``estimates_summary.csv`` and ``figures/estimates.png`` (when labels exist)."""
    found = estimates_table(inputs, predictions)
    write_csv(found.table, results / "estimates.csv")
    write_csv(found.summary, results / "estimates_summary.csv")
    fig = scatter_figure(found.table)
    path = figs.save_png(fig, results / "figures" / "estimates.png") if fig is not None else None
    return found, path


def estimates_html(found: Estimates, figure: Path | None, results: Path) -> str:
    """The section "Before the labels": what the methods are, the summary, the figure, the flag rule."""
    if found.table.empty:
        return ""
    parts = [
        '<h2 id="before-the-labels">Before the labels</h2>',
        "<p>Estimated performance at a hospital from the model's scores alone: the home validation set (with "
        "labels) and the target's images (without). Unlabelled test sets get estimates only; labelled ones, where "
        "configured, show each estimate beside the truth so the methods are judged on held-out hospitals. "
        "Baselines that need no method: <code>internal_auc</code> (the model's internal AUC) and "
        "<code>other_hospitals_auc</code> (its mean AUC at the other external hospitals). "
        f"{html.escape(FLAG_RULE)} <code>noise_floor</code> is the mean absolute error a perfect estimator would "
        "still show, because the true AUC of a small test set is itself measured with noise (its patient-bootstrap "
        "standard error, <code>true_se</code> in estimates.csv).</p>",
        *(f'<p class="note">{html.escape(note)}</p>' for note in found.notes),
    ]
    if not found.summary.empty:
        parts.append("<h3>AUC estimates against the truth (all labelled folds and labels)</h3>")
        parts.append(frame_html(found.summary))
    if figure is not None:
        rel = figure.relative_to(results).as_posix()
        parts.append(f'<figure><img src="{html.escape(rel)}" alt="estimated vs true AUC" style="max-width:520px">'
                     "<figcaption>One point per fold, label and method; dashed: estimate = truth.</figcaption>"
                     "</figure>")  # fmt: skip
    unlabelled = found.table.loc[(found.table["metric"] == "auc") & ~found.table["labelled"].astype(bool)]
    if not unlabelled.empty:
        shown = unlabelled[["configuration", "arch", "test_set", "label", "method", "estimate", "ci_low",
                            "ci_high", "flag"]]  # fmt: skip
        parts += ["<h3>Unlabelled test sets: estimated AUC</h3>", frame_html(shown)]
    signals = found.table.loc[(found.table["metric"] == "auc") & (found.table["method"] == "cbpe")]
    if not signals.empty:  # one row per model, test set and label: the flag and what raised it
        keys = [k for k in ("configuration", "arch", "seed", "test_set", "label") if k in signals]
        parts += ["<h3>The flag's signals (per model, test set and label)</h3>",
                  frame_html(signals[[*keys, "flag", "flag_reasons", *SIGNALS, "embedding_note"]])]  # fmt: skip
    parts.append('<p class="meta">Behind this section: <a href="estimates.csv">estimates.csv</a>, '
                 '<a href="estimates_summary.csv">estimates_summary.csv</a>.</p>')  # fmt: skip
    return "\n".join(parts)


__all__ = ["Estimates", "estimates_html", "estimates_table", "scatter_figure", "summary_table", "write_estimates"]
