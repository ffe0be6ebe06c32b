"""The report's figures, drawn with matplotlib's object API on the Agg canvas.

Figures are built as :class:`matplotlib.figure.Figure` objects, never through ``pyplot``: no global figure
registry to leak, no interactive backend to pick, so a report can be built on a headless server or inside a
notebook without changing the user's backend. Each function returns a figure; :func:`save_png` writes it
atomically.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from scipy.stats import norm

from cxrgen import metrics
from cxrgen.report.inputs import Predictions
from cxrgen.report.tables import CALIBRATION_BINS
from cxrgen.utils.fileio import atomic_path

DPI = 110
PANEL = 3.6  # inches per panel side
SPLIT_ORDER = ("train", "val", "test")


def new_figure(width: float, height: float) -> Figure:
    """A figure attached to an Agg canvas (so it can render) without touching pyplot's state."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG under ``path`` atomically (temporary file in the same folder, then rename).

    Every text is drawn literally: names come from users' files, and ``$...$`` in one would be parsed as
    mathtext (and crash the report when it is not valid TeX).
    """
    for text in fig.findobj(Text):
        text.set_parse_math(False)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _grid(count: int) -> tuple[int, int]:
    """(rows, columns) for ``count`` label panels: at most 3 per row, as in the paper's figures."""
    ncols = max(1, min(3, count))
    return max(1, math.ceil(count / ncols)), ncols


def _panels(fig: Figure, count: int) -> list[Axes]:
    """``count`` axes on the grid of :func:`_grid`; spare cells are hidden."""
    nrows, ncols = _grid(count)
    grid = fig.subplots(nrows, ncols, squeeze=False)
    axes = list(grid.ravel())
    for ax in axes[count:]:
        ax.set_visible(False)
    return axes[:count]


def _run_style(preds: Sequence[Predictions], pred: Predictions) -> dict[str, Any]:
    """One colour per configuration, solid for internal and dashed for external test sets."""
    configurations = list(dict.fromkeys(p.configuration for p in preds))
    colour = f"C{configurations.index(pred.configuration) % 10}"
    externals = list(dict.fromkeys(p.test_set for p in preds if p.kind == "external"))
    dashes = ["--", ":", "-."]
    style = "-" if pred.kind == "internal" else dashes[externals.index(pred.test_set) % len(dashes)]
    return {"color": colour, "linestyle": style}


def _curve_name(pred: Predictions) -> str:
    return f"{pred.configuration} / {pred.test_set}" + (" (unfinished)" if pred.unfinished else "")


def _label_panels(labels: Sequence[str]) -> tuple[Figure, list[tuple[Any, str]]]:
    """A figure with one panel per label, and the (axes, label) pairs to draw into."""
    nrows, ncols = _grid(len(labels))
    fig = new_figure(PANEL * ncols, PANEL * nrows + 0.4)
    return fig, list(zip(_panels(fig, len(labels)), labels, strict=True))


def _scores(preds: Sequence[Predictions], label: str) -> Iterator[tuple[Predictions, np.ndarray, np.ndarray]]:
    """``(file, y, p)`` for every predictions file that carries ``label``."""
    for pred in preds:
        if label in pred.labels:
            yield pred, pred.frame[f"y_{label}"].to_numpy(), pred.frame[f"p_{label}"].to_numpy()


def roc_figure(preds: Sequence[Predictions], labels: Sequence[str], title: str) -> Figure:
    """ROC curves in the layout of the paper's Figures 7-8: one panel per label, one curve per run x test set.

    ``preds`` are the predictions files of one architecture. The legend carries each curve's AUC, computed by
    :func:`cxrgen.metrics.roc_curve_points` (identical to ``auc.csv``).
    """
    fig, panels = _label_panels(labels)
    for ax, label in panels:
        for pred, y, p in _scores(preds, label):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", metrics.OneClassWarning)  # the curve is left out; auc.csv says NaN
                curve = metrics.roc_curve_points(y, p)
            if not curve.fpr.size:
                continue
            ax.plot(
                curve.fpr, curve.tpr, lw=1.3, label=f"{_curve_name(pred)} ({curve.auc:.3f})", **_run_style(preds, pred)
            )
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, linestyle=":")
        ax.set(title=label, xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
        ax.legend(fontsize=6.5, loc="lower right", title="configuration / test set (AUC)", title_fontsize=6.5)
    fig.suptitle(title)
    return fig


def calibration_figure(preds: Sequence[Predictions], labels: Sequence[str], title: str) -> Figure:
    """Reliability curves (observed positive rate against mean predicted probability), one panel per label."""
    fig, panels = _label_panels(labels)
    for ax, label in panels:
        for pred, y, p in _scores(preds, label):
            curve = metrics.reliability_curve(y, p, n_bins=CALIBRATION_BINS, name=label)
            filled = curve.count > 0
            ax.plot(
                curve.mean_predicted[filled],
                curve.fraction_positive[filled],
                marker="o",
                markersize=3,
                lw=1.2,
                label=_curve_name(pred),
                **_run_style(preds, pred),
            )
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, linestyle=":")
        ax.set(title=label, xlabel="mean predicted probability", ylabel="fraction positive", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=6.5, loc="upper left")
    fig.suptitle(title)
    return fig


