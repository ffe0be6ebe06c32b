"""A report over several training seeds: per-seed rows, seed-aware intervals, paired seeds, findings first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrgen.report.build import build_report
from cxrgen.report.findings import CLAIMS
from helpers.report_study import LABELS, make_study


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
    # The study's own results first (issue 26), then the findings, Table 1 and the comparisons.
    anchors = ("results", "findings", "table-1-auc-roc-per-label", "comparisons")
    order = [page.index(f'<h2 id="{anchor}"') for anchor in anchors]
    assert order == sorted(order)
    assert "Intervals combine training seeds and patients" in page
    assert "not estimable (needs at least 3 hospitals)" in page  # one external hospital only


def test_single_seed_report_says_training_variance_is_not_counted(tmp_path: Path) -> None:
    results = build_report(make_study(tmp_path, patients=30), review=False)
    assert "seed" not in pd.read_csv(results / "auc.csv").columns
    assert not pd.read_csv(results / "auc_seeds.csv")["training_variance_counted"].any()
    assert "training variance is not counted" in (results / "report.html").read_text(encoding="utf-8")


def test_gap_figure_draws_the_seed_mean_and_the_seed_range(results: Path) -> None:
    from matplotlib.collections import LineCollection

    from cxrgen.report.figures import gap_figure
    from cxrgen.report.seeds import seed_gaps

    auc, comp = pd.read_csv(results / "auc.csv"), pd.read_csv(results / "comparisons.csv")
    key = ["configuration", "arch", "seed", "label"]
    wide = auc.pivot_table(index=key, columns="test_set", values="auc").reset_index()
    wide["gap"] = wide["internal"] - wide["gamma"]  # per seed, computed here independently of seed_gaps
    fig = gap_figure(comp, LABELS, ["densenet121", "inception_resnet_v2"], 0.95, seed_gaps=seed_gaps(auc))
    bands = {c.get_gid(): c for c in fig.findobj(LineCollection) if c.get_gid()}
    assert len(bands) == 4  # two configurations x two architectures, each one external test set
    gaps = comp[comp["family"] == "internal_vs_external"]
    for (configuration, arch), mine in wide.groupby(["configuration", "arch"]):
        segments = bands[f"seed-range {configuration} {arch} gamma"].get_segments()
        spans = [(float(s[0][1]), float(s[1][1])) for s in segments]
        by_label = mine.groupby("label")["gap"]
        expected = [(by_label.min()[lab], by_label.max()[lab]) for lab in LABELS]
        np.testing.assert_allclose(np.array(spans), np.array(expected), rtol=0, atol=1e-12)
        point = gaps[(gaps["configuration_a"] == configuration) & (gaps["arch_a"] == arch)].set_index("label")
        assert point.loc[LABELS, "difference"].to_numpy() == pytest.approx(by_label.mean()[LABELS], abs=1e-12)
    assert "range of the per-seed gaps over 2 seeds" in fig.get_suptitle()


def test_roc_and_review_say_which_seed_they_draw(results: Path) -> None:
    from matplotlib.legend import Legend

    from cxrgen.report.figures import roc_figure
    from cxrgen.report.inputs import find_predictions, load_inputs
    from cxrgen.report.review import error_review
    from cxrgen.report.seeds import combine_seeds

    page = (results / "report.html").read_text(encoding="utf-8")
    assert "ROC curves of densenet121 (seed 3, the first of 2 seeds (3, 7))" in page
    assert "Reliability curves of inception_resnet_v2 (seed 3, the first of 2 seeds (3, 7))" in page
    inputs = load_inputs(results.parent)
    predictions = find_predictions(inputs)
    mine = [p for p in combine_seeds(predictions) if p.arch == "densenet121"]
    fig = roc_figure(mine, LABELS, "t")
    legend = next(leg for leg in fig.findobj(Legend))  # first panel: Cardiomegaly
    auc = pd.read_csv(results / "auc.csv").set_index(["arch", "configuration", "test_set", "label", "seed"])["auc"]
    drawn = [f"{c} / {t} ({auc['densenet121', c, t, LABELS[0], 3]:.3f})" for c, t in
             [("alpha", "internal"), ("alpha", "gamma"), ("both", "internal"), ("both", "gamma")]]  # fmt: skip
    assert [text.get_text() for text in legend.get_texts()] == drawn

    review = error_review(inputs, predictions, cams=False)
    assert review is not None and list(review.thresholds) == ["densenet121", "inception_resnet_v2"]
    assert review.drawn == "seed 3, the first of 2 seeds (3, 7)"
    first = {p.arch: p.frame.set_index("image_id") for p in predictions
             if p.seed == 3 and (p.configuration, p.test_set) == ("both", "gamma")}  # fmt: skip
    for arch, frame in first.items():
        expected = frame.loc[review.cases["image_id"], "p_Cardiomegaly"].to_numpy()
        assert review.cases[f"p_{arch}"].to_numpy() == pytest.approx(expected, abs=0)


def test_an_unfinished_seed_and_a_missing_seed_file_are_named(tmp_path: Path) -> None:
    from cxrgen.metrics.evaluate import UNFINISHED_KEY
    from cxrgen.utils.fileio import write_parquet

    study = make_study(tmp_path, patients=30, seeds=[3, 7], archs=("densenet121",))
    seed3 = study / "runs" / "alpha" / "densenet121" / "seed-3" / "predictions" / "internal.parquet"
    write_parquet(pd.read_parquet(seed3), seed3, metadata={UNFINISHED_KEY: "true"})
    (study / "runs" / "both" / "densenet121" / "seed-7" / "predictions" / "gamma.parquet").unlink()
    results = build_report(study, review=False)

    missing = pd.read_csv(results / "missing.csv")
    assert missing[["configuration", "arch", "seed", "test_set", "expected"]].values.tolist() == [
        ["both", "densenet121", 7, "gamma", "runs/both/densenet121/seed-7/predictions/gamma.parquet"]]
    auc = pd.read_csv(results / "auc.csv")
    marked = auc.loc[auc["unfinished"], ["configuration", "test_set", "seed"]].drop_duplicates()
    assert marked.values.tolist() == [["alpha", "internal", 3]]  # that file only, not its other seed
    seeds = pd.read_csv(results / "auc_seeds.csv", dtype={"seeds": str})  # the seed mean rests on the unfinished one
    by_run = seeds.set_index(["configuration", "test_set"])["seeds"]
    assert set(by_run.loc[("both", "gamma")]) == {"3"}  # seed 7's file is missing: the seed used, not "first"
    assert set(by_run.loc[("alpha", "internal")]) == {"3 7"}
    assert set(seeds.loc[seeds["unfinished"], "configuration"] + "/" + seeds.loc[seeds["unfinished"], "test_set"]) \
        == {"alpha/internal"}
    comp = pd.read_csv(results / "comparisons.csv")
    gaps = comp[comp["family"] == "internal_vs_external"].set_index("configuration_a")["unfinished"]
    assert gaps["alpha"].all() and not gaps["both"].any()
    findings = pd.read_csv(results / "findings.csv")
    assert findings.loc[findings["unfinished"], "comparison"].str.endswith("(unfinished)").all()
    assert findings["unfinished"].sum() == len(LABELS) * 2  # per label: alpha's gap and its next-hospital row
    page = (results / "report.html").read_text(encoding="utf-8")
    notices = page[: page.index("<h2")]
    assert "alpha/densenet121 (seed 3)." in notices and "seed 7, test set <b>gamma</b>" in notices
    assert "except where only one seed has a predictions file (both/densenet121 on gamma)" in page
