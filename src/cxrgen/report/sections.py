"""``report.html`` as a list of sections, findings first: a new section is one function here and one line in
:func:`cxrgen.report.build.build_report`.

A :class:`Section` is a heading, its HTML body and the ``results/`` files behind it (linked under the body, so
every number on the page leads to its CSV). The functions below only arrange what the tables and figures code
computed; none recomputes a number.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

import cxrgen
from cxrgen.report.findings import claim_summary
from cxrgen.report.html import (
    FigureFile,
    comparisons_html,
    esc,
    figure_html,
    findings_html,
    frame_html,
    next_hospital_html,
    notices_html,
    review_html,
    seeds_html,
    table1_html,
)
from cxrgen.report.naming import model_label, random_weights_note
from cxrgen.report.overview import LabelFree, describe_labels, overview_display
from cxrgen.report.tables import format_interval
from cxrgen.report.tripod import development_view
from cxrgen.study.config import StudyConfig
from cxrgen.utils.notes import Tally

if TYPE_CHECKING:  # the review pulls in torch; the page needs only its type
    from cxrgen.report.review import ReviewResult


@dataclass(frozen=True)
class Section:
    """One part of the page. ``title`` None: no heading (the page header, notices, blocks with their own)."""

    title: str | None
    body: str
    files: tuple[str, ...] = ()

    def html(self) -> str:
        """The heading, body and file links; "" for a section with nothing to show (no empty heading)."""
        if not self.body.strip():
            return ""
        head = f'<h2 id="{esc(anchor(self.title))}">{esc(self.title)}</h2>' if self.title else ""
        unlinked = [name for name in self.files if f'href="{esc(name)}"' not in self.body]  # each file linked once
        links = ", ".join(f'<a href="{esc(name)}">{esc(name)}</a>' for name in unlinked)
        return head + self.body + (f'<p class="meta">Behind this section: {links}.</p>' if links else "")


def anchor(title: str) -> str:
    """The ``id`` of a section heading, for links from the TRIPOD+AI checklist: ``Table 1: AUC`` -> ``table-1-auc``."""
    return "-".join("".join(ch if ch.isalnum() else " " for ch in title.lower()).split())


def overview(config: StudyConfig, table: pd.DataFrame, label_free: LabelFree | None = None) -> Section:
    """The first table: per model and test set the mean AUC over labels, the gap, prevalence (issue 26), and for a
    set without labels the label-free estimate (issue 24)."""
    display = overview_display(config, table, list(config.labels), label_free)
    level = f"{config.evaluation.ci * 100:g} %"
    note = (
        f"Mean AUC over the labels with both classes on each test set (the column after it names them), "
        f"{level} patient-clustered bootstrap interval of that mean. Gap: the same model's internal mean minus "
        "this set's over the labels estimable on both (above 0 = worse on this set; unpaired interval). "
        "Prevalence: mean predicted probability / observed positive rate, averaged over labels. Per label: Table 1. "
        "A set without labels shows the label-free CBPE estimate of its mean AUC and its trust flag (Before the "
        "labels)."
    )
    table_html = frame_html(display).replace("<table>", '<table class="left">', 1)
    return Section("Results", table_html + f'<p class="meta">{esc(note)}</p>', ("overview.csv",))


def findings(config: StudyConfig, table: pd.DataFrame, shape_note: str) -> Section:
    """What the first table says, in sentences; then whether the paper's claims are tested below, and why not."""
    items = []
    for r in table.itertuples(index=False):
        run = f"{model_label(config, str(r.arch))} trained on {r.configuration}"
        where = "its internal test set" if r.kind == "internal" else f"external {r.test_set}"
        if not r.labelled:
            items.append(f"{run} on {where}: AUC and gap not estimable (the set has no labels); mean predicted "
                         f"prevalence {float(r.predicted_prevalence):.3f}.")
            continue
        labels = [lab for lab in str(r.labels).split("; ") if lab]
        if not labels:
            items.append(f"{run} on {where}: not estimable (no label has both classes).")
            continue
        sentence = (f"{run} on {where}: mean AUC {format_interval(r.mean_auc, r.ci_low, r.ci_high)} over "
                    f"{describe_labels(labels, list(config.labels))} labels")
        if not pd.isna(r.gap):
            side = ("worse than internal" if r.gap_low > 0 else "better than internal" if r.gap_high < 0
                    else "not distinguishable from internal")
            sentence += f"; gap {r.gap:+.3f} [{r.gap_low:+.3f}, {r.gap_high:+.3f}], {side}"
        items.append(sentence + ".")
    body = "<ul>" + "".join(f"<li>{esc(item)}</li>" for item in items) + "</ul>"
    body += f"<p>{esc(shape_note)}</p>" if shape_note else (
        '<p>The study has the paper\'s shape: its claims are tested in <a href="#the-paper-s-claims">'
        "The paper's claims</a>.</p>")
    return Section("Findings", body, ("overview.csv",))


