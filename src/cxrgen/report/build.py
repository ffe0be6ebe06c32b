"""``cxrgen report STUDY_DIR``: every table, figure and the HTML page into ``STUDY_DIR/results/``.

Every file is written atomically (temporary file in the same folder, then ``os.replace``), so a killed report
leaves each file either complete and new or complete and old, and a reader never sees half a CSV.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from cxrgen.data.cohort import describe
from cxrgen.errors import CxrgenError
from cxrgen.metrics.meta_analysis import coverage_table, next_hospital_table
from cxrgen.report import figures as figs
from cxrgen.report import sections
from cxrgen.report.comparisons import Pair, boot_settings, comparison_pairs, holm_table, pair_rows
from cxrgen.report.estimates import estimates_html, write_estimates
from cxrgen.report.findings import findings as claim_findings
from cxrgen.report.html import FigureFile, render_page
from cxrgen.report.inputs import (
    Predictions,
    StudyInputs,
    find_predictions,
    load_inputs,
    missing_predictions,
    unfinished_runs,
)
from cxrgen.report.naming import model_label
from cxrgen.report.overview import label_free_auc, overview_table, paper_shape
from cxrgen.report.seeds import combine_seeds, drawn_seed, seed_auc_table, seed_gaps
from cxrgen.report.shift_html import shift_html
from cxrgen.report.shift_tables import (
    FileShift,
    assemble_shift,
    shift_file,
    truth_table,
    write_shift_tables,
)
from cxrgen.report.size_diversity import TITLE as SIZE_TITLE
from cxrgen.report.size_diversity import write_size_diversity
from cxrgen.report.tables import (
    auc_results,
    calibration_results,
    latex_table,
    markdown_table,
    table1,
    table1_display,
)
from cxrgen.report.tripod import TripodInputs, development_table, link_shown, sample_size_table, tripod_checklist
from cxrgen.report.units import SectionProgress, Unit, UnitCache, file_stamp, fingerprint
from cxrgen.shift.label_files import LabelFiles
from cxrgen.study.config import StudyConfig, dump_resolved
from cxrgen.study.layout import DatasetDir
from cxrgen.utils.fileio import write_bytes, write_csv, write_text
from cxrgen.utils.notes import Tally, collect_warnings

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
FIGURES = "figures"

#: The sections ``cxrgen report --only`` selects, in the page's order, with the files each writes.
SECTIONS: dict[str, str] = {
    "auc": "auc.csv (AUC and intervals per predictions file and label)",
    "seeds": "auc_seeds.csv (mean over seeds, seed SD, two-stage interval)",
    "calibration": "calibration.csv",
    "table1": "table1.{csv,md,tex}",
    "comparisons": "comparisons.csv (DeLong and bootstrap tests, Holm per family)",
    "next_hospital": "next_hospital.csv, next_hospital_coverage.csv",
    "size_vs_sources": "size_vs_sources.csv, size_vs_sources_runs.csv, union_vs_size.csv, figures/size_vs_sources.png",
    "findings": "findings.csv (the paper's claims as tested statements)",
    "overview": "overview.csv",
    "cohort": "cohort.csv",
    "missing": "missing.csv",
    "figures": "figures/*.png (cohort flow, demographics, ROC, reliability, generalization gap, training curves)",
    "review": "review.csv, figures/review.png (the error review with Grad-CAM)",
    "shift": "the six shift CSVs (protocols, operating points, calibration shift, subgroups, shortcut, borderline)",
    "estimates": "estimates.csv, estimates_summary.csv, figures/estimates.png (label-free estimates)",
    "tripod": "tripod_ai.csv, sample_size.csv, development_vs_evaluation.csv (the TRIPOD+AI checklist)",
    "html": "report.html and notes.csv (needs every other section)",
}
#: What a section's numbers are computed from (other sections; computed, or read from the cache, not written).
NEEDS: dict[str, tuple[str, ...]] = {
    "table1": ("auc", "seeds"),
    "next_hospital": ("auc", "seeds"),
    "findings": ("comparisons", "next_hospital"),
    "figures": ("auc", "comparisons"),
    # the checklist reads the tables and links only to sections the page shows (review and the uncached parts
    # are no link targets)
    "tripod": ("auc", "seeds", "calibration", "table1", "comparisons", "next_hospital", "findings", "overview",
               "cohort", "missing", "figures", "shift"),
    "html": tuple(name for name in SECTIONS if name != "html"),
}
#: Config settings that no cached unit depends on (the runs' own facts travel in each unit's fingerprint).
_NOT_READ = ("name", "out", "architectures", "train", "configurations", "design", "splits", "preprocess",
             "launcher", "probe", "review", "verify")


def parse_sections(text: str | None) -> list[str] | None:
    """``"findings,auc"`` -> ``["findings", "auc"]``; None or empty -> None (every section).

    Raises:
        CxrgenError: an unknown name; the message lists the known ones.
    """
    if text is None or not text.strip():
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        raise CxrgenError(f"--only: unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    return list(dict.fromkeys(names))


def _closure(selected: Collection[str]) -> set[str]:
    needed, todo = set(), list(selected)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo += NEEDS.get(name, ())
    return needed


def build_report(
    study_dir: Path,
    *,
    review: bool = True,
    progress: Progress | None = None,
    only: Sequence[str] | None = None,
    workers: int = 1,
    cache: bool = True,
    sections_progress: SectionProgress | None = None,
) -> Path:
    """Evaluate every predictions file of a study and write the report into ``study_dir/results/``.

    Files written: ``overview.csv`` (the first table: per model and test set the mean AUC over labels, the
    internal-external gap, prevalence), ``findings.csv`` (the claims as tested statements), ``auc.csv`` (one
    row per predictions file and label, with ``seed`` when the study has several), ``missing.csv``
    (configured test sets without a predictions file), ``auc_seeds.csv`` (mean over seeds, seed SD, two-stage
    interval), ``next_hospital.csv`` and ``next_hospital_coverage.csv`` (meta-analysis of external AUCs),
    ``calibration.csv``, ``comparisons.csv``, ``cohort.csv``,
    ``table1.{md,csv,tex}``, ``figures/*.png`` (``roc_<arch>``, ``calibration_<arch>``,
    ``generalization_gap``, ``cohort_flow``, ``demographics``, ``training_curves``, ``review``, ``estimates``,
    ``size_vs_sources``), ``review.csv`` (with the review), ``estimates.csv`` and ``estimates_summary.csv``
    (label-free estimates), ``size_vs_sources.csv``, ``size_vs_sources_runs.csv`` and ``union_vs_size.csv`` (when
    the study has a size-versus-sources design), ``config.yaml`` (the resolved config the report used),
    ``tripod_ai.csv`` (the TRIPOD+AI checklist: item, sub_item, section, topic, status filled/to write, content,
    link), ``sample_size.csv`` (achieved interval widths against targets), ``development_vs_evaluation.csv`` (per
    dataset: role, prevalence, age, sex, views), ``notes.csv`` (the warnings the report raised, one row per kind
    with its count) and ``report.html``.

    The per-file, per-run and per-pair pieces (AUCs, calibration, seeds, comparisons, shift analyses, figures) are
    cached under ``results/.cache/`` by the fingerprint of their inputs (see :mod:`cxrgen.report.units`); the
    training curves, label-free estimates, size-versus-sources analysis and TRIPOD+AI checklist are computed each
    time.

    Args:
        study_dir: A study directory holding ``config.yaml``, ``manifest.parquet`` and ``runs/``.
        review: Run the error review (loads checkpoints and images for Grad-CAM; the slow part).
        progress: Called with a short description before each step (e.g. to update a progress display).
        only: Write only these sections (names of :data:`SECTIONS`); what they need is computed or read from the
            cache but not written (uncached parts needed by ``html`` are drawn in a temporary folder). None: every
            section, and cache entries no longer used are removed.
        workers: Processes computing the sections' pieces (1: in this process). The files do not depend on it.
        cache: Read and write ``results/.cache/``; False computes everything and leaves the cache alone.
        sections_progress: Told each section's number of pieces and each piece done (progress bars).

    Returns:
        The results folder.

    Raises:
        CxrgenError: the directory lacks the config, the manifest or any predictions file; an unknown section.
        PredictionsError: a predictions file breaks the schema.
    """
    selected = list(SECTIONS) if only is None else parse_sections(",".join(only)) or list(SECTIONS)
    with collect_warnings() as tally:
        say = progress or (lambda message: log.info("%s", message))
        return _Report(study_dir, review, say, tally, selected, workers, cache, sections_progress).build()


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


class _Report:
    """One run of the report: inputs read once, units fingerprinted, sections written as selected."""

    def __init__(self, study_dir: Path, review: bool, say: Progress, tally: Tally, selected: list[str],
                 workers: int, cache: bool, bars: SectionProgress | None) -> None:
        self.say, self.tally, self.review = say, tally, review
        self.selected = set(selected)
        self.full = self.selected == set(SECTIONS)
        self.needed = _closure(selected)
        self.workers, self.bars = max(1, workers), bars
        say("read the study directory")
        self.inputs = load_inputs(study_dir)
        self.config: StudyConfig = self.inputs.config
        self.results = self.inputs.study.dir.results
        self.cache = UnitCache(self.results, enabled=cache)
        self.predictions = find_predictions(self.inputs)
        layout = self.inputs.study.dir
        base = layout.path
        self.base = base
        dumped = self.config.model_dump(mode="json")
        self.settings = {key: value for key, value in dumped.items() if key not in _NOT_READ}
        self.study_stamp = [file_stamp(path, base)
                            for path in (layout.manifest, layout.splits, layout.excluded, layout.reading_notes)]
        self.truth_stamp = [file_stamp(DatasetDir(Path(spec.root)).truth) for spec in self.config.datasets.values()]
        self.several_seeds = any(p.seed is not None for p in self.predictions)
        self._temporary: tempfile.TemporaryDirectory[str] | None = None

    def _scratch(self) -> Path:
        """A folder for files a section needs but is not asked to write (removed with the report's end)."""
        if self._temporary is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="cxrgen-report-")
        return Path(self._temporary.name)

    # -- fingerprints ------------------------------------------------------------------------------------------
    def _facts(self, pred: Predictions) -> list[object]:
        """What a (possibly seed-combined) predictions entry is: its names and every file behind it."""
        files = [p for p in self.predictions if p.key == pred.key and (pred.seed is None or p.seed == pred.seed)]
        return [pred.configuration, pred.arch, pred.test_set, pred.kind, list(pred.datasets), pred.seed,
                pred.unfinished, pred.labels, [file_stamp(p.path, self.base) for p in files]]

    def _key(self, section: str, *parts: object) -> str:
        return fingerprint(section, self.settings, *parts)

    def _name(self, pred: Predictions) -> str:
        seed = f"/seed_{pred.seed}" if pred.seed is not None else ""
        return f"{pred.configuration}/{pred.arch}{seed}/{pred.test_set}"

    # -- the report --------------------------------------------------------------------------------------------
    def build(self) -> Path:
        try:
            return self._build()
        finally:
            if self._temporary is not None:
                self._temporary.cleanup()

    def _build(self) -> Path:
        inputs, config, results, predictions = self.inputs, self.config, self.results, self.predictions
        needed, want = self.needed, self.selected.__contains__
        write_text(results / "config.yaml", dump_resolved(config))
        missing = missing_predictions(inputs, predictions)
        if want("missing"):
            write_csv(missing, results / "missing.csv")
        unfinished = unfinished_runs(predictions)
        unfinished_pairs = {(p.configuration, p.arch) for p in predictions if p.unfinished}
        combined = combine_seeds(predictions)  # one entry per run, every seed's scores side by side
        several = self.several_seeds

        units: list[Unit] = []
        if "auc" in needed:
            units += [self._auc_unit(p) for p in predictions]
        if "seeds" in needed:
            units += [Unit("seeds", self._name(c), self._key("seeds", self._facts(c)),
                           _bind(seed_auc_table, config, [c])) for c in combined]
        if "calibration" in needed:
            units += [self._calibration_unit(p) for p in predictions]
        pairs = comparison_pairs(config, combined) if "comparisons" in needed else []
        units += [self._pair_unit(pair) for pair in pairs]
        if "overview" in needed:
            units.append(Unit("overview", "overview", self._key("overview", [self._facts(p) for p in predictions]),
                              _bind(overview_table, config, predictions)))
        archs = list(dict.fromkeys(p.arch for p in predictions))
        shown = {arch: model_label(config, arch) for arch in archs}
        if "figures" in needed:
            units += self._figure_units(combined, archs, shown)
        if "shift" in needed:
            truth = truth_table(config)
            label_files = LabelFiles(config)
            units += [Unit("shift", self._name(p), self._key("shift", self._facts(p), self.study_stamp,
                                                              self.truth_stamp, file_stamp(p.run.validation)),
                           _bind(shift_file, inputs, p, truth, label_files)) for p in predictions]
        self.say(f"{len(units)} pieces of {len(predictions)} predictions file(s)"
                 + (f" over {self.workers} workers" if self.workers > 1 else ""))
        done = dict(zip(((u.section, u.name) for u in units), self.cache.run(units, self.workers, self.bars),
                        strict=True))

        def part(section: str) -> list[Any]:
            return [value for (sec, _), value in done.items() if sec == section]

        auc = seeds = per_run = comparisons = next_hospital = coverage = None
        if "auc" in needed:
            auc = pd.concat(part("auc"), ignore_index=True)
            if want("auc"):
                write_csv(auc, results / "auc.csv")
        if "seeds" in needed:
            seeds = pd.concat(part("seeds"), ignore_index=True)
            if want("seeds"):
                write_csv(seeds, results / "auc_seeds.csv")
            per_run = seeds.rename(columns={"se": "boot_se"}) if several else auc
        calibration = pd.concat(part("calibration"), ignore_index=True) if "calibration" in needed else None
        if want("calibration") and calibration is not None:
            write_csv(calibration, results / "calibration.csv")
        numbers = None
        if "table1" in needed:
            self.say("Table 1")
            numbers = table1(config, per_run)
            if want("table1"):
                write_csv(numbers, results / "table1.csv")
                display = table1_display(config, numbers)
                level = f"{config.evaluation.ci * 100:g} %"
                caption = f"AUC-ROC [{level} CI, patient-clustered bootstrap] per label; paper values where published."
                write_text(results / "table1.md", f"{caption}\n\n{markdown_table(display)}")
                write_text(results / "table1.tex", latex_table(display, caption))
        if "comparisons" in needed:
            comparisons = holm_table([row for rows in part("comparisons") for row in rows])
            if want("comparisons"):
                write_csv(comparisons, results / "comparisons.csv")
        if "next_hospital" in needed:
            next_hospital = next_hospital_table(per_run, ci=config.evaluation.ci)
            coverage = coverage_table(per_run, ci=config.evaluation.ci)
            if want("next_hospital"):
                write_csv(next_hospital, results / "next_hospital.csv")
                write_csv(coverage, results / "next_hospital_coverage.csv")
        claims = None
        if "findings" in needed:
            claims = claim_findings(config, comparisons, next_hospital, unfinished_runs=unfinished_pairs)
            if want("findings"):
                write_csv(claims, results / "findings.csv")
        overview = part("overview")[0] if "overview" in needed else None
        if want("overview"):
            write_csv(overview, results / "overview.csv")
        cohort = None
        if "cohort" in needed:
            present = [lab for lab in config.labels if lab in inputs.manifest]
            cohort = describe(inputs.manifest, inputs.splits, present, inputs.reading_notes)
            if want("cohort"):
                write_csv(cohort, results / "cohort.csv")

        written: list[FigureFile] = []
        if "figures" in needed:
            gap = []
            if comparisons is not None and (comparisons["family"] == "internal_vs_external").any():
                gap = [self._gap_unit(comparisons, auc, archs, shown, unfinished_pairs)]
            drawn = part("figures") + self.cache.run(gap, 1, self.bars)
            folder = results if want("figures") else self._scratch()  # scratch: drawn for html or tripod only
            for name, caption, data in drawn:
                path = folder / FIGURES / f"{name}.png"
                write_bytes(path, data)
                written.append(FigureFile(path, caption))
            curves = training_curves(predictions)
            if curves:
                self.say("training curves")
                written.append(FigureFile(
                    figs.save_png(figs.training_curves_figure(curves), folder / FIGURES / "training_curves.png"),
                    "Training loss and validation mean AUC per epoch, one line per run (from each run's metrics.csv; "
                    "the same numbers are TensorBoard scalars in runs/<configuration>/<arch>/tensorboard/).",
                ))

        review_result = review_file = None
        if self.review and want("review"):
            from cxrgen.report.review import error_review, review_figure

            self.say("error review (Grad-CAM)")
            review_result = error_review(inputs, predictions)
            if review_result is not None:
                write_csv(review_result.cases, results / "review.csv")
                fig = review_figure(review_result)
                if fig is not None:
                    target = review_result.target
                    review_file = FigureFile(
                        figs.save_png(fig, results / FIGURES / "review.png"),
                        f"Error review of {target.label}, {target.configuration}, {target.test_set}: image and "
                        "Grad-CAM per architecture.",
                    )

        size_section = sections.Section(SIZE_TITLE, "")
        if "size_vs_sources" in needed:
            self.say("size vs sources (issue 25)")
            size_section = write_size_diversity(
                inputs, predictions, results if want("size_vs_sources") else self._scratch()
            )

        shift_tables = None
        if "shift" in needed:
            parts: list[FileShift] = part("shift")
            shift_tables = assemble_shift(parts, truth_table(config) is not None)
            if want("shift"):
                write_shift_tables(shift_tables, results)

        estimates_body, label_free = "", None
        if "estimates" in needed:
            self.say("label-free estimates (before the labels)")
            where = results if want("estimates") else self._scratch()
            estimates, estimates_png = write_estimates(inputs, predictions, where)  # issue 24
            estimates_body = estimates_html(estimates, estimates_png, where)
            label_free = label_free_auc(estimates.table)

        checklist = development = None
        if "tripod" in needed:
            self.say("TRIPOD+AI checklist")
            assert auc is not None and calibration is not None and next_hospital is not None
            assert shift_tables is not None
            sample_size = sample_size_table(auc, calibration)
            development = development_table(inputs)
            if want("tripod"):
                write_csv(sample_size, results / "sample_size.csv")
                write_csv(development, results / "development_vs_evaluation.csv")
            checklist = tripod_checklist(TripodInputs(inputs, predictions, auc, calibration, next_hospital,
                                                      shift_tables.tables, sample_size, development))

        if want("html") or want("tripod"):
            assert overview is not None and claims is not None and seeds is not None and shift_tables is not None
            assert checklist is not None and development is not None
            shape_note = paper_shape(config, predictions)
            page = [
                sections.header(config),
                sections.notices(unfinished, missing),
                sections.overview(config, overview, label_free),
                sections.findings(config, overview, shape_note),
                sections.paper_claims(claims, shape_note),
                sections.seeds(seeds),
                sections.next_hospital(next_hospital, coverage, unfinished_pairs),
                size_section,
                sections.cohort(cohort if cohort is not None and not cohort.empty else None, written),
                sections.table1(config, numbers),
                sections.comparisons(comparisons, unfinished_pairs),
                sections.figures("ROC curves", written, lambda stem: stem.startswith("roc_")),
                sections.figures("Generalization gap", written, lambda stem: stem == "generalization_gap"),
                sections.calibration(written, calibration),
                sections.figures("Training curves", written, lambda stem: stem == "training_curves"),
                sections.review(review_result, review_file, requested=self.review and want("review")),
                sections.shift(shift_html(shift_tables, config.evaluation.ci)),
                sections.shift(estimates_body),
                sections.development(development),
            ]
            shown_html = [section.html() for section in page]
            checklist = link_shown(checklist, shown_html)  # a link to an omitted section would lead nowhere
            if want("tripod"):
                write_csv(checklist, results / "tripod_ai.csv")
            if want("html"):
                self.say("report.html")
                shown_html.append(sections.tripod(checklist).html())
                write_csv(self.tally.frame(), results / "notes.csv")
                shown_html.append(sections.notes(self.tally).html())  # last: it lists every step's warnings
                write_text(results / "report.html", render_page(config.name, shown_html))
        if self.full and self.cache.enabled:
            self.cache.prune()
        return results

    # -- units -------------------------------------------------------------------------------------------------
    def _auc_unit(self, pred: Predictions) -> Unit:
        key = self._key("auc", self._facts(pred), self.study_stamp[2])  # excluded.csv: n_excluded
        return Unit("auc", self._name(pred), key, _bind(_auc_of, self.inputs, pred, self.several_seeds))

    def _calibration_unit(self, pred: Predictions) -> Unit:
        key = self._key("calibration", self._facts(pred))
        return Unit("calibration", self._name(pred), key,
                    _bind(_calibration_of, pred, self.config.evaluation.ci, self.several_seeds))

    def _pair_unit(self, pair: Pair) -> Unit:
        family, a, b, paired = pair
        boot = boot_settings(self.config)
        key = self._key("comparisons", family, paired, boot, self._facts(a), self._facts(b))
        return Unit("comparisons", f"{family}/{self._name(a)}/{self._name(b)}", key, _bind(pair_rows, pair, boot))

    def _figure_units(self, combined: list[Predictions], archs: list[str], shown: dict[str, str]) -> list[Unit]:
        inputs, config = self.inputs, self.config
        datasets = list(dict.fromkeys(inputs.manifest["dataset"]))
        units = [
            Unit("figures", "cohort_flow", self._key("cohort_flow", self.study_stamp, datasets),
                 _bind(_figure, "cohort_flow", "Images and patients per dataset and split (the paper's Figures 4-6).",
                       figs.cohort_flow_figure, inputs.manifest, inputs.splits, inputs.excluded, datasets)),
            Unit("figures", "demographics", self._key("demographics", self.study_stamp, datasets),
                 _bind(_figure, "demographics", "Age and sex per dataset (Figure 1).", figs.demographics_figure,
                       inputs.manifest, datasets)),
        ]
        labels = _labels(config, self.predictions)
        for arch in archs:
            mine = [p for p in combined if p.arch == arch]  # one curve per run: the first seed's scores
            drawn = drawn_seed(self.predictions, arch)
            which = f" ({drawn})" if drawn else ""
            also = "; the other seeds' AUCs are in auc.csv, their mean in auc_seeds.csv" if drawn else ""
            facts = [self._facts(p) for p in mine]
            for stem, maker, title, caption in (
                ("roc", figs.roc_figure, f"ROC curves: {shown[arch]}{which}",
                 f"ROC curves of {shown[arch]}{which}, one panel per label (the paper's Figures 7-8){also}."),
                ("calibration", figs.calibration_figure, f"Reliability: {shown[arch]}{which}",
                 f"Reliability curves of {shown[arch]}{which} (10 equal-width probability bins){also}."),
            ):
                name = f"{stem}_{arch}"
                units.append(Unit("figures", name, self._key(name, facts, labels, title, caption),
                                  _bind(_figure, name, caption, maker, mine, labels, title)))
        return units

    def _gap_unit(self, comparisons: pd.DataFrame, auc: pd.DataFrame | None, archs: list[str],
                  shown: dict[str, str], unfinished_pairs: set[tuple[str, str]]) -> Unit:
        config = self.config
        labels = _labels(config, self.predictions)
        spread = seed_gaps(auc) if auc is not None else None
        caption = ("Internal minus external AUC with the unpaired test's interval; above 0 = worse on the other "
                   "hospital." + (" Points: mean over the seeds; pale bars: the range of the per-seed gaps."
                                  if self.several_seeds else ""))
        key = self._key("generalization_gap", _frame_digest(comparisons), _frame_digest(spread), labels, archs,
                        shown, sorted(unfinished_pairs), caption)

        def draw() -> Figure:
            return figs.gap_figure(comparisons, labels, archs, config.evaluation.ci, titles=shown, seed_gaps=spread,
                                   unfinished=unfinished_pairs)

        return Unit("figures", "generalization_gap", key, _bind(_figure, "generalization_gap", caption, draw))


def _bind(function: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    return lambda: function(*args)


def _labels(config: StudyConfig, predictions: Sequence[Predictions]) -> list[str]:
    """:func:`study_labels` from the files' labels (without computing ``auc.csv``)."""
    found = list(dict.fromkeys(lab for p in predictions for lab in p.labels))
    return [lab for lab in config.labels if lab in found] + [lab for lab in found if lab not in config.labels]


def _frame_digest(frame: pd.DataFrame | None) -> str:
    return "" if frame is None else frame.to_csv(index=False)


def _auc_of(inputs: StudyInputs, pred: Predictions, several_seeds: bool) -> pd.DataFrame:
    table = auc_results(inputs, [pred])
    return table.assign(seed=pred.seed) if several_seeds else table


def _calibration_of(pred: Predictions, ci: float, several_seeds: bool) -> pd.DataFrame:
    table = calibration_results([pred], ci)
    return table.assign(seed=pred.seed) if several_seeds else table


def _figure(name: str, caption: str, maker: Callable[..., Figure], *args: Any) -> tuple[str, str, bytes]:
    """Draw one figure; returns its name, caption and PNG bytes (the parent writes the file)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = figs.save_png(maker(*args), Path(folder) / f"{name}.png")
        return name, caption, path.read_bytes()
