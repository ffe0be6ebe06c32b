"""Tests of cxrgen.report: every output file, its schema, Holm, the paper's values, HTML vs CSV, the review."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrgen.errors import CxrgenError
from cxrgen.report import build_report
from cxrgen.report.comparisons import COMPARISONS_COLUMNS, FAMILIES
from cxrgen.report.tables import AUC_CSV_COLUMNS, markdown_table
from helpers.report_study import LABELS, make_study

ARCHS = ("densenet121", "inception_resnet_v2")
FILES = (
    "auc.csv",
    "calibration.csv",
    "cohort.csv",
    "comparisons.csv",
    "config.yaml",
    "report.html",
    "table1.csv",
    "table1.md",
    "table1.tex",
)
FIGURES = (
    "cohort_flow.png",
    "demographics.png",
    "generalization_gap.png",
    *(f"roc_{a}.png" for a in ARCHS),
    *(f"calibration_{a}.png" for a in ARCHS),
)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    study = make_study(tmp_path_factory.mktemp("report"))
    return build_report(study, review=False)


def test_every_file_is_written(results: Path) -> None:
    for name in FILES:
        assert (results / name).is_file(), name
        assert (results / name).stat().st_size > 0, name
    assert not (results / "review.csv").exists()  # review=False
    assert not list(results.rglob("*.tmp")), "temporary files left behind"


def test_figures_are_valid_png(results: Path) -> None:
    for name in FIGURES:
        with Image.open(results / "figures" / name) as image:
            image.verify()
            assert image.format == "PNG"
        with Image.open(results / "figures" / name) as image:
            assert image.size[0] > 200 and image.size[1] > 200


def test_auc_csv_schema_and_rows(results: Path) -> None:
    auc = pd.read_csv(results / "auc.csv")
    assert tuple(auc.columns) == AUC_CSV_COLUMNS
    # 2 configurations x 2 architectures x (internal + gamma) x 2 labels
    assert len(auc) == 2 * 2 * 2 * len(LABELS)
    assert set(auc["kind"]) == {"internal", "external"}
    assert set(auc.loc[auc["kind"] == "external", "test_set"]) == {"gamma"}
    assert set(auc["label"]) == set(LABELS)
    assert ((auc["ci_low"] <= auc["auc"]) & (auc["auc"] <= auc["ci_high"])).all()
    assert ((auc["delong_low"] <= auc["auc"]) & (auc["auc"] <= auc["delong_high"])).all()
    assert (auc["n_pos"] > 0).all() and (auc["n_neg"] > 0).all()
    # The fixture excludes two gamma images; internal test sets lose none.
    assert (auc.loc[auc["test_set"] == "gamma", "n_excluded"] == 2).all()
    assert (auc.loc[auc["test_set"] == "internal", "n_excluded"] == 0).all()
    # Known signal: internal predictions are stronger than external ones for every run and label.
    wide = auc.pivot_table(index=["configuration", "arch", "label"], columns="kind", values="auc")
    assert (wide["internal"] > wide["external"]).all()


def test_auc_equals_sklearn(results: Path) -> None:
    from sklearn.metrics import roc_auc_score

    auc = pd.read_csv(results / "auc.csv")
    study = results.parent
    frame = pd.read_parquet(study / "runs" / "both" / "densenet121" / "predictions" / "gamma.parquet")
    for label in LABELS:
        keep = frame[f"y_{label}"].notna()
        expected = roc_auc_score(frame.loc[keep, f"y_{label}"], frame.loc[keep, f"p_{label}"])
        row = auc.loc[(auc.configuration == "both") & (auc.arch == "densenet121") & (auc.test_set == "gamma")]
        assert row.loc[row["label"] == label, "auc"].item() == pytest.approx(expected, abs=1e-12)


def test_comparisons_schema_families_and_holm(results: Path) -> None:
    comp = pd.read_csv(results / "comparisons.csv")
    assert tuple(comp.columns) == COMPARISONS_COLUMNS
    assert set(comp["family"]) == set(FAMILIES)
    tested = comp.dropna(subset=["p"])
    assert (tested["p_holm"] >= tested["p"] - 1e-15).all()
    assert ((tested["p_holm"] >= 0) & (tested["p_holm"] <= 1)).all()

    gaps = comp.loc[comp["family"] == "internal_vs_external"]
    assert len(gaps) == 2 * 2 * len(LABELS)  # configurations x architectures x labels
    assert (gaps["test"] == "clustered_unpaired").all()
    assert (gaps["test_set_a"] == "internal").all() and (gaps["test_set_b"] == "gamma").all()
    assert np.allclose(gaps["difference"], gaps["auc_a"] - gaps["auc_b"])

    multi = comp.loc[comp["family"] == "multi_vs_single"]
    assert len(multi) == 2 * len(LABELS)
    assert (multi["configuration_a"] == "both").all() and (multi["configuration_b"] == "alpha").all()
    assert (multi["test"] == "clustered_paired_bootstrap").all() and (multi["n_a"] == multi["n_b"]).all()

    archs = comp.loc[comp["family"] == "architectures"]
    assert len(archs) == 2 * 2 * len(LABELS)  # configurations x test sets x labels
    assert (archs["arch_a"] != archs["arch_b"]).all()
    assert (archs["configuration_a"] == archs["configuration_b"]).all()

    # Holm within each family equals Holm applied to that family alone.
    from cxrgen.metrics import holm

    for family in FAMILIES:
        part = comp.loc[comp["family"] == family]
        assert np.allclose(part["p_holm"], holm(part["p"].to_numpy()), equal_nan=True)


def test_table1_has_paper_values_beside_ours(results: Path) -> None:
    table = pd.read_csv(results / "table1.csv")
    for label in LABELS:
        for column in (label, f"{label} ci_low", f"{label} ci_high", f"{label} paper"):
            assert column in table.columns
    assert len(table) == 2 * 2 * 2  # architectures x configurations x test sets
    row = table.loc[(table.arch == "densenet121") & (table.configuration == "alpha")].set_index("test_set")
    assert row.at["internal", "Cardiomegaly paper"] == 0.9
    assert row.at["gamma", "Cardiomegaly paper"] == 0.7
    assert math.isnan(row.at["internal", "Edema paper"])
    auc = pd.read_csv(results / "auc.csv")
    mine = auc.loc[
        (auc.arch == "densenet121") & (auc.configuration == "alpha") & (auc.test_set == "gamma")
        & (auc.label == "Cardiomegaly"), "auc"
    ].item()  # fmt: skip
    assert row.at["gamma", "Cardiomegaly"] == mine

    md = (results / "table1.md").read_text(encoding="utf-8")
    assert "Cardiomegaly paper" in md and "0.900" in md and f"{mine:.3f}" in md
    tex = (results / "table1.tex").read_text(encoding="utf-8")
    assert "\\begin{tabular}" in tex and "inception\\_resnet\\_v2" in tex and "95 \\%" in tex


def test_html_auc_cells_equal_auc_csv(results: Path) -> None:
    page = (results / "report.html").read_text(encoding="utf-8")
    auc = pd.read_csv(results / "auc.csv")
    cells = re.findall(
        r'<td class="auc" data-configuration="([^"]*)" data-arch="([^"]*)" data-test-set="([^"]*)" '
        r'data-label="([^"]*)" data-auc="([^"]*)"[^>]*>([0-9.]+|n/a)',
        page,
    )
    assert len(cells) == len(auc)
    expected = {(r.configuration, r.arch, r.test_set, r.label): float(r.auc) for r in auc.itertuples(index=False)}
    for configuration, arch, test_set, label, value, shown in cells:
        reference = expected[(configuration, arch, test_set, label)]
        assert float(value) == reference  # exact: repr round-trips, as does the CSV
        assert shown == f"{reference:.3f}"


def test_html_is_self_contained(results: Path) -> None:
    page = (results / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == len(FIGURES)
    # The only links allowed lead to the CSVs the report wrote beside the page (the full tables).
    links = re.findall(r'(?:src|href)="(?!data:)([^"]*)"', page)
    assert links and all(re.fullmatch(r"[a-z_0-9]+\.csv|#[a-z0-9-]+", link) for link in links), links
    assert all((results / link).is_file() for link in links if not link.startswith("#"))
    assert all(f'id="{link[1:]}"' in page for link in links if link.startswith("#"))
    assert "<script" not in page


def test_no_reference_means_no_paper_columns(tmp_path: Path) -> None:
    results = build_report(make_study(tmp_path, reference=False, patients=30), review=False)
    table = pd.read_csv(results / "table1.csv")
    assert not [c for c in table.columns if c.endswith(" paper")]


def test_missing_predictions_is_a_clear_error(tmp_path: Path) -> None:
    study = make_study(tmp_path, patients=20)
    for file in study.glob("runs/*/*/predictions/*.parquet"):
        file.unlink()
    with pytest.raises(CxrgenError, match="no predictions files"):
        build_report(study, review=False)


def test_review_without_checkpoints_degrades(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    results = build_report(make_study(tmp_path, patients=30, image_size=32), review=True)
    cases = pd.read_csv(results / "review.csv")
    assert set(cases["kind"]) <= {"false positive", "false negative", "borderline"}
    assert len(cases) <= 3 * 2
    assert "no checkpoint" in caplog.text
    assert "no checkpoint" in (results / "report.html").read_text(encoding="utf-8")


def test_markdown_table_escapes_pipes() -> None:
    text = markdown_table(pd.DataFrame({"a|b": ["x|y"], "n": [1]}))
    assert text.splitlines()[0] == "| a\\|b | n |"
    assert text.splitlines()[1] == "|---|---:|"
    assert text.splitlines()[2] == "| x\\|y | 1 |"


REVIEW_ARCHS = ("test_resnet", "test_efficientnet")


def _write_checkpoint(study: Path, configuration: str, arch: str, size: int) -> None:
    """A run checkpoint as training writes it: Lightning ``state_dict`` (``model.`` prefix) and ``cxrgen`` meta."""
    import torch

    from cxrgen.learn.checkpoints import save_checkpoint
    from cxrgen.models.registry import create_model

    torch.manual_seed(0)
    model = create_model(arch, len(LABELS), pretrained=False)
    state = {
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "cxrgen": {"arch": arch, "labels": LABELS, "input_size": size, "keras_faithful": False},
    }
    save_checkpoint(state, study / "runs" / configuration / arch / "checkpoints" / "best.ckpt")


def test_review_with_tiny_models_draws_grad_cam(tmp_path: Path) -> None:
    size = 32
    study = make_study(tmp_path, archs=REVIEW_ARCHS, patients=25, images=True, image_size=size)
    for arch in REVIEW_ARCHS:
        _write_checkpoint(study, "both", arch, size)

    from cxrgen.report.figures import save_png
    from cxrgen.report.inputs import find_predictions, load_inputs
    from cxrgen.report.review import error_review, review_figure, youden_threshold

    inputs = load_inputs(study)
    review = error_review(inputs, find_predictions(inputs))
    assert review is not None
    assert (review.target.configuration, review.target.test_set) == ("both", "gamma")  # most train datasets
    assert review.notes == []
    assert set(review.cams) == set(REVIEW_ARCHS)
    for arch in REVIEW_ARCHS:
        assert review.cams[arch].shape == (len(review.cases), size, size, 3)
        assert review.cams[arch].dtype == np.uint8
    fp = review.cases.loc[review.cases["kind"] == "false positive"]
    fn = review.cases.loc[review.cases["kind"] == "false negative"]
    assert (fp["y"] == 0).all() and (fp["margin"] >= 0).all()
    assert (fn["y"] == 1).all() and (fn["margin"] < 0).all()
    # Youden threshold: a 0/1 split perfectly separated at 0.5 gives the smallest positive score.
    assert youden_threshold(np.array([0, 0, 1, 1.0]), np.array([0.1, 0.4, 0.6, 0.9]), "x") == 0.6

    figure = review_figure(review)
    assert figure is not None
    save_png(figure, tmp_path / "review.png")
    with Image.open(tmp_path / "review.png") as image:
        image.verify()


def test_grad_cam_releases_hooks() -> None:
    import torch

    from cxrgen.models.registry import create_model, get_arch
    from cxrgen.models.saliency import cam_layer_name, grad_cam

    model = create_model("test_resnet", 2, pretrained=False)
    layer = model.get_submodule(cam_layer_name(model, get_arch("test_resnet")))
    images = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32), dtype=np.uint8)
    maps = grad_cam(model, cam_layer_name(model, get_arch("test_resnet")), images, label_index=1)
    assert maps.shape == (3, 32, 32) and maps.min() >= 0 and maps.max() <= 1
    assert not layer._forward_hooks and not layer._backward_hooks and not layer._forward_pre_hooks
    assert all(not m._forward_hooks for m in model.modules())
    assert isinstance(model, torch.nn.Module)


def test_the_page_is_its_sections_in_order_each_file_linked_once(results: Path) -> None:
    from cxrgen.report.sections import Section

    section = Section("T", '<p>see <a href="a.csv">a.csv</a></p>', ("a.csv", "b.csv"))
    assert section.html().count('href="a.csv"') == 1
    assert section.html().endswith('Behind this section: <a href="b.csv">b.csv</a>.</p>')
    page = (results / "report.html").read_text(encoding="utf-8")
    headings = re.findall(r"<h2[^>]*>([^<]+)</h2>", page)
    order = ["Findings", "The next hospital", "Cohort", "Table 1: AUC-ROC per label", "Comparisons", "ROC curves",
             "Generalization gap", "Calibration", "Shift-aware evaluation"]
    assert [h for h in headings if h in order] == order
    assert "Error review" not in headings  # built with review=False: no heading, not an empty one
    for name in ("findings.csv", "cohort.csv", "table1.csv", "comparisons.csv", "calibration.csv"):
        assert f'href="{name}"' in page and (results / name).is_file(), name
