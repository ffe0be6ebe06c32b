"""``cxrgen report STUDY_DIR``: every table, figure and the HTML page into ``STUDY_DIR/results/``.

Every file is written atomically (temporary file in the same folder, then ``os.replace``), so a killed report
leaves each file either complete and new or complete and old, and a reader never sees half a CSV.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from cxrgen.data.cohort import describe
from cxrgen.metrics.meta_analysis import coverage_table, next_hospital_table
from cxrgen.report import figures as figs
from cxrgen.report import sections
from cxrgen.report.comparisons import comparisons as run_comparisons
from cxrgen.report.estimates import estimates_html, write_estimates
from cxrgen.report.findings import findings as claim_findings
from cxrgen.report.html import FigureFile, render_page
from cxrgen.report.inputs import Predictions, find_predictions, load_inputs, missing_predictions, unfinished_runs
from cxrgen.report.naming import model_label
from cxrgen.report.overview import overview_table, paper_shape
from cxrgen.report.seeds import combine_seeds, drawn_seed, seed_auc_table, seed_gaps
from cxrgen.report.shift_html import shift_html
from cxrgen.report.shift_tables import write_shift_results
from cxrgen.report.size_diversity import write_size_diversity
from cxrgen.report.tables import (
    auc_results,
    calibration_results,
    latex_table,
    markdown_table,
    study_labels,
    table1,
    table1_display,
)
from cxrgen.report.tripod import TripodInputs, development_table, link_shown, sample_size_table, tripod_checklist
from cxrgen.study.config import dump_resolved
from cxrgen.utils.fileio import write_csv, write_text
from cxrgen.utils.notes import Tally, collect_warnings

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
FIGURES = "figures"


def build_report(study_dir: Path, *, review: bool = True, progress: Progress | None = None) -> Path:
    """Evaluate every predictions file of a study and write the report into ``study_dir/results/``.

    Files written: ``overview.csv`` (the first table: per model and test set the mean AUC over labels, the
    internal-external gap, prevalence), ``findings.csv`` (the claims as tested statements), ``auc.csv`` (one
    row per predictions file and label, with ``seed`` when the study has several), ``missing.csv``
    (configured test sets without a predictions file), ``auc_seeds.csv`` (mean over seeds, seed SD, two-stage
    interval), ``next_hospital.csv`` and ``next_hospital_coverage.csv`` (meta-analysis of external AUCs),
    ``calibration.csv``, ``comparisons.csv``, ``cohort.csv``,
    ``table1.{md,csv,tex}``, ``figures/*.png`` (``roc_<arch>``, ``calibration_<arch>``,
    ``generalization_gap``, ``cohort_flow``, ``demographics``, ``training_curves``, ``review``), ``review.csv``
    (with the review),
    ``config.yaml`` (the resolved config the report used), ``tripod_ai.csv`` (the TRIPOD+AI checklist: item,
    sub_item, section, topic, status filled/to write, content, link), ``sample_size.csv`` (achieved interval
    widths against targets), ``development_vs_evaluation.csv`` (per dataset: role, prevalence, age, sex, views),
    ``notes.csv`` (the warnings the report raised, one row
    per kind with its count) and ``report.html``.

    Args:
        study_dir: A study directory holding ``config.yaml``, ``manifest.parquet`` and ``runs/``.
        review: Run the error review (loads checkpoints and images for Grad-CAM; the slow part).
        progress: Called with a short description before each step (e.g. to update a progress display).

    Returns:
        The results folder.

    Raises:
        CxrgenError: the directory lacks the config, the manifest or any predictions file.
        PredictionsError: a predictions file breaks the schema.
    """
    with collect_warnings() as tally:
        return _build(study_dir, review, progress or (lambda message: log.info("%s", message)), tally)


def training_curves(predictions: Sequence[Predictions]) -> dict[str, pd.DataFrame]:
    """``metrics.csv`` of every run with predictions, by ``configuration/arch[ seed N]``; runs without one (models
    trained elsewhere) are left out."""
    curves: dict[str, pd.DataFrame] = {}
    for pred in predictions:
        name = f"{pred.configuration}/{pred.arch}" + (f" seed {pred.seed}" if pred.seed is not None else "")
        path = pred.run.metrics
        if name not in curves and path.is_file():
            frame = pd.read_csv(path)
            if {"epoch", "train_loss", "val_auc_mean"} <= set(frame.columns) and not frame.empty:
                curves[name] = frame
    return curves


def _build(study_dir: Path, review: bool, say: Progress, tally: Tally) -> Path:
    say("read the study directory")
    inputs = load_inputs(study_dir)
    config = inputs.config
    results = inputs.study.dir.results
    figure_dir = results / FIGURES
    predictions = find_predictions(inputs)
    write_text(results / "config.yaml", dump_resolved(config))
    missing = missing_predictions(inputs, predictions)
    write_csv(missing, results / "missing.csv")
    unfinished = unfinished_runs(predictions)
    unfinished_pairs = {(p.configuration, p.arch) for p in predictions if p.unfinished}

    say(f"AUCs and intervals of {len(predictions)} predictions file(s)")
    several_seeds = any(p.seed is not None for p in predictions)
    if several_seeds:  # one auc.csv row per seed's file, with its seed
        auc = pd.concat([auc_results(inputs, [p]).assign(seed=p.seed) for p in predictions], ignore_index=True)
    else:
        auc = auc_results(inputs, predictions)
    write_csv(auc, results / "auc.csv")
    say("seed-aware intervals (two-stage bootstrap: seeds, then patients)")
    combined = combine_seeds(predictions)  # one entry per run, every seed's scores side by side
    seeds = seed_auc_table(config, combined)
    write_csv(seeds, results / "auc_seeds.csv")
    per_run = seeds.rename(columns={"se": "boot_se"}) if several_seeds else auc
    if several_seeds:
        calibration = pd.concat(
            [calibration_results([p], config.evaluation.ci).assign(seed=p.seed) for p in predictions],
            ignore_index=True,
        )
    else:
        calibration = calibration_results(predictions, config.evaluation.ci)
    write_csv(calibration, results / "calibration.csv")

    say("Table 1")
    numbers = table1(config, per_run)
    write_csv(numbers, results / "table1.csv")
    display = table1_display(config, numbers)
    level = f"{config.evaluation.ci * 100:g} %"
    caption = f"AUC-ROC [{level} CI, patient-clustered bootstrap] per label; paper values where published."
    write_text(results / "table1.md", f"{caption}\n\n{markdown_table(display)}")
    write_text(results / "table1.tex", latex_table(display, caption))

    say("comparisons (patient-clustered paired bootstrap, Holm-adjusted)")
    comparisons = run_comparisons(config, combined)
    write_csv(comparisons, results / "comparisons.csv")
    next_hospital = next_hospital_table(per_run, ci=config.evaluation.ci)
    write_csv(next_hospital, results / "next_hospital.csv")
    coverage = coverage_table(per_run, ci=config.evaluation.ci)
    write_csv(coverage, results / "next_hospital_coverage.csv")
    claims = claim_findings(config, comparisons, next_hospital, unfinished_runs=unfinished_pairs)
    write_csv(claims, results / "findings.csv")

    overview = overview_table(config, predictions)
    write_csv(overview, results / "overview.csv")
    shape_note = paper_shape(config, predictions)

    study_labels_present = [lab for lab in config.labels if lab in inputs.manifest]
    cohort = describe(inputs.manifest, inputs.splits, study_labels_present, inputs.reading_notes)
    write_csv(cohort, results / "cohort.csv")

    say("figures")
    labels = study_labels(config, auc)
    archs = list(dict.fromkeys(p.arch for p in predictions))
    datasets = list(dict.fromkeys(inputs.manifest["dataset"]))
    written: list[FigureFile] = []

    def save(fig: Figure, name: str, caption: str) -> None:
        written.append(FigureFile(figs.save_png(fig, figure_dir / f"{name}.png"), caption))

    save(
        figs.cohort_flow_figure(inputs.manifest, inputs.splits, inputs.excluded, datasets),
        "cohort_flow",
        "Images and patients per dataset and split (the paper's Figures 4-6).",
    )
    save(figs.demographics_figure(inputs.manifest, datasets), "demographics", "Age and sex per dataset (Figure 1).")
    shown = {arch: model_label(config, arch) for arch in archs}
    for arch in archs:
        mine = [p for p in combined if p.arch == arch]  # one curve per run: the first seed's scores
        drawn = drawn_seed(predictions, arch)
        which = f" ({drawn})" if drawn else ""
        also = "; the other seeds' AUCs are in auc.csv, their mean in auc_seeds.csv" if drawn else ""
        save(
            figs.roc_figure(mine, labels, f"ROC curves: {shown[arch]}{which}"),
            f"roc_{arch}",
            f"ROC curves of {shown[arch]}{which}, one panel per label (the paper's Figures 7-8){also}.",
        )
        save(
            figs.calibration_figure(mine, labels, f"Reliability: {shown[arch]}{which}"),
            f"calibration_{arch}",
            f"Reliability curves of {shown[arch]}{which} (10 equal-width probability bins){also}.",
        )
    if (comparisons["family"] == "internal_vs_external").any():
        spread = seed_gaps(auc)
        save(
            figs.gap_figure(comparisons, labels, archs, config.evaluation.ci, titles=shown, seed_gaps=spread,
                            unfinished=unfinished_pairs),
            "generalization_gap",
            "Internal minus external AUC with the unpaired test's interval; above 0 = worse on the other hospital."
            + (" Points: mean over the seeds; pale bars: the range of the per-seed gaps." if several_seeds else ""),
        )

    curves = training_curves(predictions)
    if curves:
        save(
            figs.training_curves_figure(curves),
            "training_curves",
            "Training loss and validation mean AUC per epoch, one line per run (from each run's metrics.csv; the "
            "same numbers are TensorBoard scalars in runs/<configuration>/<arch>/tensorboard/).",
        )

    review_result = None
    review_file = None
    if review:
        from cxrgen.report.review import error_review, review_figure

        say("error review (Grad-CAM)")
        review_result = error_review(inputs, predictions)
        if review_result is not None:
            write_csv(review_result.cases, results / "review.csv")
            fig = review_figure(review_result)
            if fig is not None:
                target = review_result.target
                review_file = FigureFile(
                    figs.save_png(fig, figure_dir / "review.png"),
                    f"Error review of {target.label}, {target.configuration}, {target.test_set}: image and "
                    "Grad-CAM per architecture.",
                )

    say("size vs sources (issue 25)")
    size_section = write_size_diversity(inputs, predictions, results)

    say("report.html")
    shift_tables = write_shift_results(inputs, predictions, results)  # issue 11: six CSVs, sections after the rest
    say("label-free estimates (before the labels)")
    estimates, estimates_png = write_estimates(inputs, predictions, results)  # issue 24
    say("TRIPOD+AI checklist")
    sample_size = sample_size_table(auc, calibration)
    write_csv(sample_size, results / "sample_size.csv")
    development = development_table(inputs)
    write_csv(development, results / "development_vs_evaluation.csv")
    checklist = tripod_checklist(TripodInputs(inputs, predictions, auc, calibration, next_hospital,
                                              shift_tables.tables, sample_size, development))
    page = [
        sections.header(config),
        sections.notices(unfinished, missing),
        sections.overview(config, overview),
        sections.findings(config, overview, shape_note),
        sections.paper_claims(claims, shape_note),
        sections.seeds(seeds),
        sections.next_hospital(next_hospital, coverage, unfinished_pairs),
        size_section,
        sections.cohort(cohort if not cohort.empty else None, written),
        sections.table1(config, numbers),
        sections.comparisons(comparisons, unfinished_pairs),
        sections.figures("ROC curves", written, lambda stem: stem.startswith("roc_")),
        sections.figures("Generalization gap", written, lambda stem: stem == "generalization_gap"),
        sections.calibration(written, calibration),
        sections.figures("Training curves", written, lambda stem: stem == "training_curves"),
        sections.review(review_result, review_file, requested=review),
        sections.shift(shift_html(shift_tables, config.evaluation.ci)),
        sections.shift(estimates_html(estimates, estimates_png, results)),
        sections.development(development),
    ]
    shown_html = [section.html() for section in page]
    checklist = link_shown(checklist, shown_html)  # a link to an omitted section would lead nowhere
    write_csv(checklist, results / "tripod_ai.csv")
    shown_html.append(sections.tripod(checklist).html())
    write_csv(tally.frame(), results / "notes.csv")
    shown_html.append(sections.notes(tally).html())  # last: it lists the warnings every step above raised
    write_text(results / "report.html", render_page(config.name, shown_html))
    return results
