"""``report.html``: the whole report as one self-contained page that opens from disk.

No external file, script or font: figures are PNG data URIs, tables are HTML, the style sheet is inline, so the
page can be mailed or archived alone. Every AUC cell of Table 1 prints the value of ``auc.csv`` to 3 decimals and
carries the full value in ``data-auc`` (Python ``repr``, which round-trips a float exactly), with the row's keys in
``data-configuration``, ``data-arch``, ``data-test-set`` and ``data-label``, so a script can check the page
against the CSV.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

import cxrgen
from cxrgen.config import StudyConfig
from cxrgen.report.naming import model_label, random_weights_note
from cxrgen.report.tables import UNFINISHED, format_auc, has_reference, is_unfinished, reference_auc, study_labels

if TYPE_CHECKING:  # the review pulls in torch; the page needs only its type
    from cxrgen.report.review import ReviewResult

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}
th{background:#f3f3f3}td.key{text-align:left}
td.paper{color:#666;font-style:italic}span.ci{color:#666;font-size:.9em}
tr.sig td{background:#fff6d6}figure{margin:1em 0}img{max-width:100%}
.note{color:#8a4b00}p.meta{color:#555;font-size:.9em}
td.supported{background:#e3f4e1}td.contradicted{background:#fbe0dd}td.inconclusive{color:#666}
td.wrap{text-align:left;max-width:28em;white-space:normal}
.unfinished{color:#fff;background:#b3261e;border-radius:3px;padding:0 .3em;font-size:.8em;font-weight:600}
div.notice{border:2px solid #b3261e;background:#fdf0ef;padding:.3em 1em;margin:1em 0;overflow-wrap:anywhere}
"""


@dataclass(frozen=True)
class FigureFile:
    """A written PNG and its caption."""

    path: Path
    caption: str


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: object, digits: int) -> str:
    if isinstance(value, float):
        if value != value:  # NaN: an undefined statistic, shown empty
            return ""
        return f"{value:.1e}" if value != 0 and abs(value) < 10.0**-digits else f"{value:.{digits}f}"
    return "" if value is None or value is pd.NA else _e(value)