def gap_figure(
    comparisons: pd.DataFrame,
    labels: Sequence[str],
    architectures: Sequence[str],
    ci: float,
    titles: Mapping[str, str] | None = None,
    *,
    seed_gaps: pd.DataFrame | None = None,
    unfinished: Collection[tuple[str, str]] = (),
) -> Figure:
    """Generalization gap (internal minus external AUC) per label, configuration and architecture.

    The point is the gap of ``comparisons.csv`` (with several seeds: the seed mean) and the thin bar
    ``gap +- z se`` with the standard error of the unpaired test (patient-clustered, two-stage over seeds when
    there are several). With ``seed_gaps`` (:func:`cxrgen.report.seeds.seed_gaps`) a wide pale bar spans the
    range of the per-seed gaps, each seed a small tick, so training noise is seen beside patient noise. A point
    above 0 means the model lost AUC on the other hospital. Series of ``unfinished`` (configuration, arch) runs
    are drawn hollow and say "(unfinished)" in the legend.
    """
    gaps = comparisons.loc[comparisons["family"] == "internal_vs_external"]
    per_seed = seed_gaps if seed_gaps is not None else pd.DataFrame(columns=["configuration", "arch", "seed"])
    n_seeds = int(per_seed["seed"].nunique())
    z = float(norm.ppf(0.5 + ci / 2.0))
    fig = new_figure(max(6.0, 1.3 * len(labels) + 2.5), 3.2 * max(1, len(architectures)))
    axes = fig.subplots(max(1, len(architectures)), 1, squeeze=False).ravel()
    series = list(dict.fromkeys(zip(gaps["configuration_a"], gaps["test_set_b"], strict=True)))
    width = 0.8 / max(1, len(series))
    for ax, arch in zip(axes, architectures, strict=False):
        part = gaps.loc[gaps["arch_a"] == arch]
        for k, (configuration, test_set) in enumerate(series):
            rows = part.loc[(part["configuration_a"] == configuration) & (part["test_set_b"] == test_set)]
            rows = rows.set_index("label").reindex(list(labels))
            x = np.arange(len(labels)) - 0.4 + width * (k + 0.5)
            colour = f"C{k % 10}"
            hollow = (configuration, arch) in unfinished
            name = f"{configuration}: internal - {test_set}" + (" (unfinished)" if hollow else "")
            mine = per_seed.loc[(per_seed["configuration"] == configuration) & (per_seed["arch"] == arch)
                                & (per_seed["test_set"] == test_set)]  # fmt: skip
            seeds_here = int(mine["seed"].nunique())
            ax.errorbar(
                x,
                rows["difference"],
                yerr=z * rows["se"],
                fmt="o",
                capsize=3,
                color=colour,
                markerfacecolor="white" if hollow else colour,
                label=name + (f", mean of {seeds_here} seeds" if seeds_here > 1 else ""),
            )
            if seeds_here > 1:
                spread = mine.groupby("label")["gap"].agg(["min", "max"]).reindex(list(labels))
                band = ax.vlines(x, spread["min"], spread["max"], colors=colour, lw=7, alpha=0.3)
                band.set_gid(f"seed-range {configuration} {arch} {test_set}")
                ticks = mine.assign(x=mine["label"].map(dict(zip(labels, x, strict=True))))
                ax.scatter(ticks["x"], ticks["gap"], marker="_", s=90, color=colour, lw=1.2)
        ax.axhline(0.0, color="0.5", lw=0.8)
        ax.set_xticks(np.arange(len(labels)), list(labels))
        ax.set(ylabel=f"AUC gap ({ci * 100:g} % CI)", title=(titles or {}).get(arch, arch))
        ax.legend(fontsize=7, loc="best")
    what = f"\npale bars: range of the per-seed gaps over {n_seeds} seeds, ticks: each seed" if n_seeds > 1 else ""
    fig.suptitle(f"Generalization gap: internal minus external AUC{what}")
    return fig


def _box(ax: Axes, x: float, y: float, text: str, colour: str) -> None:
    ax.text(x, y, text, ha="center", va="center", fontsize=8, bbox={"boxstyle": "round", "fc": colour, "ec": "0.4"})


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float]) -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "->", "color": "0.3"})