def header(config: StudyConfig) -> Section:
    evaluation = config.evaluation
    reference = config.reference.source if config.reference is not None and config.reference.source else ""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta = (
        f"cxrgen {cxrgen.__version__}, {now}. Intervals: {evaluation.ci * 100:g} % patient-clustered bootstrap "
        f"({evaluation.bootstrap} resamples, seed {evaluation.seed}); DeLong intervals in auc.csv."
        + (f" Paper values: {reference}." if reference else "")
    )
    return Section(None, f'<h1>Study {esc(config.name)}</h1><p class="meta">{esc(meta)}</p>')


def notices(unfinished: Sequence[str], missing: pd.DataFrame | None) -> Section:
    """Unfinished runs and configured test sets without predictions, before any number (issue 14)."""
    return Section(None, notices_html(unfinished, missing))


def paper_claims(claims: pd.DataFrame, shape_note: str) -> Section:
    """The paper's claims as tested statements; omitted (empty) when the study lacks the paper's shape."""
    if shape_note:
        return Section("The paper's claims", "")
    return Section("The paper's claims", findings_html(claims, claim_summary(claims)), ("findings.csv",))


def seeds(table: pd.DataFrame) -> Section:
    """Whether the intervals count training variance, and the AUC per run over seeds."""
    return Section("Training seeds" if not table.empty else None, seeds_html(table),
                   ("auc_seeds.csv",) if not table.empty else ())


def next_hospital(
    table: pd.DataFrame, coverage: pd.DataFrame, unfinished_runs: Collection[tuple[str, str]]
) -> Section:
    return Section(
        "The next hospital",
        next_hospital_html(table, coverage, unfinished_runs),
        ("next_hospital.csv", "next_hospital_coverage.csv"),
    )


def cohort(table: pd.DataFrame | None, figures: Sequence[FigureFile]) -> Section:
    body = frame_html(table, digits=1) if table is not None else "<p>(no manifest summary)</p>"
    shown = "".join(figure_html(f) for f in figures if f.path.stem in ("cohort_flow", "demographics"))
    return Section("Cohort", body + shown, ("cohort.csv",) if table is not None else ())


def table1(config: StudyConfig, table: pd.DataFrame) -> Section:
    note = random_weights_note(config)
    body = table1_html(config, table) + (f'<p class="note">{esc(note)}</p>' if note else "")
    return Section("Table 1: AUC-ROC per label", body, ("table1.csv", "auc.csv"))


def comparisons(table: pd.DataFrame, unfinished_runs: Collection[tuple[str, str]]) -> Section:
    return Section("Comparisons", comparisons_html(table, unfinished_runs=unfinished_runs), ("comparisons.csv",))


def figures(title: str, files: Sequence[FigureFile], shown: Callable[[str], bool]) -> Section:
    """The figures whose file stem ``shown`` accepts, in the order they were drawn."""
    return Section(title, "".join(figure_html(f) for f in files if shown(f.path.stem)))


