"""A report over several training seeds: per-seed rows, seed-aware intervals, paired seeds, findings first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrgen.report.build import build_report
from cxrgen.report.findings import CLAIMS
from report_fixtures import LABELS, make_study


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(make_study(tmp_path_factory.mktemp("seeds"), patients=40, seeds=[3, 7]), review=False)


def test_auc_rows_per_seed_and_seed_aware_intervals(results: Path) -> None:
    auc = pd.read_csv(results / "auc.csv")
    assert sorted(auc["seed"].unique()) == [3, 7]
    assert sorted(pd.read_csv(results / "calibration.csv")["seed"].unique()) == [3, 7]
    seeds = pd.read_csv(results / "auc_seeds.csv")
    assert len(seeds) == len(auc) // 2 and (seeds["n_seeds"] == 2).all() and seeds["training_variance_counted"].all()
    key = ["configuration", "arch", "test_set", "label"]
    per_seed = auc.groupby(key)["auc"].agg(["mean", lambda s: float(np.std(s, ddof=1))]).reset_index()
    per_seed.columns = [*key, "mean", "sd"]
    merged = seeds.merge(per_seed, on=key, validate="one_to_one")
    assert np.allclose(merged["auc"], merged["mean"], atol=1e-12)
    assert np.allclose(merged["seed_sd"], merged["sd"], atol=1e-12)


def test_comparisons_pair_seeds_and_findings_open_the_page(results: Path) -> None:
    comp = pd.read_csv(results / "comparisons.csv")
    multi = comp[comp["family"] == "multi_vs_single"]
    assert (multi["test"] == "clustered_paired_bootstrap").all() and (multi["n_dropped_a"] == 0).all()
    assert len(multi) == 2 * len(LABELS)  # two architectures, one row per label: both seeds in one test
    findings = pd.read_csv(results / "findings.csv")
    assert set(findings["claim"]) <= set(CLAIMS)
    assert set(findings["verdict"]) <= {"supported", "contradicted", "inconclusive",
                                        "not estimable (needs at least 3 hospitals)", "estimate"}
    gaps = findings[findings["claim"] == "internal_above_external"]
    assert len(gaps) == len(comp[comp["family"] == "internal_vs_external"])
    page = (results / "report.html").read_text(encoding="utf-8")
    assert page.index("<h2>Findings</h2>") < page.index("<h2>Table 1") < page.index("<h2>Comparisons</h2>")
    assert "Intervals combine training seeds and patients" in page
    assert "not estimable (needs at least 3 hospitals)" in page  # one external hospital only


def test_single_seed_report_says_training_variance_is_not_counted(tmp_path: Path) -> None:
    results = build_report(make_study(tmp_path, patients=30), review=False)
    assert "seed" not in pd.read_csv(results / "auc.csv").columns
    assert not pd.read_csv(results / "auc_seeds.csv")["training_variance_counted"].any()
    assert "training variance is not counted" in (results / "report.html").read_text(encoding="utf-8")
