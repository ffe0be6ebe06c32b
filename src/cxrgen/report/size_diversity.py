"""More data or more diverse data? ``results/size_vs_sources.csv``, its figure and report section (issue 25).

The runs of a ``size_matched`` or ``learning_curve`` design are scored on their external test sets; per test set,
architecture and label, every run is rescored on the same patient resamples (drawn once per test set,
``evaluation.bootstrap`` of them, ``evaluation.seed``) and :func:`cxrgen.metrics.size_diversity.fit_size_diversity`
fits the two slopes. When the study also holds a union of hospitals and each of them alone at full size
(hand-written configurations or ``leave_one_out`` with ``single_sources``), the union's external gain is
re-tested against its size (:func:`cxrgen.metrics.size_diversity.union_vs_size`).

Files: ``size_vs_sources.csv`` (the two effects), ``size_vs_sources_runs.csv`` (one row per run, seed, external
test set and label: ``n``, ``k``, AUC), ``union_vs_size.csv`` (the re-tested claim) and
``figures/size_vs_sources.png``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrgen.metrics.clustered import resampled_aucs
from cxrgen.metrics.size_diversity import SizeDiversityFit, fit_size_diversity, union_vs_size
from cxrgen.report import figures as figs
from cxrgen.report.html import FigureFile, esc, figure_html, frame_html
from cxrgen.report.inputs import Predictions, StudyInputs
from cxrgen.report.sections import Section
from cxrgen.study.config import Configuration
from cxrgen.utils.fileio import write_csv

log = logging.getLogger(__name__)
TITLE = "More data or more diverse data?"


def _training_counts(inputs: StudyInputs) -> pd.Series:
    """Usable training images per dataset (split train, excluded images left out)."""
    if inputs.splits is None:
        return pd.Series(dtype=int)
    rows = inputs.splits[inputs.splits["split"] == "train"]
    if inputs.excluded is not None:
        rows = rows[~rows["image_id"].isin(set(inputs.excluded["image_id"]))]
    return rows.groupby("dataset").size()


def _train_size(inputs: StudyInputs, conf: Configuration, counts: pd.Series) -> int:
    """Training images of a run: its recorded subsample's, else every usable training image of its datasets."""
    path = inputs.study.dir.subsample(conf.name)
    if conf.subsample is not None and path.is_file():
        return int((pd.read_parquet(path, columns=["split"])["split"] == "train").sum())
    if conf.subsample is not None and conf.subsample.n is not None:
        return conf.subsample.n
    return int(sum(int(counts.get(d, 0)) for d in conf.train))


def _union_and_singles(configurations: Sequence[Configuration]) -> dict[str, list[str]]:
    """Full-size unions (two or more datasets) whose every dataset also trains alone: union -> its singles."""
    plain = [c for c in configurations if c.subsample is None]
    alone = {c.train[0]: c.name for c in plain if len(c.train) == 1}
    return {c.name: [alone[d] for d in c.train] for c in plain if len(c.train) > 1 and all(d in alone for d in c.train)}


def score_runs(inputs: StudyInputs, predictions: Sequence[Predictions], names: set[str]) -> pd.DataFrame:
    """Per external (test set, arch, label), every named run's AUC and its AUCs on shared patient resamples.

    Returns one row per (configuration, arch, seed, test set, label): ``auc`` and ``boot`` (an array of
    ``evaluation.bootstrap`` AUCs, the same patient draws for every run on that test set).
    """
    evaluation = inputs.config.evaluation
    n_boot = max(evaluation.bootstrap, 2)
    chosen = [p for p in predictions if p.kind == "external" and p.configuration in names]
    rows = []
    groups: dict[tuple[str, str], list[Predictions]] = {}
    for pred in chosen:
        groups.setdefault((pred.test_set, pred.arch), []).append(pred)
    for (test_set, arch), members in sorted(groups.items()):
        shared = set.intersection(*(set(p.frame["image_id"]) for p in members))
        base = members[0].frame.set_index("image_id").loc[sorted(shared)]
        for label in members[0].labels:
            if any(label not in p.labels for p in members):
                continue
            scores = np.stack([p.frame.set_index("image_id").loc[base.index, f"p_{label}"].to_numpy() for p in members])
            point, samples, _ = resampled_aucs(
                base[f"y_{label}"].to_numpy(dtype=float), scores, base["patient_id"].astype(str).to_numpy(),
                n_boot=n_boot, seed=evaluation.seed, name=label,
            )  # fmt: skip
            for j, pred in enumerate(members):
                rows.append({"configuration": pred.configuration, "arch": arch, "seed": pred.seed or 0,
                             "test_set": test_set, "label": label, "auc": point[j], "boot": samples[:, j]})  # fmt: skip
    return pd.DataFrame(rows, columns=["configuration", "arch", "seed", "test_set", "label", "auc", "boot"])


