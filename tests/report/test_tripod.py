"""The TRIPOD+AI checklist (issue 26): every sub-item listed; what the study computes is filled, with real content.
Also the training-curves figure, drawn from each run's metrics.csv."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd
import pytest

from cxrgen.report import build_report
from cxrgen.report.html import frame_html
from cxrgen.report.tripod import CHECKLIST, FILLED, TO_WRITE, counts, development_view, role_text
from cxrgen.study.config import StudyConfig
from helpers.report_study import DATASETS, make_study

#: Sub-items the study's own files answer: they must be filled on a demo-like study.
MUST_FILL = ("4", "5a", "6b", "7", "8a", "9a", "9b", "10", "11", "12a", "12b", "12c", "12d", "12e", "12f", "12g",
             "13", "15", "16", "18f", "20a", "20b", "20c", "21", "22", "23a", "23b", "24")
#: Sub-items only the authors can write.
MUST_WRITE = ("1", "2", "3a", "3b", "3c", "8b", "8c", "17", "18a", "18b", "18c", "18d", "19", "25", "26", "27c")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tripod")
    study = make_study(root, patients=40)
    for name in DATASETS:  # each dataset's metadata table, hashed as a data source
        (root / "data" / name).mkdir(parents=True, exist_ok=True)
        (root / "data" / name / "Data_Entry_2017.csv").write_text(f"Image Index,Finding Labels\n{name}.png,No\n")
    # the fake splits draw per image; make them patient-disjoint, as `prepare` does (each patient's first split)
    splits = pd.read_parquet(study / "splits.parquet")
    patient = pd.read_parquet(study / "manifest.parquet").set_index("image_id")["patient_id"]
    splits["split"] = splits.groupby(splits["image_id"].map(patient))["split"].transform("first")
    splits.to_parquet(study / "splits.parquet", index=False)
    for run in sorted((study / "runs").glob("*/*")):  # each run's metrics.csv, as training writes it
        pd.DataFrame({"epoch": [1, 2, 3], "step": [4, 8, 12], "train_loss": [0.7, 0.5, 0.4],
                      "val_loss": [0.72, 0.6, 0.58], "val_auc_mean": [0.6, 0.7, 0.72]}).to_csv(
            run / "metrics.csv", index=False)  # fmt: skip
    return build_report(study, review=False)


@pytest.fixture(scope="module")
def checklist(results: Path) -> pd.DataFrame:
    return pd.read_csv(results / "tripod_ai.csv", dtype={"sub_item": str}, keep_default_na=False)


def test_every_sub_item_of_the_checklist_is_listed(checklist: pd.DataFrame) -> None:
    assert len(CHECKLIST) == 52
    assert checklist["item"].nunique() == 27
    assert list(checklist["sub_item"]) == [c[0] for c in CHECKLIST]
    assert set(checklist["status"]) <= {FILLED, TO_WRITE}
    assert list(checklist.columns[:5]) == ["item", "sub_item", "section", "topic", "status"]


def test_what_the_study_computes_is_filled(checklist: pd.DataFrame) -> None:
    rows = checklist.set_index("sub_item")
    empty = [s for s in MUST_FILL if rows.loc[s, "status"] != FILLED]
    assert not empty, empty
    assert all(rows.loc[s, "status"] == TO_WRITE for s in MUST_WRITE)
    assert all(rows.loc[s, "content"].startswith("To write") for s in MUST_WRITE)
    filled, to_write = counts(checklist)
    assert filled + to_write == 52 and filled >= len(MUST_FILL)


def test_filled_rows_carry_the_numbers(checklist: pd.DataFrame, results: Path) -> None:
    rows = checklist.set_index("sub_item")["content"]
    # 5a: the metadata table's hash and date
    digest = hashlib.sha256(b"Image Index,Finding Labels\nalpha.png,No\n").hexdigest()[:16]
    assert f"Data_Entry_2017.csv sha256 {digest}" in rows["5a"] and "file date 20" in rows["5a"]
    # 6b/20a: the flow with the excluded images (make_study excludes 2 gamma images as truncated)
    assert "gamma:" in rows["6b"] and "2 excluded (truncated: 2)" in rows["6b"]
    assert "test outcome Cardiomegaly" in rows["20a"]
    # 8a: reference standard with the uncertainty and blank policies
    assert "Reference standard" in rows["8a"] and "blank (not mentioned) mapped to zeros" in rows["8a"]
    # 10: achieved widths per test set and label against the targets, matching sample_size.csv
    size = pd.read_csv(results / "sample_size.csv")
    assert {"auc_width", "slope_width", "oe_width", "auc_target_met"} <= set(size.columns)
    widest = size.loc[(size["test_set"] == "gamma") & (size["label"] == "Cardiomegaly"), "auc_width"].max()
    assert "gamma Cardiomegaly" in rows["10"] and f"AUC {widest:.3f}" in rows["10"]
    assert "targets AUC 0.1, calibration slope 0.2, O/E 0.2" in rows["10"]
    # 11: missing data per column; 12a: the leakage check
    assert re.search(r"Cardiomegaly \d+", rows["11"]) and "masked from loss and metrics" in rows["11"]
    assert "patient-disjoint: no patient in two splits" in rows["12a"]
    # 22: package versions; 23b: why heterogeneity is not estimable with one external hospital
    assert "torch " in rows["22"] and "statsmodels " in rows["22"]
    assert "Not estimable: 1 external" in rows["23b"]
    shift = pd.read_csv(results / "development_vs_evaluation.csv")
    assert list(shift["dataset"]) == list(DATASETS)
    assert {"role", "prevalence_Cardiomegaly", "age_mean", "female_pct", "views"} <= set(shift.columns)


def test_each_role_lists_its_configurations_once(results: Path) -> None:
    """Roles played in the same configurations share one list, in the CSV and on the page (a six-hospital
    leave-one-out study listed every role once per configuration, 300 characters per cell)."""
    shift = pd.read_csv(results / "development_vs_evaluation.csv").set_index("dataset")
    assert shift["role"].to_dict() == {
        "alpha": "development and internal testing: alpha, both",
        "beta": "development and internal testing: both",
        "gamma": "external testing: alpha, both",
    }
    page = (results / "report.html").read_text(encoding="utf-8")
    section = page.split('<h2 id="development-versus-evaluation-data">')[1].split("<h2")[0]
    assert '<td class="key">external testing: alpha, both</td>' in section
    assert "<th>age, mean (SD)</th>" in section and "age_<wbr>mean" not in section
    assert {"age_mean", "age_sd"} <= set(shift.columns)  # the CSV keeps the numbers


def test_role_text_groups_roles_by_their_configurations() -> None:
    config = StudyConfig.model_validate({
        "name": "roles", "out": "/nonexistent/roles", "labels": ["Edema"],
        "datasets": {d: {"reader": "nih", "root": f"/nonexistent/{d}"} for d in ("a", "b", "c", "d")},
        "configurations": [{"name": "c1", "train": ["a", "b"], "internal": ["a"], "external": ["c"]},
                           {"name": "c2", "train": ["a"], "internal": ["a"], "external": ["b"]}],
    })  # fmt: skip
    assert role_text(config) == {
        "a": "development and internal testing: c1, c2",
        "b": "development: c1; external testing: c2",
        "c": "external testing: c1",
        "d": "not used",
    }


def test_development_view_and_prose_cells() -> None:
    table = pd.DataFrame({"dataset": ["padchest_all", "x"], "role": ["external testing: loo-pad_chest", "not used"],
                          "images": [3, 4], "age_mean": [63.1, float("nan")], "age_sd": [15.64, float("nan")],
                          "female_pct": [43.9, 50.0], "views": ["PA 60 %, AP 40 %", "PA 100 %"],
                          "devices_pct": [float("nan"), 21.04]})  # fmt: skip
    view = development_view(table)
    assert list(view.columns) == ["dataset", "role", "images", "age, mean (SD)", "female %", "views", "devices %"]
    assert view.iloc[0].tolist() == ["padchest_all", "external testing: loo-pad_chest", 3, "63.1 (15.6)", "43.9",
                                     "PA 60\u00a0%, AP 40\u00a0%", ""]  # fmt: skip
    assert view.iloc[1, 3:].tolist() == ["", "50.0", "PA 100\u00a0%", "21.0"]
    html = frame_html(view.iloc[:1], text=("dataset", "role"))
    # prose: left-aligned; wraps at spaces and underscores, never inside a hyphenated name
    assert ('<td class="key">external testing: <span class="whole">loo-pad_</span><wbr><span class="whole">chest'
            "</span></td>") in html  # fmt: skip
    assert '<td class="key">padchest_<wbr>all</td>' in html and '<th class="key">role</th>' in html


def test_the_page_has_the_checklist_with_links(results: Path) -> None:
    page = (results / "report.html").read_text(encoding="utf-8")
    assert '<h2 id="tripod-ai-checklist">' in page
    assert '<h2 id="development-versus-evaluation-data">' in page
    for target in set(re.findall(r'<a href="#([a-z0-9-]+)">\(section\)</a>', page)):
        assert f'id="{target}"' in page, target


def test_training_curves_figure_for_every_run(results: Path) -> None:
    page = (results / "report.html").read_text(encoding="utf-8")
    assert (results / "figures" / "training_curves.png").is_file()
    section = page.split('<h2 id="training-curves">Training curves</h2>')[1].split("<h2")[0]
    assert "<img" in section and "one line per run" in section
    assert '<a href="#training-curves">(section)</a>' in page  # TRIPOD+AI 12c links to it


def test_no_training_curves_section_without_metrics(tmp_path: Path) -> None:
    from cxrgen.report.build import training_curves
    from cxrgen.report.inputs import find_predictions, load_inputs

    study = make_study(tmp_path, patients=10, archs=("densenet121",))
    assert training_curves(find_predictions(load_inputs(study))) == {}
