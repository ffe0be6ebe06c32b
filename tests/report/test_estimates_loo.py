"""Before the labels, end to end (issue 24): six synthetic hospitals, leave-one-out, ``cxrgen study`` then ``report``.

``results/estimates.csv`` must hold exactly one AUC row per fold (configuration x external test set), label and
method, the count taken from the study's plan; the truth and the error are filled where the held-out hospital has
both classes of a label, NaN with a reason where it has one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cxrgen.report.estimates import BASELINES
from cxrgen.shift.estimates import METHODS, NO_CURVE
from cxrgen.study.config import load_study

SIX = ("chexpert", "nih", "mimic", "padchest", "vindr", "brax")


def cxrgen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cxrgen", *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The six hospitals at a tiny scale, ``test_byobnet`` at 32 px for one epoch, estimates on labelled sets."""
    root = tmp_path_factory.mktemp("loo_estimates")
    data = root / "hospitals"
    result = cxrgen("synthesize", str(data), "--scale", "0.05", "--image-size", "32", "--workers", "1",
                    "--hospitals", ",".join(SIX))  # fmt: skip
    assert result.returncode == 0, result.stderr
    study = yaml.safe_load((data / "study.yaml").read_text(encoding="utf-8"))
    assert study["design"]["leave_one_out"] == list(SIX)
    for spec in study["datasets"].values():
        spec["root"] = str(data / spec["root"])
    study["out"] = str(root / "study")
    study["architectures"] = ["test_byobnet"]
    study["preprocess"] = {**study["preprocess"], "size": 32, "clahe": False}
    study["train"] = {**study["train"], "max_epochs": 1, "batch_size": 16, "pretrained": False, "num_workers": 0}
    study["evaluation"] = {"bootstrap": 20, "estimate": {"labelled": True}}
    (root / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    result = cxrgen("study", str(root / "study.yaml"), "--workers", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    result = cxrgen("report", str(root / "study"))
    assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.mark.slow
def test_one_row_per_fold_label_and_method_with_the_truth_beside_it(finished: Path) -> None:
    config = load_study(finished / "study.yaml")
    results = config.out / "results"
    table = pd.read_csv(results / "estimates.csv")
    auc = table.loc[table["metric"] == "auc"]
    folds = [(c.name, t) for c in config.configurations for t in c.external]
    assert sorted(folds) == sorted((f"loo-{h}", h) for h in SIX)  # the plan: each hospital held out once
    methods = [m for m in config.evaluation.estimate.methods if m in METHODS]  # one arch: no agreement pair
    assert len(auc) == len(folds) * len(config.labels) * (len(methods) + len(BASELINES))
    assert not auc.duplicated(["configuration", "test_set", "label", "method"]).any()
    assert set(zip(auc["configuration"], auc["test_set"], strict=True)) == set(folds)
    assert set(auc["method"]) == {*methods, *BASELINES}

    # the truth, recomputed from each held-out hospital's labels: defined iff both classes are there
    for (configuration, test_set, label), part in auc.groupby(["configuration", "test_set", "label"]):
        runs = config.out / "runs" / configuration / "test_byobnet"
        y = pd.read_parquet(runs / "predictions" / f"{test_set}.parquet")[f"y_{label}"].dropna()
        home = pd.read_parquet(runs / "validation.parquet")[f"y_{label}"].dropna()
        both = y.nunique() == 2
        assert part["true_value"].notna().all() == both, (configuration, label)
        assert part["true_value"].isna().all() == (not both)
        estimated = part.loc[part["method"].isin(methods)]
        if home.nunique() < 2:  # nothing to fit at home: every method NaN, and why
            n_pos = int(home.sum())
            why = f"home validation set has one class: {n_pos} positive, {len(home) - n_pos} negative"
            assert estimated["estimate"].isna().all() and (estimated["note"] == why).all()
            part = part.loc[~part["method"].isin(methods)]
        else:  # only a confusion-matrix curve may degenerate (a cell empty at every threshold), and says so
            undefined = estimated.loc[estimated["estimate"].isna()]
            assert undefined["method"].isin(["cm_atc", "cm_doc"]).all()
            assert undefined["note"].str.startswith(NO_CURVE).all()
        if both:
            np.testing.assert_allclose(part["error"], part["estimate"] - part["true_value"])
            assert part.loc[part["method"].isin(methods) & part["estimate"].notna(), "note"].isna().all()
            assert (part["true_se"].dropna() >= 0).all()
        else:
            n_pos = int(y.sum())
            assert part["error"].isna().all() and part["true_se"].isna().all()
            assert part["note"].str.endswith(f"true AUC undefined: {n_pos} positive, {len(y) - n_pos} negative").all()
    estimated = auc.loc[auc["method"].isin(methods) & auc["estimate"].notna()]
    assert estimated["flag"].notna().all()
    for column in ("spread", "prevalence_odds", "outside", "score_shift", "embedding_auc"):
        assert column in estimated  # every signal is a column, so the rule can be tuned from the file
    assert estimated["embedding_auc"].isna().all()  # a CNN-only study holds no embeddings
    assert (estimated["embedding_note"] == "no embeddings").all()
    summary = pd.read_csv(results / "estimates_summary.csv")
    assert set(summary["method"]) <= {*methods, *BASELINES} and set(methods) <= set(summary["method"])
    defined = estimated.loc[estimated["true_value"].notna()]
    for method, part in defined.groupby("method"):
        row = summary.set_index("method").loc[method]
        assert row["n"] == len(part)
        assert row["mae"] == pytest.approx(part["error"].abs().mean())
    assert "Before the labels" in (results / "report.html").read_text(encoding="utf-8")
