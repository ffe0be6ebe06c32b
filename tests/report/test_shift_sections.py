"""The report's shift sections on the fake study: six CSVs with their schemas, numbers traceable to the inputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrgen.report.inputs import find_predictions, load_inputs
from cxrgen.report.shift_html import shift_html
from cxrgen.report.shift_tables import FILES, shift_tables, write_shift_results
from cxrgen.study.workspace import Study
from helpers.report_study import LABELS, make_study, predictions, read_config


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shift")
    study = make_study(root, archs=("densenet121",), patients=80)
    opened = Study.open(study)
    manifest = pd.read_parquet(study / "manifest.parquet")
    splits = pd.read_parquet(study / "splits.parquet")
    rng = np.random.default_rng(1)
    frame = manifest.merge(splits, on=["image_id", "dataset"])
    for conf in opened.config.configurations:
        val = frame.loc[frame["dataset"].isin(conf.train)]  # the fake study's val split is tiny: use train too
        predictions(val, 1.6, rng).to_parquet(opened.run(conf.name, "densenet121").validation)
    return study


def test_six_csvs_and_sections(study: Path, tmp_path: Path) -> None:
    inputs = load_inputs(study)
    preds = find_predictions(inputs)
    shift = write_shift_results(inputs, preds, tmp_path)
    for name in FILES:
        assert (tmp_path / f"{name}.csv").is_file()
    op = pd.read_csv(tmp_path / "operating_points.csv")
    assert set(op["rule"]) == {"youden", "sensitivity90"}
    assert len(op) == len(preds) * len(LABELS) * 2 * 4
    # the threshold is the validation set's, identical on every test set of a run
    assert (op.groupby(["configuration", "arch", "label", "rule"])["threshold"].nunique() == 1).all()
    cal = pd.read_csv(tmp_path / "calibration_shift.csv")
    per_method = cal.pivot_table(index=["configuration", "test_set", "label"], columns="method", values="auc")
    np.testing.assert_allclose(per_method["temperature"], per_method["none"], atol=1e-12)
    np.testing.assert_allclose(per_method["prior_shift"], per_method["none"], atol=1e-12)
    sub = pd.read_csv(tmp_path / "subgroups.csv")
    manifest = inputs.manifest.set_index("image_id")
    first = preds[0]
    ids = first.frame.loc[first.frame[f"y_{LABELS[0]}"].notna(), "image_id"]
    row = sub.loc[(sub["configuration"] == first.configuration) & (sub["test_set"] == first.test_set)
                  & (sub["label"] == LABELS[0]) & (sub["subgroup"] == "M")]  # fmt: skip
    assert int(row["n_images"].iloc[0]) == int((manifest.loc[ids, "sex"] == "M").sum())
    assert "gap" in sub and sub.loc[sub["kind"] == "external", "p_holm"].notna().any()
    protocols = pd.read_csv(tmp_path / "protocols.csv")
    assert set(protocols["protocol"]) == set(read_config(study).evaluation.protocols)
    assert shift.tables["shortcut"].empty  # the fake hospitals record no devices
    assert any("truth.parquet" in note for note in shift.notes)
    page = shift_html(shift, 0.95)
    assert "Shift-aware evaluation" in page and "not tested" in page


def test_protocols_rescored_without_retraining(study: Path) -> None:
    """Re-scoring reads the predictions files and the manifest only: no checkpoint exists in the fake study."""
    assert not list(study.glob("runs/*/*/checkpoints"))
    inputs = load_inputs(study)
    manifest = inputs.manifest.copy()
    # make Edema's raw labels uncertain for a third of the images: protocols must now disagree
    raw = manifest["raw_Edema"].to_numpy(copy=True)
    raw[::3] = -1.0
    manifest["raw_Edema"] = raw
    inputs = dataclasses.replace(inputs, manifest=manifest)
    preds = find_predictions(inputs)
    keys = ["configuration", "test_set", "label", "protocol"]
    table = shift_tables(inputs, preds).tables["protocols"].set_index(keys)
    row = table.loc[(preds[0].configuration, preds[0].test_set, "Edema", "uncertain_ignore")]
    frame = preds[0].frame.merge(manifest[["image_id", "raw_Edema"]], on="image_id")
    from sklearn.metrics import roc_auc_score

    keep = frame["raw_Edema"] != -1
    expected = roc_auc_score(frame.loc[keep, "raw_Edema"].fillna(0), frame.loc[keep, "p_Edema"])
    assert row["auc_protocol"] == pytest.approx(expected, abs=1e-12)
    assert row["ci_low"] <= row["difference"] <= row["ci_high"]


def test_several_seeds_give_one_row_per_seed_in_every_shift_table(tmp_path: Path) -> None:
    """With train.seeds, each seed's run is its own row (a ``seed`` column, as in auc.csv), never two rows
    that look like duplicates."""
    study = make_study(tmp_path / "s", archs=("densenet121",), patients=60, seeds=[3, 7])
    opened = Study.open(study)
    frame = pd.read_parquet(study / "manifest.parquet").merge(
        pd.read_parquet(study / "splits.parquet"), on=["image_id", "dataset"]
    )
    rng = np.random.default_rng(2)
    for conf in opened.config.configurations:
        for seed in (3, 7):
            val = frame.loc[frame["dataset"].isin(conf.train)]
            predictions(val, 1.6, rng).to_parquet(opened.run(conf.name, "densenet121", seed).validation)
    inputs = load_inputs(study)
    preds = find_predictions(inputs)
    assert sorted({p.seed for p in preds}) == [3, 7]
    write_shift_results(inputs, preds, tmp_path / "out")
    keys = {
        "operating_points": ["label", "rule", "metric"],
        "calibration_shift": ["label", "method"],
        "protocols": ["label", "protocol"],
        "subgroups": ["label", "family", "subgroup"],
    }
    for name, rest in keys.items():
        table = pd.read_csv(tmp_path / "out" / f"{name}.csv")
        assert sorted(set(table["seed"])) == [3, 7], name
        assert not table.duplicated(["configuration", "arch", "seed", "test_set", *rest]).any(), name
    page = shift_html(shift_tables(inputs, preds), 0.95)
    assert "<th>seed</th>" in page
