"""The report's first screen (issue 26): the study's own results first, whatever its design.

The first table (``overview.csv`` and the page's "Results") gives per model and test set the mean AUC over the
labels estimable there (and names them), the internal-external gap, and for an unlabelled set "not estimable" with
the predicted prevalence; the paper's claims only when the study has their shape; no section without content.
"""

from __future__ import annotations

import html as htmllib
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxrgen.report import build_report
from cxrgen.report.inputs import Predictions
from cxrgen.report.overview import NOT_ESTIMABLE_UNLABELLED, describe_labels, overview_table, paper_shape
from helpers.report_study import LABELS, make_study, read_config


def first_table(page: str) -> tuple[list[str], list[list[str]]]:
    """Header cells and rows of the first ``<table>`` of a page, as text."""
    table = re.search(r"<table[^>]*>(.*?)</table>", page, re.DOTALL)
    assert table is not None
    head = [htmllib.unescape(c) for c in re.findall(r"<th>(.*?)</th>", table.group(1))]
    rows = [[htmllib.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr)]
            for tr in re.findall(r"<tbody>.*?</tbody>", table.group(1), re.DOTALL)[0].split("</tr>") if "<td" in tr]
    return head, rows


def empty_headings(page: str) -> list[str]:
    """Headings (h2/h3) followed directly by another heading or the end of the page."""
    return re.findall(r"<(h[23])[^>]*>([^<]*)</\1>\s*(?=<h[23]|</body>)", page)


def assert_first_screen_layout(page: str) -> None:
    headings = re.findall(r"<h2[^>]*>([^<]+)</h2>", page)
    assert headings[:2] == ["Results", "Findings"]
    assert not empty_headings(page), empty_headings(page)


HEAD = ["Model", "Trained on", "Test set", "Images (patients)", "Mean AUC over labels [95 % CI]",
        "Labels in the mean", "Gap: internal minus this set", "Prevalence predicted / observed"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(make_study(tmp_path_factory.mktemp("labelled"), patients=40), review=False)


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    study = make_study(tmp_path_factory.mktemp("unlabelled"), patients=40, unlabelled_external=True)
    return build_report(study, review=False)


def test_mean_is_over_the_estimable_labels_and_names_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 80
    frame = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "patient_id": [f"p{k // 2}" for k in range(n)]})
    y = {"A": (rng.random(n) < 0.4).astype(float), "B": np.zeros(n), "C": (rng.random(n) < 0.5).astype(float)}
    for label, values in y.items():
        frame[f"y_{label}"] = values
        frame[f"p_{label}"] = np.clip(0.3 * values + rng.random(n) * 0.7, 0, 1)
    internal = Predictions("c", "m", "internal", "internal", ("a",), tmp_path / "i.parquet", frame, ["A", "B", "C"])
    ext = frame.copy()
    for label in y:
        ext[f"y_{label}"] = np.nan
    external = Predictions("c", "m", "x", "external", ("x",), tmp_path / "x.parquet", ext, ["A", "B", "C"])
    config = read_config(make_study(tmp_path, patients=5))
    table = overview_table(config, [internal, external])  # B has one class: left out of the mean
    row = table.iloc[0]
    expected = np.mean([roc_auc_score(y[k], frame[f"p_{k}"]) for k in ("A", "C")])
    assert row["mean_auc"] == pytest.approx(expected, abs=1e-12)
    assert row["labels"] == "A; C" and row["ci_low"] < row["mean_auc"] < row["ci_high"]
    assert describe_labels(["A", "C"], ["A", "B", "C"]) == "2 of 3 (not B: one class)"
    unl = table.iloc[1]
    assert not unl["labelled"] and unl["status"] == NOT_ESTIMABLE_UNLABELLED
    assert math.isnan(unl["mean_auc"]) and math.isnan(unl["gap"])
    expected_prev = np.mean([frame[f"p_{k}"].mean() for k in y])
    assert unl["predicted_prevalence"] == pytest.approx(expected_prev, abs=1e-12)
    assert math.isnan(unl["observed_prevalence"])