def _frame_html(frame: pd.DataFrame, digits: int = 3, highlight: Sequence[bool] | None = None) -> str:
    """A plain HTML table; rows flagged in ``highlight`` get ``class="sig"``. Tiny numbers switch to 1.2e-05."""
    if frame.empty:
        return "<p>(none)</p>"
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    flags = list(highlight) if highlight is not None else [False] * len(frame)
    rows = []
    for flag, values in zip(flags, frame.itertuples(index=False, name=None), strict=True):
        cells = "".join(f"<td>{_cell(v, digits)}</td>" for v in values)
        rows.append(f'<tr class="sig">{cells}</tr>' if flag else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _img(figure: FigureFile) -> str:
    data = base64.b64encode(figure.path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{_e(figure.caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(figure.caption)}</figcaption></figure>"
    )


def _mark(unfinished: bool) -> str:
    """The visible mark of a run without ``done.json``, next to its name."""
    return f' <span class="unfinished">{UNFINISHED}</span>' if unfinished else ""


def notices_html(unfinished: Sequence[str], missing: pd.DataFrame | None) -> str:
    """The warnings a reader must see before any number: unfinished runs, configured test sets without files."""
    parts = []
    if unfinished:
        runs = ", ".join(_e(run) for run in unfinished)
        parts.append(
            f'<div class="notice"><p><b>Unfinished runs</b>{_mark(True)}: {runs}. These runs have no done.json (they '
            "were stopped before training finished) and were predicted with <code>--allow-unfinished</code>; their "
            "rows are marked in every table and figure and are not final results.</p></div>"
        )
    if missing is not None and not missing.empty:
        items = "".join(
            f"<li>{_e(r.configuration)}/{_e(r.arch)}, seed {_e(r.seed)}, test set <b>{_e(r.test_set)}</b>: "
            f"{_e(r.expected)} ({_e(r.reason)})</li>"
            for r in missing.itertuples(index=False)
        )
        parts.append(
            f'<div class="notice"><p><b>Configured test sets without predictions</b> ({len(missing)}): left out '
            f'of every table below (<a href="missing.csv">missing.csv</a>).</p><ul>{items}</ul></div>'
        )
    return "".join(parts)


def table1_html(config: StudyConfig, auc: pd.DataFrame) -> str:
    """Table 1 with one ``data-auc`` cell per (run, test set, label), the paper's value beside it when known."""
    labels = study_labels(config, auc)
    with_reference = has_reference(config)
    level = f"{config.evaluation.ci * 100:g} %"
    head = "".join(
        f"<th>{_e(label)}<br>AUC [{level} CI]</th>" + ("<th>paper</th>" if with_reference else "") for label in labels
    )
    out = [f"<table><thead><tr><th>model</th><th>configuration</th><th>test set</th>{head}</tr></thead><tbody>"]
    arch_rank = {a: i for i, a in enumerate(dict.fromkeys([*config.architectures, *auc["arch"]]))}
    order = sorted(range(len(auc)), key=lambda i: (arch_rank[auc["arch"].iat[i]], i))
    ordered = auc.iloc[order]
    for (arch, configuration, test_set, kind), group in ordered.groupby(
        ["arch", "configuration", "test_set", "kind"], sort=False
    ):
        shown = test_set if test_set == kind else f"{kind} {test_set}"
        unfinished = is_unfinished(group)
        flag = ' data-unfinished="true"' if unfinished else ""
        cells = [
            f'<td class="key"{flag}>{_e(model_label(config, str(arch)))}{_mark(unfinished)}</td>',
            *(f'<td class="key">{_e(value)}</td>' for value in (configuration, shown)),
        ]
        by_label = {str(r["label"]): r for _, r in group.iterrows()}
        paper = reference_auc(config, str(configuration), str(arch), str(test_set), str(kind))
        for label in labels:
            row = by_label.get(label)
            if row is None:
                cells.append("<td></td>")
            else:
                value, low, high = float(row["auc"]), float(row["ci_low"]), float(row["ci_high"])
                interval = "" if pd.isna(low) or pd.isna(high) else f" [{format_auc(low)}, {format_auc(high)}]"
                cells.append(
                    f'<td class="auc" data-configuration="{_e(configuration)}" data-arch="{_e(arch)}" '
                    f'data-test-set="{_e(test_set)}" data-label="{_e(label)}" data-auc="{value!r}" '
                    f'data-ci-low="{low!r}" data-ci-high="{high!r}">'
                    f'{format_auc(value)}<span class="ci">{interval}</span></td>'
                )
            if with_reference:
                cells.append(f'<td class="paper">{format_auc(paper[label]) if label in paper else ""}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _interval(value: float, low: float, high: float, digits: int = 3) -> str:
    if pd.isna(value):
        return ""
    if pd.isna(low) or pd.isna(high):
        return f"{value:+.{digits}f}"
    inside = f' <span class="ci">[{low:+.{digits}f}, {high:+.{digits}f}]</span>'
    return f"{value:+.{digits}f}{inside}"


def _p(value: float) -> str:
    return "" if pd.isna(value) else (f"{value:.1e}" if 0 < value < 1e-3 else f"{value:.3f}")


def comparisons_html(
    comparisons: pd.DataFrame, alpha: float = 0.05, unfinished_runs: Collection[tuple[str, str]] = ()
) -> str:
    """One narrow table per family and pair of runs: label, the two AUCs, difference [CI], p, Holm p.

    A side from an ``unfinished_runs`` (configuration, arch) pair carries the unfinished mark.

    The full statistics (SEs, the image-level DeLong columns, counts and dropped images) are in
    ``comparisons.csv``, linked from the page, so that every table fits a 1280 px window.
    """
    titles = {
        "internal_vs_external": "Internal vs external test set (unpaired, patient-clustered SEs)",
        "multi_vs_single": "Trained on several datasets vs one, same external test set (paired patient bootstrap)",
        "architectures": "Architectures within a configuration and test set (paired patient bootstrap)",
    }
    sides = ["configuration_a", "arch_a", "test_set_a", "configuration_b", "arch_b", "test_set_b"]
    parts = ['<p class="meta">Every statistic, with the image-level DeLong SE and p beside the clustered ones: '
             '<a href="comparisons.csv">comparisons.csv</a>.</p>']
    for family, title in titles.items():
        part = comparisons.loc[comparisons["family"] == family]
        parts.append(f"<h3>{_e(title)}</h3>")
        if part.empty:
            parts.append("<p>(no such comparison in this study)</p>")
            continue
        for key, rows in part.groupby(sides, sort=False):
            conf_a, arch_a, test_a, conf_b, arch_b, test_b = (str(k) for k in key)
            mark_a, mark_b = (_mark((c, a) in unfinished_runs) for c, a in ((conf_a, arch_a), (conf_b, arch_b)))
            parts.append(f'<p><b>a</b> = {_e(conf_a)}/{_e(arch_a)}{mark_a} on {_e(test_a)}, '
                         f'<b>b</b> = {_e(conf_b)}/{_e(arch_b)}{mark_b} on {_e(test_b)}</p>')
            body = []
            for _, r in rows.iterrows():
                sig = ' class="sig"' if not pd.isna(r["p_holm"]) and r["p_holm"] <= alpha else ""
                body.append(
                    f'<tr{sig}><td class="key">{_e(r["label"])}</td><td>{format_auc(r["auc_a"])}</td>'
                    f'<td>{format_auc(r["auc_b"])}</td><td>{_interval(r["difference"], r["ci_low"], r["ci_high"])}'
                    f'</td><td>{_p(r["p"])}</td><td>{_p(r["p_holm"])}</td></tr>'
                )
            parts.append("<table><thead><tr><th>label</th><th>AUC a</th><th>AUC b</th><th>a - b [95 % CI]</th>"
                         f"<th>p</th><th>Holm p</th></tr></thead><tbody>{''.join(body)}</tbody></table>")
        parts.append(
            f'<p class="meta">Highlighted: Holm-adjusted p &le; {alpha:g} within this family '
            f"({int(part['p'].notna().sum())} tests).</p>"
        )
    return "".join(parts)


def findings_html(findings: pd.DataFrame, summary: pd.DataFrame, alpha: float = 0.05) -> str:
    """The claims first: a count per claim, then every tested statement with its verdict (``findings.csv``)."""
    head = "".join(f"<th>{_e(c)}</th>" for c in summary.columns)
    lines = "".join(
        f'<tr><td class="key">{_e(r.iloc[0])}</td>' + "".join(f"<td>{v}</td>" for v in r.iloc[1:]) + "</tr>"
        for _, r in summary.iterrows()
    )
    parts = [f"<table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>"]
    parts.append(
        f'<p class="meta">Verdict at Holm-adjusted p &le; {alpha:g} within each family (Holm over that family\'s '
        "labels, configurations and architectures); effects are AUC differences with 95 % patient-clustered "
        "intervals; for the next hospital, the pooled AUC with its 95 % prediction interval. "
        '<a href="findings.csv">findings.csv</a></p>'
    )
    body = []
    for _, r in findings.iterrows():
        effect = (f"{format_auc(r['effect'])} <span class=\"ci\">[{format_auc(r['ci_low'])}, "
                  f"{format_auc(r['ci_high'])}]</span>" if r["claim"] == "next_hospital" and not pd.isna(r["effect"])
                  else _interval(r["effect"], r["ci_low"], r["ci_high"]))
        paper = "" if pd.isna(r["paper"]) else f"{r['paper']:+.3f}"
        verdict = str(r["verdict"])
        comparison = str(r["comparison"]).removesuffix(f" ({UNFINISHED})")
        body.append(
            f'<tr><td class="wrap">{_e(comparison)}{_mark(bool(r.get("unfinished", False)))}</td>'
            f'<td class="key">{_e(r["label"])}</td><td>{effect}</td>'
            f'<td>{_p(r["p_holm"])}</td><td class="{_e(verdict.split(" ")[0])}">{_e(verdict)}</td>'
            f'<td class="paper">{paper}</td></tr>'
        )
    parts.append("<details><summary>Every tested statement</summary><table><thead><tr><th>comparison</th>"
                 "<th>label</th><th>effect [95 % interval]</th><th>Holm p</th><th>verdict</th><th>paper</th></tr>"
                 f"</thead><tbody>{''.join(body)}</tbody></table></details>")
    return "".join(parts)


def next_hospital_html(
    table: pd.DataFrame, coverage: pd.DataFrame, unfinished_runs: Collection[tuple[str, str]] = ()
) -> str:
    """Pooled external AUC, tau², I² and the prediction interval per run and label; leave-one-out coverage."""
    if table.empty:
        return "<p>No configuration was tested on an external hospital.</p>"
    estimable = table[table["note"] == ""]
    if estimable.empty:
        ks = sorted({int(k) for k in table["k"]})
        return (f"<p>Not estimable for any run: each was tested on {' or '.join(map(str, ks))} external "
                "hospital(s), and a prediction interval for a new hospital needs at least 3 (t on k-2 degrees of "
                'freedom). <a href="next_hospital.csv">next_hospital.csv</a></p>')
    body = []
    for _, r in table.iterrows():
        if r["note"]:
            numbers = f'<td colspan="4" class="wrap">{_e(r["note"])}</td>'
        else:
            numbers = (f'<td>{format_auc(r["pooled_auc"])} <span class="ci">[{format_auc(r["ci_low"])}, '
                       f'{format_auc(r["ci_high"])}]</span></td><td>{format_auc(r["pi_low"])} to '
                       f'{format_auc(r["pi_high"])}</td><td>{r["tau2"]:.3f}</td><td>{r["i2"] * 100:.0f} %</td>')
        mark = _mark((r["configuration"], r["arch"]) in unfinished_runs)
        body.append(f'<tr><td class="key">{_e(r["configuration"])}/{_e(r["arch"])}{mark}</td><td class="key">'
                    f'{_e(r["label"])}</td><td>{int(r["k"])}</td>{numbers}</tr>')
    parts = [
        "<table><thead><tr><th>run</th><th>label</th><th>hospitals</th><th>pooled AUC [95 % CI]</th>"
        "<th>95 % prediction interval</th><th>tau² (logit)</th><th>I²</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>",
        '<p class="meta">Random-effects (DerSimonian-Laird, statsmodels) on logit AUC with within-hospital '
        "variances from the patient-clustered bootstrap; prediction interval with t on k-2 degrees of freedom "
        '(Higgins, Thompson &amp; Spiegelhalter 2009). <a href="next_hospital.csv">next_hospital.csv</a></p>',
    ]
    if not coverage.empty:
        inside = coverage["inside"].dropna()
        parts.append(f"<p>Held-out check: the AUC of a hospital fell inside the prediction interval computed "
                     f"without it in {int(inside.sum())} of {len(inside)} cases "
                     '(<a href="next_hospital_coverage.csv">next_hospital_coverage.csv</a>).</p>')
    return "".join(parts)


def seeds_html(seeds: pd.DataFrame) -> str:
    """Seed-averaged AUC, seed SD and the two-stage interval per run, test set and label."""
    if seeds.empty:
        return ""
    counted = seeds["training_variance_counted"].astype(bool)
    if counted.all():
        note = "Intervals combine training seeds and patients (two-stage bootstrap)."
    elif not counted.any():
        note = ("One training seed: intervals count patient variance only; training variance is not counted "
                "(set train.seeds to count it).")
    else:  # a seed's predictions file is missing for some runs (named at the top of the page)
        single = seeds.loc[~counted]
        runs = sorted(set(single["configuration"] + "/" + single["arch"] + " on " + single["test_set"]))
        note = ("Intervals combine training seeds and patients (two-stage bootstrap), except where only one seed "
                f"has a predictions file ({', '.join(runs)}): there training variance is not counted.")
    body = []
    for _, r in seeds.iterrows():
        sd = "" if pd.isna(r["seed_sd"]) else f"{r['seed_sd']:.4f}"
        body.append(
            f'<tr><td class="key">{_e(r["configuration"])}/{_e(r["arch"])}{_mark(bool(r.get("unfinished", False)))}'
            f'</td><td class="key">{_e(r["test_set"])}'
            f'</td><td class="key">{_e(r["label"])}</td><td>{format_auc(r["auc"])} <span class="ci">'
            f'[{format_auc(r["ci_low"])}, {format_auc(r["ci_high"])}]</span></td><td>{sd}</td>'
            f'<td>{int(r["n_seeds"])}</td></tr>'
        )
    return (f'<p>{_e(note)}</p><details><summary>AUC per run over seeds (auc_seeds.csv)</summary><table><thead>'
            "<tr><th>run</th><th>test set</th><th>label</th><th>mean AUC [95 % CI]</th><th>seed SD</th>"
            f"<th>seeds</th></tr></thead><tbody>{''.join(body)}</tbody></table></details>")


def review_html(review: ReviewResult | None, figure: FigureFile | None) -> str:
    if review is None:
        return "<p>No error review (see the log for why).</p>"
    target = review.target
    thresholds = ", ".join(f"{_e(arch)} {t:.3f}" for arch, t in review.thresholds.items())
    parts = [
        f"<p>Label <b>{_e(target.label)}</b>, configuration <b>{_e(target.configuration)}</b>, test set "
        f"<b>{_e(target.test_set)}</b>: the {target.per_kind} most confident false positives and false negatives "
        "and the cases nearest the threshold. Each architecture's threshold maximizes Youden's J "
        f"(sensitivity + specificity - 1) on this test set: {thresholds}. Cases are ranked by the mean over "
        "architectures of probability minus threshold (margin)."
        + (f" Scores and Grad-CAM maps of {_e(review.drawn)}." if review.drawn else "")
        + "".join(f" {_e(arch)}{_mark(True)}" for arch in review.unfinished) + "</p>",
        *(f'<p class="note">{_e(note)}</p>' for note in review.notes),
        _frame_html(review.cases.drop(columns=["path"]), digits=3),
    ]
    if figure is not None:
        parts.append(_img(figure))
    return "".join(parts)


def render_report(
    config: StudyConfig,
    auc: pd.DataFrame,
    comparisons: pd.DataFrame,
    calibration: pd.DataFrame,
    cohort: pd.DataFrame | None,
    figures: Sequence[FigureFile],
    review: ReviewResult | None,
    review_figure: FigureFile | None,
    *,
    findings: pd.DataFrame | None = None,
    seeds: pd.DataFrame | None = None,
    next_hospital: pd.DataFrame | None = None,
    coverage: pd.DataFrame | None = None,
    unfinished: Sequence[str] = (),
    unfinished_runs: Collection[tuple[str, str]] = (),
    missing: pd.DataFrame | None = None,
) -> str:
    """The complete page as a string: notices, the findings first, then the detail sections.

    ``unfinished`` names the unfinished runs for the notice at the top (``configuration/arch``, with the seed when
    there are several); ``unfinished_runs`` are their (configuration, arch) pairs, marked in the tables;
    ``missing`` is ``missing.csv`` (:func:`cxrgen.report.inputs.missing_predictions`).
    """
    from cxrgen.report.findings import claim_summary
    evaluation = config.evaluation
    reference = config.reference.source if config.reference is not None and config.reference.source else ""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta = (
        f"cxrgen {cxrgen.__version__}, {now}. Intervals: {evaluation.ci * 100:g} % patient-clustered bootstrap "
        f"({evaluation.bootstrap} resamples, seed {evaluation.seed}); DeLong intervals in auc.csv."
        + (f" Paper values: {reference}." if reference else "")
    )
    first = []
    if findings is not None:
        first += ["<h2>Findings</h2>", findings_html(findings, claim_summary(findings))]
    if seeds is not None:
        first.append(seeds_html(seeds))
    if next_hospital is not None:
        first += ["<h2>The next hospital</h2>",
                  next_hospital_html(next_hospital, coverage if coverage is not None else pd.DataFrame(),
                                     unfinished_runs)]
    sections = [
        f'<h1>Study {_e(config.name)}</h1><p class="meta">{_e(meta)}</p>',
        notices_html(unfinished, missing),
        *first,
        "<h2>Cohort</h2>",
        _frame_html(cohort, digits=1) if cohort is not None else "<p>(no manifest summary)</p>",
        *(_img(f) for f in figures if f.path.stem in ("cohort_flow", "demographics")),
        "<h2>Table 1: AUC-ROC per label</h2>",
        table1_html(config, auc),
        '<p class="meta">Every AUC row with both intervals and counts: <a href="auc.csv">auc.csv</a>.</p>',
        *([f'<p class="note">{_e(note)}</p>'] if (note := random_weights_note(config)) else []),
        "<h2>Comparisons</h2>",
        comparisons_html(comparisons, unfinished_runs=unfinished_runs),
        "<h2>ROC curves</h2>",
        *(_img(f) for f in figures if f.path.stem.startswith("roc_")),
        "<h2>Generalization gap</h2>",
        *(_img(f) for f in figures if f.path.stem == "generalization_gap"),
        "<h2>Calibration</h2>",
        *(_img(f) for f in figures if f.path.stem.startswith("calibration_")),
        "<details><summary>Brier score and expected calibration error (calibration.csv)</summary>",
        _frame_html(calibration, digits=4),
        "</details>",
        "<h2>Error review</h2>",
        review_html(review, review_figure),
    ]
    body = "\n".join(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>cxrgen report: {_e(config.name)}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )
