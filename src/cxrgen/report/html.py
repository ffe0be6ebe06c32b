"""``report.html``: the whole report as one self-contained page that opens from disk.

No external file, script or font: figures are PNG data URIs, tables are HTML, the style sheet is inline, so the
page can be mailed or archived alone. Every AUC cell of Table 1 prints the value of ``auc.csv`` to 3 decimals and
carries the full value in ``data-auc`` (Python ``repr``, which round-trips a float exactly), with the row's keys in
``data-configuration``, ``data-arch``, ``data-test-set`` and ``data-label``, so a script can check the page
against the CSV.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from cxrgen.report.naming import model_label
from cxrgen.report.tables import UNFINISHED, format_auc, has_reference
from cxrgen.study.config import StudyConfig

if TYPE_CHECKING:  # the review pulls in torch; the page needs only its type
    from cxrgen.report.review import ReviewResult

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}
th{background:#f3f3f3}td.key,th.key{text-align:left}table.left td,table.left th{text-align:left}
td.paper{color:#666;font-style:italic}span.ci{color:#666;font-size:.9em}
tr.sig td{background:#fff6d6}figure{margin:1em 0}img{max-width:100%}
.note{color:#8a4b00}p.meta{color:#555;font-size:.9em}
td.supported{background:#e3f4e1}td.contradicted{background:#fbe0dd}td.inconclusive{color:#666}
td.wrap{text-align:left;max-width:28em;white-space:normal}
.unfinished{color:#fff;background:#b3261e;border-radius:3px;padding:0 .3em;font-size:.8em;font-weight:600}
div.notice{border:2px solid #b3261e;background:#fdf0ef;padding:.3em 1em;margin:1em 0;overflow-wrap:anywhere}
span.whole{white-space:nowrap}
"""


@dataclass(frozen=True)
class FigureFile:
    """A written PNG and its caption."""

    path: Path
    caption: str


def esc(value: object) -> str:
    """Any value as HTML text: names from files and configs are shown literally, never interpreted."""
    return html.escape(str(value), quote=True)


def _cell(value: object, digits: int) -> str:
    if isinstance(value, float):
        if value != value:  # NaN: an undefined statistic, shown empty
            return ""
        return f"{value:.1e}" if value != 0 and abs(value) < 10.0**-digits else f"{value:.{digits}f}"
    return "" if value is None or value is pd.NA else _breakable(value)


def _breakable(name: object) -> str:
    """A name that may wrap after its underscores: ``prevalence_Atelectasis`` headers and ``padchest_all`` cells of
    a study with many datasets would otherwise widen their table past a 1280 px window."""
    return esc(name).replace("_", "_<wbr>")


def _prose(text: object) -> str:
    """Text that wraps at its spaces and after underscores but never inside a hyphenated word: a list of
    configuration names (``loo-chexpert, loo-nih``) reads as names, not as ``loo-`` at the end of a line."""
    whole, words = '<span class="whole">', []
    for word in str(text).split(" "):
        shown = _breakable(word)
        words.append(f"{whole}{shown.replace('<wbr>', f'</span><wbr>{whole}')}</span>" if "-" in word else shown)
    return " ".join(words)


