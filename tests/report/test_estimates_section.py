"""``results/estimates.csv`` on the fake study (issue 24): one row per fold, label and method; target labels unread."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cxrgen.report.estimates import BASELINES, estimates_html, estimates_table, write_estimates
from cxrgen.report.inputs import find_predictions, load_inputs
from cxrgen.shift.estimates import METHODS
from cxrgen.study.workspace import Study
from helpers.report_study import LABELS, make_study, predictions

ARCHS = ("densenet121", "inception_resnet_v2")


def _with_validation(study: Path, *, labelled: bool) -> Path:
    if labelled:  # estimate on the labelled external set too, beside the truth
        config = yaml.safe_load((study / "config.yaml").read_text(encoding="utf-8"))
        config["evaluation"]["estimate"] = {"labelled": True}
        (study / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    opened = Study.open(study)
    frame = pd.read_parquet(study / "manifest.parquet").merge(pd.read_parquet(study / "splits.parquet"))
    rng = np.random.default_rng(1)
    for conf in opened.config.configurations:
        for arch in ARCHS:
            val = frame.loc[frame["dataset"].isin(conf.train)]  # the fake val split is tiny: use train too
            predictions(val, 1.6, rng).to_parquet(opened.run(conf.name, arch).validation)
    return study


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _with_validation(make_study(tmp_path_factory.mktemp("est"), archs=ARCHS, patients=60), labelled=True)


def test_one_row_per_fold_label_and_method(labelled: Path, tmp_path: Path) -> None:
    inputs = load_inputs(labelled)
    preds = find_predictions(inputs)
    found, figure = write_estimates(inputs, preds, tmp_path)
    table = pd.read_csv(tmp_path / "estimates.csv")
    auc = table.loc[table["metric"] == "auc"]
    externals = [p for p in preds if p.kind == "external"]
    keys = ["configuration", "arch", "test_set", "label", "method"]
    assert not auc.duplicated(keys).any()
    assert len(auc) == len(externals) * len(LABELS) * (len(METHODS) + len(BASELINES))
    assert set(auc["method"]) == {*METHODS, *BASELINES}
    assert auc["true_value"].notna().all() and auc["labelled"].all()
    agreement = table.loc[table["method"] == "agreement"]
    assert len(agreement) == len(externals) * len(LABELS)  # two architectures per configuration: one pair
    assert set(agreement["metric"]) == {"accuracy"}
    estimated = table.loc[~table["method"].isin(BASELINES)]
    assert estimated["flag"].notna().all()
    np.testing.assert_allclose(estimated["error"], estimated["estimate"] - estimated["true_value"])
    summary = pd.read_csv(tmp_path / "estimates_summary.csv")
    # one external hospital only: no "other hospitals" to average, so that baseline is NaN and left out
    assert set(summary["method"]) == {*METHODS, "internal_auc"}
    assert auc.loc[auc["method"] == "other_hospitals_auc", "estimate"].isna().all()
    assert (summary["mae"] >= 0).all() and summary.loc[summary["method"] == "cbpe", "coverage"].notna().all()
    assert figure is not None and figure.is_file()
    page = estimates_html(found, figure, tmp_path)
    assert "Before the labels" in page and "estimates.csv" in page
    signals = page.split("The flag's signals")[1]
    assert signals.count("<tr>") == 1 + len(externals) * len(LABELS)  # a header, then one row per fold and label
    text = re.sub(r"<[^>]+>", "", signals)  # names may carry <wbr> break points
    assert "embedding_auc" in text and "no embeddings" in text  # the fake study holds no embeddings


def test_shuffled_target_labels_give_identical_estimates(labelled: Path) -> None:
    inputs = load_inputs(labelled)
    preds = find_predictions(inputs)
    rng = np.random.default_rng(7)
    shuffled = []
    for pred in preds:
        frame = pred.frame.copy()
        if pred.kind == "external":
            for label in LABELS:
                frame[f"y_{label}"] = rng.permutation(frame[f"y_{label}"].to_numpy())
        shuffled.append(dataclasses.replace(pred, frame=frame))
    a = estimates_table(inputs, preds).table
    b = estimates_table(inputs, shuffled).table
    mine = ~a["method"].isin(BASELINES)
    for column in ("estimate", "ci_low", "ci_high", "flag", "spread", "prevalence_odds", "outside"):
        pd.testing.assert_series_equal(a.loc[mine, column], b.loc[mine, column], check_exact=True)
    assert not a.loc[mine, "true_value"].equals(b.loc[mine, "true_value"])  # the truth did change


def test_unlabelled_external_sets_are_estimated_by_default(tmp_path: Path) -> None:
    study = _with_validation(make_study(tmp_path, archs=ARCHS, patients=40, unlabelled_external=True),
                             labelled=False)  # fmt: skip
    inputs = load_inputs(study)
    table = estimates_table(inputs, find_predictions(inputs)).table
    assert not table.empty and not table["labelled"].any()
    assert table["true_value"].isna().all()
    assert set(table["method"]) == {*METHODS, "agreement"}


def test_the_first_screen_shows_the_label_free_estimate_of_an_unlabelled_set(tmp_path: Path) -> None:
    """Issue 26's first table: an unlabelled set is "not estimable" from labels, with the label-free CBPE mean AUC
    over its labels and the trust flag beside it (issue 24)."""
    import re

    from cxrgen.report.build import build_report

    study = _with_validation(make_study(tmp_path, archs=ARCHS, patients=40, unlabelled_external=True),
                             labelled=False)  # fmt: skip
    results = build_report(study, review=False)
    estimates = pd.read_csv(results / "estimates.csv")
    cbpe = estimates[(estimates["method"] == "cbpe") & (estimates["metric"] == "auc")]
    page = (results / "report.html").read_text(encoding="utf-8")
    first = page.split("<h2")[1]  # the Results section
    cells = [re.sub(r"<[^>]+>", "", row) for row in re.findall(r"<tr>(.*?)</tr>", first, flags=re.S)]
    shown = 0
    for (configuration, _arch, test_set), part in cbpe.groupby(["configuration", "arch", "test_set"]):
        trust = "flagged: do not trust" if part["flag"].any() else "not flagged"
        text = (f"not estimable (the test set has no labels); estimated before the labels "
                f"{part['estimate'].mean():.3f} (CBPE, {trust})")  # fmt: skip
        shown += sum(text in row and configuration in row and f"external {test_set}" in row for row in cells)
    assert shown == cbpe.groupby(["configuration", "arch", "test_set"]).ngroups > 0
