"""``cxrgen report STUDY_DIR``: every table, figure and the HTML page into ``STUDY_DIR/results/``.

Every file is written atomically (temporary file in the same folder, then ``os.replace``), so a killed report
leaves each file either complete and new or complete and old, and a reader never sees half a CSV.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from matplotlib.figure import Figure

from cxrgen.cohort import describe
from cxrgen.config import dump_resolved
from cxrgen.fileio import write_csv, write_text
from cxrgen.report import figures as figs
from cxrgen.report.comparisons import comparisons as run_comparisons
from cxrgen.report.html import FigureFile, render_report
from cxrgen.report.inputs import find_predictions, load_inputs
from cxrgen.report.shift import add_shift_sections, write_shift_results
from cxrgen.report.tables import (
    auc_results,
    calibration_results,
    latex_table,
    markdown_table,
    study_labels,
    table1,
    table1_display,
)

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
RESULTS = "results"
FIGURES = "figures"


def build_report(study_dir: Path, *, review: bool = True, progress: Progress | None = None) -> Path:
    """Evaluate every predictions file of a study and write the report into ``study_dir/results/``.

    Files written: ``auc.csv``, ``calibration.csv``, ``comparisons.csv``, ``cohort.csv``,
    ``table1.{md,csv,tex}``, ``figures/*.png`` (``roc_<arch>``, ``calibration_<arch>``,
    ``generalization_gap``, ``cohort_flow``, ``demographics``, ``review``), ``review.csv`` (with the review),
    ``config.yaml`` (the resolved config the report used) and ``report.html``.

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
    say = progress or (lambda message: log.info("%s", message))
    study_dir = Path(study_dir)
    results = study_dir / RESULTS
    figure_dir = results / FIGURES

    say("read the study directory")
    inputs = load_inputs(study_dir)
    config = inputs.config
    predictions = find_predictions(inputs)
    write_text(results / "config.yaml", dump_resolved(config))

    say(f"AUCs and intervals of {len(predictions)} predictions file(s)")
    auc = auc_results(inputs, predictions)
    write_csv(auc, results / "auc.csv")
    calibration = calibration_results(predictions)
    write_csv(calibration, results / "calibration.csv")

    say("Table 1")
    numbers = table1(config, auc)
    write_csv(numbers, results / "table1.csv")
    display = table1_display(config, numbers)
    level = f"{config.evaluation.ci * 100:g} %"
    caption = f"AUC-ROC [{level} CI, patient-clustered bootstrap] per label; paper values where published."
    write_text(results / "table1.md", f"{caption}\n\n{markdown_table(display)}")
    write_text(results / "table1.tex", latex_table(display, caption))

    say("comparisons (DeLong tests, Holm-adjusted)")
    comparisons = run_comparisons(config, predictions)
    write_csv(comparisons, results / "comparisons.csv")

    cohort = describe(inputs.manifest, inputs.splits, [lab for lab in config.labels if lab in inputs.manifest])
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
    for arch in archs:
        mine = [p for p in predictions if p.arch == arch]
        save(
            figs.roc_figure(mine, labels, f"ROC curves: {arch}"),
            f"roc_{arch}",
            f"ROC curves of {arch}, one panel per label (the paper's Figures 7-8).",
        )
        save(
            figs.calibration_figure(mine, labels, f"Reliability: {arch}"),
            f"calibration_{arch}",
            f"Reliability curves of {arch} (10 equal-width probability bins).",
        )
    if (comparisons["family"] == "internal_vs_external").any():
        save(
            figs.gap_figure(comparisons, labels, archs, config.evaluation.ci),
            "generalization_gap",
            "Internal minus external AUC with the unpaired test's interval; above 0 = worse on the other hospital.",
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

    say("report.html")
    page = render_report(
        config, auc, comparisons, calibration, cohort if not cohort.empty else None, written, review_result, review_file
    )
    shift = write_shift_results(inputs, predictions, results)  # issue 11: six CSVs, sections after the rest
    write_text(results / "report.html", add_shift_sections(page, shift, config.evaluation.ci))
    return results