def cohort_flow_figure(
    manifest: pd.DataFrame, splits: pd.DataFrame | None, excluded: pd.DataFrame | None, datasets: Sequence[str]
) -> Figure:
    """The paper's Figures 4-6: per dataset, all images and patients flowing into train, val and test.

    Images that failed to decode (``excluded.csv``) are shown as a side box; they stay in their split's count
    since the split is made before images are read.
    """
    fig = new_figure(4.2 * max(1, len(datasets)), 3.4)
    axes = fig.subplots(1, max(1, len(datasets)), squeeze=False).ravel()
    split_of = splits.set_index("image_id")["split"] if splits is not None else None
    bad = set(excluded["image_id"]) if excluded is not None else set()
    for ax, dataset in zip(axes, datasets, strict=False):
        ax.set_axis_off()
        ax.set(xlim=(0, 1), ylim=(0, 1))
        rows = manifest.loc[manifest["dataset"] == dataset]
        _box(ax, 0.5, 0.85, f"{dataset}\n{len(rows):,} images\n{rows['patient_id'].nunique():,} patients", "#dde8f5")
        n_bad = int(rows["image_id"].isin(bad).sum())
        if n_bad:
            _box(ax, 0.88, 0.55, f"excluded\n{n_bad:,} images", "#f5dddd")
            _arrow(ax, (0.62, 0.78), (0.85, 0.61))
        if split_of is None:
            continue
        assigned = rows.assign(split=rows["image_id"].map(split_of))
        present = [s for s in SPLIT_ORDER if (assigned["split"] == s).any()]
        for i, split in enumerate(present):
            part = assigned.loc[assigned["split"] == split]
            x = (i + 0.5) / len(present)
            _box(ax, x, 0.25, f"{split}\n{len(part):,} images\n{part['patient_id'].nunique():,} patients", "#e6f2e1")
            _arrow(ax, (0.5, 0.72), (x, 0.38))
    fig.suptitle("Images and patients per dataset and split")
    return fig


def demographics_figure(manifest: pd.DataFrame, datasets: Sequence[str]) -> Figure:
    """The paper's Figure 1: age distribution and sex proportions per dataset."""
    fig = new_figure(10.0, 3.6)
    ax_age, ax_sex = fig.subplots(1, 2, width_ratios=[1.6, 1.0])
    bins = np.arange(0, 105, 5)
    for k, dataset in enumerate(datasets):
        ages = manifest.loc[manifest["dataset"] == dataset, "age"].dropna().to_numpy(dtype=np.float64)
        if ages.size:
            ax_age.hist(ages, bins=bins, density=True, histtype="step", lw=1.5, color=f"C{k % 10}", label=dataset)
    ax_age.set(xlabel="age (years)", ylabel="density", title="Age")
    ax_age.legend(fontsize=8)
    sexes = ("M", "F", "U")
    width = 0.8 / max(1, len(datasets))
    for k, dataset in enumerate(datasets):
        counts = manifest.loc[manifest["dataset"] == dataset, "sex"].value_counts(normalize=True)
        shares = [100.0 * float(counts.get(s, 0.0)) for s in sexes]
        ax_sex.bar(np.arange(len(sexes)) - 0.4 + width * (k + 0.5), shares, width, color=f"C{k % 10}", label=dataset)
    ax_sex.set_xticks(np.arange(len(sexes)), ["male", "female", "unknown"])
    ax_sex.set(ylabel="% of images", title="Sex")
    ax_sex.legend(fontsize=8)
    return fig


def training_curves_figure(curves: Mapping[str, pd.DataFrame]) -> Figure:
    """Training loss and validation mean AUC per epoch, one line per run (``metrics.csv`` of each run folder).

    Args:
        curves: run name (``configuration/arch[ seed N]``) -> its ``metrics.csv`` (``epoch``, ``train_loss``,
            ``val_loss``, ``val_auc_mean``). A NaN validation AUC (one class in the validation set) leaves a gap.
    """
    fig = new_figure(2 * PANEL + 1.6, PANEL)
    loss, auc = fig.subplots(1, 2)
    for name, frame in curves.items():
        line = loss.plot(frame["epoch"], frame["train_loss"], marker="o", markersize=3, label=name)[0]
        if "val_loss" in frame:
            loss.plot(frame["epoch"], frame["val_loss"], linestyle=":", color=line.get_color())
        auc.plot(frame["epoch"], frame["val_auc_mean"], marker="o", markersize=3, color=line.get_color())
    loss.set(xlabel="epoch", ylabel="binary cross-entropy", title="Loss (solid: training, dotted: validation)")
    auc.set(xlabel="epoch", ylabel="mean AUC over labels", title="Validation AUC")
    for ax in (loss, auc):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    fig.legend(loc="outside right center", fontsize="small")
    return fig