def test_first_table_of_a_labelled_study(labelled: Path) -> None:
    page = (labelled / "report.html").read_text(encoding="utf-8")
    assert_first_screen_layout(page)
    head, rows = first_table(page)
    assert head == HEAD
    overview = pd.read_csv(labelled / "overview.csv")
    assert len(rows) == len(overview) == 8  # 2 configurations x 2 architectures x (internal, gamma)
    for cells, r in zip(rows, overview.itertuples(index=False), strict=True):
        assert cells[:4] == [r.arch, r.configuration, "internal" if r.kind == "internal" else "external gamma",
                             f"{r.n_images} ({r.n_patients})"]
        assert cells[4] == f"{r.mean_auc:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
        assert cells[5] == f"all {len(LABELS)}"
        gap = "(reference)" if r.kind == "internal" else f"{r.gap:+.3f} [{r.gap_low:+.3f}, {r.gap_high:+.3f}]"
        assert cells[6] == gap
        assert cells[7] == f"{r.predicted_prevalence:.3f} / {r.observed_prevalence:.3f}"
    # the gap is the internal mean minus the external mean of the same run
    internal = overview[overview["kind"] == "internal"].set_index(["configuration", "arch"])["mean_auc"]
    for r in overview[overview["kind"] == "external"].itertuples(index=False):
        assert r.gap == pytest.approx(internal[(r.configuration, r.arch)] - r.mean_auc, abs=1e-12)
    # the fake study has the paper's shape (a union beside one of its sources, two architectures, both kinds)
    assert "<h2 id=\"the-paper-s-claims\">The paper&#x27;s claims</h2>" in page


def test_first_table_of_a_study_with_an_unlabelled_external_set(unlabelled: Path) -> None:
    page = (unlabelled / "report.html").read_text(encoding="utf-8")
    assert_first_screen_layout(page)
    head, rows = first_table(page)
    assert head == HEAD
    external = [cells for cells in rows if cells[2] == "external gamma"]
    assert len(external) == 4
    overview = pd.read_csv(unlabelled / "overview.csv")
    for cells, r in zip(external, overview[overview["kind"] == "external"].itertuples(index=False), strict=True):
        assert cells[4] == "not estimable (the test set has no labels)" and cells[5] == ""
        assert cells[6] == "not estimable (no labels)"
        assert cells[7] == f"{r.predicted_prevalence:.3f}"
    assert "The paper's claims" not in re.findall(r"<h2[^>]*>([^<]+)</h2>", page)
    assert "The paper&#x27;s claims are not tested: this study has no labelled external test set." in page
    findings = pd.read_csv(unlabelled / "findings.csv")
    gamma = findings[findings["comparison"].str.contains("gamma")]
    assert not gamma.empty and (gamma["verdict"] != "inconclusive").all()
    assert "inconclusive" not in page.split("<h2")[2]  # the Findings section
    assert "not estimable" in page.split("<h2")[2]


def test_paper_shape_names_what_is_missing(labelled: Path) -> None:
    config = read_config(labelled.parent)
    assert paper_shape(config, []) == ("The paper's claims are not tested: this study has one architecture; no "
                                       "labelled internal test set.")


def test_notes_section_counts_warnings_by_kind_without_source_lines(unlabelled: Path) -> None:
    page = (unlabelled / "report.html").read_text(encoding="utf-8")
    notes = pd.read_csv(unlabelled / "notes.csv")
    one_class = notes[notes["category"] == "OneClassWarning"]
    assert len(one_class) == 1 and one_class["count"].iloc[0] > 1  # many labels and runs, one line
    assert "<h2 id=\"notes\">Notes</h2>" in page
    section = page.split('<h2 id="notes">Notes</h2>')[1]
    assert f"{one_class['count'].iloc[0]} x OneClassWarning: AUC undefined for" in section
    assert ".py:" not in section and ".py:" not in " ".join(notes["message"])


def test_calibration_csv_has_slope_intercept_and_o_e(unlabelled: Path) -> None:
    from cxrgen.metrics import calibration_fit
    from cxrgen.metrics.evaluate import read_predictions

    table = pd.read_csv(unlabelled / "calibration.csv", keep_default_na=False, na_values=[""])
    gamma = table[table["test_set"] == "gamma"]
    assert (gamma["n"] == 0).all() and (gamma["note"] == "no labelled image").all() and gamma["slope"].isna().all()
    internal = table[table["test_set"] == "internal"]
    separated = internal[internal["slope"].isna()]  # small sets with strong signal: perfect separation
    assert (separated["note"] == "slope not estimable (constant scores or separation)").all()
    row = internal[internal["slope"].notna()].iloc[0]
    frame, _ = read_predictions(unlabelled.parent / "runs" / row["configuration"] / row["arch"] / "predictions"
                                / "internal.parquet")
    label = row["label"]
    fit = calibration_fit(frame[f"y_{label}"], frame[f"p_{label}"])
    assert (row["slope"], row["slope_low"], row["slope_high"]) == pytest.approx(fit.slope, rel=1e-12)
    assert (row["o_e"], row["intercept"]) == pytest.approx((fit.o_e[0], fit.intercept[0]), rel=1e-12)