def size_vs_sources_figure(runs: pd.DataFrame) -> figs.Figure:
    """External AUC (mean over combinations, replicates, seeds, test sets and labels) against training size,
    one line per number of sources."""
    fig = figs.new_figure(5.4, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    for (design, k), part in runs.groupby(["design", "k"], sort=True):
        means = part.groupby("n")["auc"].agg(["mean", "sem", "count"]).reset_index()
        name = f"k = {k} source{'s' if k > 1 else ''}" if design == "size_matched" else f"learning curve (k = {k})"
        ax.errorbar(means["n"], means["mean"], yerr=means["sem"].fillna(0), marker="o", capsize=3, label=name,
                    linestyle="-" if design == "size_matched" else "--")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training images n (log2 scale)")
    ax.set_ylabel("external AUC (mean)")
    ax.set_title("External AUC against training size")
    ax.legend(fontsize=8)
    return fig


def _effects_html(fit: SizeDiversityFit, ci: float) -> str:
    level = f"{ci * 100:g} %"
    items = []
    for _, row in fit.effects.iterrows():
        if np.isnan(row["auc_change"]):
            items.append(f"<li><b>{esc(row['effect'])}</b>: not estimable from this design</li>")
            continue
        items.append(
            f"<li><b>{esc(row['effect'])}</b>: {row['auc_change']:+.4f} AUC [{level} CI {row['auc_low']:+.4f}, "
            f"{row['auc_high']:+.4f}] (logit {row['logit_coef']:+.3f}); {esc(row['verdict'])}</li>"
        )
    model = {
        "mixed": "a mixed model with a random intercept per source combination",
        "ols-cluster": "OLS with errors clustered by source combination (too few combinations for a random effect)",
        "ols-hc1": "OLS with robust standard errors (one combination)",
        "none": "no model (too few runs)",
    }
    seeds = (
        " with the seeds redrawn"
        if fit.n_seeds > 1
        else "; with one seed, training variance is counted only through the replicates"
    )
    return (
        f'<ul>{"".join(items)}</ul><p class="note">Regression of external logit AUC on log2 n and k with one '
        f"intercept per (test set, label, architecture), by {esc(model.get(fit.model, fit.model))}, over "
        f"{fit.n_rows} (run, seed, test set, label) AUCs from {fit.n_combinations} source combination(s) and "
        f"{fit.n_seeds} seed(s). Intervals add the model's variance to that of {fit.n_boot} refits on patient "
        "resamples shared within each test set"
        + seeds
        + " (conservative). AUC changes are read at the design's mean external AUC. External test sets are "
        "hospitals outside each run's training set; with external: leave_out each hospital is compared only "
        "across the runs that never train on it. Every size trains the same number of optimizer steps (fine-tuned "
        "runs; linear probes are fitted to convergence).</p>"
    )


def write_size_diversity(inputs: StudyInputs, predictions: Sequence[Predictions], results: Path) -> Section:
    """Write the size-vs-sources files and return the report section ("" body when the study has no such design)."""
    config = inputs.config
    designed = {c.name: c for c in config.configurations if c.subsample is not None}
    if not designed:
        return Section(TITLE, "")
    counts = _training_counts(inputs)
    unions = _union_and_singles(config.configurations)
    names = set(designed) | set(unions) | {s for singles in unions.values() for s in singles}
    scored = score_runs(inputs, predictions, names)
    by_name = {c.name: c for c in config.configurations}
    sizes = {name: _train_size(inputs, by_name[name], counts) for name in names}
    scored["n"] = scored["configuration"].map(sizes)
    scored["k"] = scored["configuration"].map(lambda c: len(by_name[c].train))
    scored["combination"] = scored["configuration"].map(lambda c: "+".join(by_name[c].train))
    scored["design"] = scored["configuration"].map(
        lambda c: by_name[c].subsample.design if by_name[c].subsample is not None else "full"  # type: ignore[union-attr]
    )
    runs = scored[scored["configuration"].isin(designed)].reset_index(drop=True)
    write_csv(runs.drop(columns="boot"), results / "size_vs_sources_runs.csv")
    ci = config.evaluation.ci
    fit = fit_size_diversity(runs, np.stack(runs["boot"].to_list()) if len(runs) else None, ci=ci)
    effects = fit.effects.assign(model=fit.model, n_rows=fit.n_rows, n_combinations=fit.n_combinations,
                                 n_seeds=fit.n_seeds, n_boot=fit.n_boot)  # fmt: skip
    write_csv(effects, results / "size_vs_sources.csv")
    body = _effects_html(fit, ci)
    files = ["size_vs_sources.csv", "size_vs_sources_runs.csv"]
    if len(runs):
        figure = FigureFile(
            figs.save_png(size_vs_sources_figure(runs), results / "figures" / "size_vs_sources.png"),
            "External AUC against training size, one line per number of sources (means with standard errors over "
            "combinations, replicates, seeds, external hospitals and labels).",
        )
        body += figure_html(figure)
    claim = _claim(scored, unions, fit, ci)
    write_csv(claim, results / "union_vs_size.csv")
    body += "<h3>The paper's claim, re-tested: does the union gain more than its size predicts?</h3>"
    if claim.empty:
        body += (
            "<p>Not testable here: the study has no full-size union of hospitals beside each of them alone "
            "(add them, e.g. <code>configurations</code> or <code>leave_one_out</code> with "
            "<code>single_sources</code>).</p>"
        )
    else:
        shown = claim[["union", "test_set", "label", "arch", "n_union", "n_single", "observed_gain",
                       "size_predicted_gain", "excess", "verdict"]]  # fmt: skip
        body += frame_html(shown, digits=4)
        files.append("union_vs_size.csv")
    return Section(TITLE, body, tuple(files))


def mean_over_seeds(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (configuration, arch, test set, label): AUC and resampled AUCs averaged over seeds."""
    return (
        frame.groupby(["configuration", "arch", "test_set", "label"], sort=True)
        .agg(auc=("auc", "mean"), n=("n", "first"), boot=("boot", lambda b: np.mean(np.stack(list(b)), 0)))
        .reset_index()
    )


def _claim(scored: pd.DataFrame, unions: dict[str, list[str]], fit: SizeDiversityFit, ci: float) -> pd.DataFrame:
    parts = []
    for union, singles in unions.items():
        mine = mean_over_seeds(scored[scored["configuration"] == union])
        alone = mean_over_seeds(scored[scored["configuration"].isin(singles)])
        if mine.empty or alone.empty:
            continue
        # Only cells where every single source is scored too (an external set outside all of them).
        complete = alone.groupby(["arch", "test_set", "label"])["configuration"].nunique() == len(singles)
        keep = complete[complete].index
        indexed = alone.set_index(["arch", "test_set", "label"])
        alone = indexed[indexed.index.isin(keep)].reset_index()
        out = union_vs_size(mine, alone, fit, ci=ci)
        if not out.empty:
            parts.append(out.assign(union=union, singles="+".join(singles)))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
