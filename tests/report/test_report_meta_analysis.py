"""The next-hospital meta-analysis through the whole report: three homogeneous external hospitals (issue 27)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.special import expit, logit
from sklearn.metrics import roc_auc_score
from statsmodels.stats.meta_analysis import combine_effects

from cxrgen.metrics.meta_analysis import logit_variance
from cxrgen.report.build import build_report
from helpers.report_study import LABELS, make_study

#: The issue's homogeneous case: three external hospitals within 0.002 of each other.
TARGETS = {"gamma": 0.861, "delta": 0.862, "epsilon": 0.860}


def scores_with_auc(y: np.ndarray, auc: float, rng: np.random.Generator) -> np.ndarray:
    """Probabilities whose AUC on ``y`` is ``round(auc n_pos n_neg) / (n_pos n_neg)``: each positive sits above a
    chosen number of negatives (counts spread evenly, assigned at random), NaN labels get random scores."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    n_pos, n_neg = pos.size, neg.size
    above = round(auc * n_pos * n_neg)
    counts = np.full(n_pos, above // n_pos) + (np.arange(n_pos) < above % n_pos)
    score = rng.uniform(0, n_neg, size=y.size)
    score[neg] = rng.permutation(n_neg) + 0.5  # negative ranks 0.5, 1.5, ...
    score[pos] = rng.permutation(counts)  # a positive at c beats exactly the c negatives below it
    return np.asarray((score + 1.0) / (n_neg + 2.0), dtype=np.float64)


def three_external_hospitals(root: Path) -> Path:
    """The fake study with gamma copied as delta and epsilon, all three external, AUCs per :data:`TARGETS`."""
    study = make_study(root, archs=("densenet121",), patients=60, reference=False)
    config = yaml.safe_load((study / "config.yaml").read_text(encoding="utf-8"))
    manifest = pd.read_parquet(study / "manifest.parquet")
    splits = pd.read_parquet(study / "splits.parquet")
    gamma_m, gamma_s = manifest[manifest["dataset"] == "gamma"], splits[splits["dataset"] == "gamma"]
    for name in ("delta", "epsilon"):
        config["datasets"][name] = {**config["datasets"]["gamma"], "root": str(root / "data" / name)}
        rename = {c: gamma_m[c].str.replace("gamma:", f"{name}:") for c in ("image_id", "patient_id", "study_id")}
        manifest = pd.concat([manifest, gamma_m.assign(dataset=name, **rename)], ignore_index=True)
        splits = pd.concat([splits, gamma_s.assign(dataset=name, image_id=gamma_s["image_id"].str.replace(
            "gamma:", f"{name}:"))], ignore_index=True)
    for conf in config["configurations"]:
        conf["external"] = list(TARGETS)
    (study / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    manifest.to_parquet(study / "manifest.parquet", index=False)
    splits.to_parquet(study / "splits.parquet", index=False)
    rng = np.random.default_rng(27)
    for folder in study.glob("runs/*/*/predictions"):
        gamma = pd.read_parquet(folder / "gamma.parquet")
        for name, auc in TARGETS.items():
            frame = gamma.assign(image_id=gamma["image_id"].str.replace("gamma:", f"{name}:"),
                                 patient_id=gamma["patient_id"].str.replace("gamma:", f"{name}:"))
            for label in LABELS:
                frame[f"p_{label}"] = scores_with_auc(frame[f"y_{label}"].to_numpy(), auc, rng)
            frame.to_parquet(folder / f"{name}.parquet", index=False)
    return study


def test_homogeneous_external_hospitals_do_not_crash_the_report(tmp_path: Path) -> None:
    study = three_external_hospitals(tmp_path)
    results = build_report(study, review=False)  # today: ValueError: math domain error
    auc = pd.read_csv(results / "auc.csv")
    external = auc[auc["kind"] == "external"]
    for row in external.itertuples():  # the construction gives the AUCs (sklearn as the judge)
        folder = study / "runs" / row.configuration / row.arch / "predictions"
        frame = pd.read_parquet(folder / f"{row.test_set}.parquet")
        known = frame[f"y_{row.label}"].notna()
        truth = roc_auc_score(frame.loc[known, f"y_{row.label}"], frame.loc[known, f"p_{row.label}"])
        assert row.auc == pytest.approx(truth, abs=1e-12) and row.auc == pytest.approx(TARGETS[row.test_set], abs=5e-4)
    table = pd.read_csv(results / "next_hospital.csv")
    assert len(table) == 2 * len(LABELS) and (table["k"] == 3).all()
    assert (table["tau2"] == 0.0).all() and (table["i2"] == 0.0).all()  # truncated, not negative
    for row in table.itertuples():
        mine = external[(external["configuration"] == row.configuration) & (external["label"] == row.label)]
        eff, var = logit(mine["auc"].to_numpy()), logit_variance(mine["auc"], mine["boot_se"])
        with np.errstate(invalid="ignore"):  # its untruncated random-effects side takes sqrt(< 0)
            ref = combine_effects(eff, var, method_re="dl")
        assert ref.tau2 < 0  # statsmodels' untruncated DL: the case that crashed
        assert row.pooled_auc == pytest.approx(expit(ref.mean_effect_fe), abs=1e-12)  # tau² = 0: fixed-effect mean
        assert row.pi_low < mine["auc"].min() and mine["auc"].max() < row.pi_high
    assert "next hospital" in (results / "report.html").read_text(encoding="utf-8").lower()