def calibration(files: Sequence[FigureFile], table: pd.DataFrame) -> Section:
    """Reliability figures, then per run, test set and label O/E, slope, intercept (intervals), Brier and ECE."""
    def triple(r: pd.Series, stat: str) -> str:
        value, low, high = r[stat], r[f"{stat}_low"], r[f"{stat}_high"]
        if pd.isna(value):
            return "not estimable"
        return f"{value:.2f}" if pd.isna(low) else f"{value:.2f} [{low:.2f}, {high:.2f}]"

    labelled = table[table["n"] > 0]
    shown = pd.DataFrame({
        "run": labelled["configuration"] + "/" + labelled["arch"] + ("" if "seed" not in labelled else
                                                                     " seed " + labelled["seed"].astype(str)),
        "test set": labelled["test_set"], "label": labelled["label"],
        "O/E": [triple(r, "o_e") for _, r in labelled.iterrows()],
        "slope": [triple(r, "slope") for _, r in labelled.iterrows()],
        "intercept": [triple(r, "intercept") for _, r in labelled.iterrows()],
        "Brier": labelled["brier"], "ECE": labelled["ece"], "n (pos)": [
            f"{n} ({k})" for n, k in zip(labelled["n"], labelled["n_pos"], strict=True)],
    })  # fmt: skip
    unlabelled = sorted(set(table.loc[table["n"] == 0, "test_set"]))
    body = "".join(figure_html(f) for f in files if f.path.stem.startswith("calibration_"))
    if not shown.empty:
        body += (
            "<p>Observed/expected events (1 = calibrated in the large), calibration slope (1 = ideal; below 1: "
            "predictions too extreme) and calibration intercept (0 = ideal) from logistic regressions of the outcome "
            "on logit(p), with Wald intervals at the report's level; Brier score and ECE (10 bins) beside them.</p>"
            "<details><summary>Per run, test set and label</summary>" + frame_html(shown, digits=3) + "</details>"
        )
    if unlabelled:
        body += f"<p>Not estimable on {esc(', '.join(unlabelled))}: no labels.</p>"
    return Section("Calibration", body, ("calibration.csv",))


def review(result: ReviewResult | None, figure: FigureFile | None, requested: bool = True) -> Section:
    """The Grad-CAM error review; omitted (no heading) when not requested (``--no-review``)."""
    if not requested:
        return Section("Error review", "")
    return Section("Error review", review_html(result, figure), ("review.csv",) if result is not None else ())


def shift(body: str) -> Section:
    """The shift-aware sections (issue 11; :func:`cxrgen.report.shift_tables.shift_html`), each with its own heading."""
    return Section(None, body)


def development(table: pd.DataFrame) -> Section:
    """Development versus evaluation data per dataset (TRIPOD+AI 16 and 20c)."""
    if table.empty:
        return Section("Development versus evaluation data", "")
    note = ("<p>Per dataset, its role in the study (each role with the configurations it is played in) and what "
            "differs between development and evaluation data: observed prevalence per label (empty: not recorded), "
            "age, sex, views, devices (Support Devices label where recorded).</p>")
    shown = frame_html(development_view(table), digits=3, text=("dataset", "role", "views"))
    return Section("Development versus evaluation data", note + shown, ("development_vs_evaluation.csv",))


def tripod(checklist: pd.DataFrame) -> Section:
    """The TRIPOD+AI checklist: every sub-item, its status and the study's content or what the authors must add."""
    if checklist.empty:
        return Section("TRIPOD+AI checklist", "")
    done = int((checklist["status"] == "filled").sum())
    rows = []
    for r in checklist.itertuples(index=False):
        kind = "section" if r.link.startswith("#") else "file"
        link = f' <a href="{esc(r.link)}">({kind})</a>' if r.link else ""
        mark = "filled" if r.status == "filled" else "<b>to write</b>"
        rows.append(f"<tr><td>{esc(r.sub_item)}</td><td>{esc(r.topic)}</td><td>{mark}</td>"
                    f"<td>{esc(r.content)}{link}</td></tr>")
    body = (
        f"<p>TRIPOD+AI (Collins et al., BMJ 2024;385:e078378), wording after CLAIM 2024: {done} of "
        f"{len(checklist)} sub-items filled from the study's files; {len(checklist) - done} to write by the "
        "authors. Item texts are short forms of the published checklist.</p><details><summary>All "
        f"{len(checklist)} sub-items</summary><table class=\"left\"><thead><tr><th>sub-item</th><th>topic</th>"
        f"<th>status</th><th>content</th></tr></thead><tbody>{''.join(rows)}</tbody></table></details>"
    )
    return Section("TRIPOD+AI checklist", body, ("tripod_ai.csv", "sample_size.csv"))


def notes(tally: Tally) -> Section:
    """The warnings the report raised, one line per kind with its count (no source file or line)."""
    if not tally.kinds:
        return Section("Notes", "")
    items = "".join(f"<li>{esc(line)}</li>" for line in tally.lines())
    body = (f"<p>{tally.total} warning(s) of {len(tally.kinds)} kind(s) while building this report; each line "
            f"gives the first message of its kind and how many alike followed.</p><ul>{items}</ul>")
    return Section("Notes", body, ("notes.csv",))