def frame_html(
    frame: pd.DataFrame, digits: int = 3, highlight: Sequence[bool] | None = None, text: Collection[str] = ()
) -> str:
    """A plain HTML table; rows flagged in ``highlight`` get ``class="sig"``. Tiny numbers switch to 1.2e-05.
    Columns named in ``text`` hold prose: left-aligned, wrapped at spaces, hyphenated names kept whole."""
    if frame.empty:
        return "<p>(none)</p>"
    prose = [c in text for c in frame.columns]
    head = "".join(f'<th class="key">{_breakable(c)}</th>' if p else f"<th>{_breakable(c)}</th>"
                   for c, p in zip(frame.columns, prose, strict=True))  # fmt: skip
    flags = list(highlight) if highlight is not None else [False] * len(frame)
    rows = []
    for flag, values in zip(flags, frame.itertuples(index=False, name=None), strict=True):
        cells = "".join(f'<td class="key">{_prose(v)}</td>' if p and isinstance(v, str)
                        else f"<td>{_cell(v, digits)}</td>" for v, p in zip(values, prose, strict=True))  # fmt: skip
        rows.append(f'<tr class="sig">{cells}</tr>' if flag else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def figure_html(figure: FigureFile) -> str:
    data = base64.b64encode(figure.path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{esc(figure.caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{esc(figure.caption)}</figcaption></figure>"
    )


def _mark(unfinished: bool) -> str:
    """The visible mark of a run without ``done.json``, next to its name."""
    return f' <span class="unfinished">{UNFINISHED}</span>' if unfinished else ""


def notices_html(unfinished: Sequence[str], missing: pd.DataFrame | None) -> str:
    """The warnings a reader must see before any number: unfinished runs, configured test sets without files."""
    parts = []
    if unfinished:
        runs = ", ".join(esc(run) for run in unfinished)
        parts.append(
            f'<div class="notice"><p><b>Unfinished runs</b>{_mark(True)}: {runs}. These runs have no done.json (they '
            "were stopped before training finished) and were predicted with <code>--allow-unfinished</code>; their "
            "rows are marked in every table and figure and are not final results.</p></div>"
        )
    if missing is not None and not missing.empty:
        items = "".join(
            f"<li>{esc(r.configuration)}/{esc(r.arch)}, seed {esc(r.seed)}, test set <b>{esc(r.test_set)}</b>: "
            f"{esc(r.expected)} ({esc(r.reason)})</li>"
            for r in missing.itertuples(index=False)
        )
        parts.append(
            f'<div class="notice"><p><b>Configured test sets without predictions</b> ({len(missing)}): left out '
            f'of every table below (<a href="missing.csv">missing.csv</a>).</p><ul>{items}</ul></div>'
        )
    return "".join(parts)


def table1_html(config: StudyConfig, table: pd.DataFrame) -> str:
    """Table 1 from :func:`cxrgen.report.tables.table1` (built once, for the CSV, markdown, LaTeX and this page):
    one ``data-auc`` cell per (run, test set, label), the paper's value beside it when known."""
    labels = [c for c in table.columns if f"{c} ci_low" in table.columns]
    with_reference = has_reference(config)
    level = f"{config.evaluation.ci * 100:g} %"
    head = "".join(
        f"<th>{esc(label)}<br>AUC [{level} CI]</th>" + ("<th>paper</th>" if with_reference else "") for label in labels
    )
    out = [f"<table><thead><tr><th>model</th><th>configuration</th><th>test set</th>{head}</tr></thead><tbody>"]
    for row in table.to_dict("records"):
        arch, configuration, test_set, kind = (str(row[k]) for k in ("arch", "configuration", "test_set", "kind"))
        shown = test_set if test_set == kind else f"{kind} {test_set}"
        unfinished = bool(row.get("unfinished", False))
        flag = ' data-unfinished="true"' if unfinished else ""
        cells = [
            f'<td class="key"{flag}>{esc(model_label(config, arch))}{_mark(unfinished)}</td>',
            *(f'<td class="key">{esc(value)}</td>' for value in (configuration, shown)),
        ]
        for label in labels:
            value, low, high = float(row[label]), float(row[f"{label} ci_low"]), float(row[f"{label} ci_high"])
            interval = "" if pd.isna(low) or pd.isna(high) else f" [{format_auc(low)}, {format_auc(high)}]"
            cells.append(  # n/a: no AUC (one class in the test set, or a label the dataset does not record)
                f'<td class="auc" data-configuration="{esc(configuration)}" data-arch="{esc(arch)}" '
                f'data-test-set="{esc(test_set)}" data-label="{esc(label)}" data-auc="{value!r}" '
                f'data-ci-low="{low!r}" data-ci-high="{high!r}">'
                f'{format_auc(value)}<span class="ci">{interval}</span></td>'
            )
            if with_reference:
                paper = float(row[f"{label} paper"])
                cells.append(f'<td class="paper">{"" if pd.isna(paper) else format_auc(paper)}</td>')
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
    if comparisons.empty:
        return ""
    parts = ['<p class="meta">Every statistic, with the image-level DeLong SE and p beside the clustered ones: '
             '<a href="comparisons.csv">comparisons.csv</a>.</p>']
    for family, title in titles.items():
        part = comparisons.loc[comparisons["family"] == family]
        parts.append(f"<h3>{esc(title)}</h3>")
        if part.empty:  # no heading for a family the study does not have
            parts.pop()
            continue
        for key, rows in part.groupby(sides, sort=False):
            conf_a, arch_a, test_a, conf_b, arch_b, test_b = (str(k) for k in key)
            mark_a, mark_b = (_mark((c, a) in unfinished_runs) for c, a in ((conf_a, arch_a), (conf_b, arch_b)))
            parts.append(f'<p><b>a</b> = {esc(conf_a)}/{esc(arch_a)}{mark_a} on {esc(test_a)}, '
                         f'<b>b</b> = {esc(conf_b)}/{esc(arch_b)}{mark_b} on {esc(test_b)}</p>')
            body = []
            for _, r in rows.iterrows():
                sig = ' class="sig"' if not pd.isna(r["p_holm"]) and r["p_holm"] <= alpha else ""
                body.append(
                    f'<tr{sig}><td class="key">{esc(r["label"])}</td><td>{format_auc(r["auc_a"])}</td>'
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
    head = "".join(f"<th>{esc(c)}</th>" for c in summary.columns)
    lines = "".join(
        f'<tr><td class="key">{esc(r.iloc[0])}</td>' + "".join(f"<td>{v}</td>" for v in r.iloc[1:]) + "</tr>"
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
            f'<tr><td class="wrap">{esc(comparison)}{_mark(bool(r.get("unfinished", False)))}</td>'
            f'<td class="key">{esc(r["label"])}</td><td>{effect}</td>'
            f'<td>{_p(r["p_holm"])}</td><td class="{esc(verdict.split(" ")[0])}">{esc(verdict)}</td>'
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
    if table.empty:  # no external hospital: the section is left out
        return ""
    estimable = table[table["note"] == ""]
    if estimable.empty:
        ks = sorted({int(k) for k in table["k"]})
        return (f"<p>Not estimable for any run: each was tested on {' or '.join(map(str, ks))} external "
                "hospital(s), and a prediction interval for a new hospital needs at least 3 (t on k-2 degrees of "
                'freedom). <a href="next_hospital.csv">next_hospital.csv</a></p>')
    body = []
    for _, r in table.iterrows():
        if r["note"]:
            numbers = f'<td colspan="4" class="wrap">{esc(r["note"])}</td>'
        else:
            numbers = (f'<td>{format_auc(r["pooled_auc"])} <span class="ci">[{format_auc(r["ci_low"])}, '
                       f'{format_auc(r["ci_high"])}]</span></td><td>{format_auc(r["pi_low"])} to '
                       f'{format_auc(r["pi_high"])}</td><td>{r["tau2"]:.3f}</td><td>{r["i2"] * 100:.0f} %</td>')
        mark = _mark((r["configuration"], r["arch"]) in unfinished_runs)
        body.append(f'<tr><td class="key">{esc(r["configuration"])}/{esc(r["arch"])}{mark}</td><td class="key">'
                    f'{esc(r["label"])}</td><td>{int(r["k"])}</td>{numbers}</tr>')
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
            f'<tr><td class="key">{esc(r["configuration"])}/{esc(r["arch"])}{_mark(bool(r.get("unfinished", False)))}'
            f'</td><td class="key">{esc(r["test_set"])}'
            f'</td><td class="key">{esc(r["label"])}</td><td>{format_auc(r["auc"])} <span class="ci">'
            f'[{format_auc(r["ci_low"])}, {format_auc(r["ci_high"])}]</span></td><td>{sd}</td>'
            f'<td>{int(r["n_seeds"])}</td></tr>'
        )
    return (f'<p>{esc(note)}</p><details><summary>AUC per run over seeds (auc_seeds.csv)</summary><table><thead>'
            "<tr><th>run</th><th>test set</th><th>label</th><th>mean AUC [95 % CI]</th><th>seed SD</th>"
            f"<th>seeds</th></tr></thead><tbody>{''.join(body)}</tbody></table></details>")


def review_html(review: ReviewResult | None, figure: FigureFile | None) -> str:
    if review is None:
        return "<p>No error review (see the log for why).</p>"
    target = review.target
    thresholds = ", ".join(f"{esc(arch)} {t:.3f}" for arch, t in review.thresholds.items())
    parts = [
        f"<p>Label <b>{esc(target.label)}</b>, configuration <b>{esc(target.configuration)}</b>, test set "
        f"<b>{esc(target.test_set)}</b>: the {target.per_kind} most confident false positives and false negatives "
        "and the cases nearest the threshold. Each architecture's threshold maximizes Youden's J "
        f"(sensitivity + specificity - 1) on this test set: {thresholds}. Cases are ranked by the mean over "
        "architectures of probability minus threshold (margin)."
        + (f" Scores and Grad-CAM maps of {esc(review.drawn)}." if review.drawn else "")
        + "".join(f" {esc(arch)}{_mark(True)}" for arch in review.unfinished) + "</p>",
        *(f'<p class="note">{esc(note)}</p>' for note in review.notes),
        frame_html(review.cases.drop(columns=["path"]), digits=3),
    ]
    if figure is not None:
        parts.append(figure_html(figure))
    return "".join(parts)


def render_page(title: str, sections: Sequence[str]) -> str:
    """The complete self-contained page: the style sheet, then each section's HTML in order."""
    body = "\n".join(section for section in sections if section)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>cxrgen report: {esc(title)}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )
