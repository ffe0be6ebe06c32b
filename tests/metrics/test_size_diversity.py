"""The size-vs-sources regression recovers planted effects (issue 25)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from cxrgen.metrics.size_diversity import expit, fit_size_diversity, logit, union_vs_size

SOURCES = ["a", "b", "c", "d", "e", "f"]
BETA_K, BETA_N = 0.08, 0.12  # planted: logit AUC per added source, per doubling


def simulate(rng: np.random.Generator, n_boot: int = 40, seeds: int = 2) -> tuple[pd.DataFrame, np.ndarray]:
    """A leave-out size-matched grid over six hospitals: AUC = truth + combination effect + seed noise + test-set
    sampling noise (a part shared by every run on a test set, a part of its own); ``boot`` redraws the sampling
    noise as a patient bootstrap would."""
    rows = []
    combos = [c for k in (1, 2, 3) for c in itertools.combinations(SOURCES, k)]
    chosen = [combos[i] for i in rng.choice(len(combos), size=18, replace=False)]
    effect = {c: rng.normal(0, 0.05) for c in chosen}
    hospital = {h: rng.normal(1.2, 0.2) for h in SOURCES}
    for combo in chosen:
        for n in (500, 2000, 8000):
            for seed in range(seeds):
                noise = rng.normal(0, 0.03)
                for test in (h for h in SOURCES if h not in combo):
                    truth = hospital[test] + BETA_K * len(combo) + BETA_N * np.log2(n) - 1.0 + effect[combo] + noise
                    rows.append({"n": n, "k": len(combo), "combination": "+".join(combo), "test_set": test,
                                 "label": "L", "arch": "probe", "seed": seed, "truth": truth})  # fmt: skip
    frame = pd.DataFrame(rows)
    tests = frame["test_set"].to_numpy()
    shared = {h: rng.normal(0, 0.04, size=n_boot + 1) for h in SOURCES}
    own = rng.normal(0, 0.04, size=(len(frame), n_boot + 1))
    noisy = frame["truth"].to_numpy()[:, None] + np.stack([shared[t] for t in tests]) + own
    frame["auc"] = expit(noisy[:, 0])
    # The bootstrap replicates scatter around the observed AUC with the sampling noise's spread.
    boot = expit(noisy[:, :1] + np.stack([shared[t][1:] - shared[t][1:].mean() for t in tests]) + own[:, 1:]
                 - own[:, 1:].mean(axis=1, keepdims=True))  # fmt: skip
    return frame, boot


def test_recovers_planted_effects_in_at_least_90_of_100_simulations():
    rng = np.random.default_rng(2025)
    covered = {"k": 0, "log2_n": 0}
    for _ in range(100):
        frame, boot = simulate(rng)
        fit = fit_size_diversity(frame, boot)
        for term, truth in (("k", BETA_K), ("log2_n", BETA_N)):
            row = fit.effects.set_index("term").loc[term]
            covered[term] += row["logit_low"] <= truth <= row["logit_high"]
    assert fit.model == "mixed" and fit.n_combinations == 18 and fit.n_seeds == 2
    assert covered["k"] >= 90 and covered["log2_n"] >= 90, covered


def test_reports_auc_changes_and_verdicts():
    frame, boot = simulate(np.random.default_rng(1))
    fit = fit_size_diversity(frame, boot)
    effects = fit.effects.set_index("term")
    assert effects.loc["log2_n", "auc_change"] > 0 and effects.loc["log2_n", "auc_low"] > 0
    assert "raises external AUC" in effects.loc["log2_n", "verdict"]
    assert effects.loc["k", "effect"] == "AUC change per added source at fixed size"
    mid = expit(fit.mean_logit + effects.loc["k", "logit_coef"]) - expit(fit.mean_logit)
    assert effects.loc["k", "auc_change"] == pytest.approx(mid)
    # Few combinations: OLS with errors clustered by combination.
    few = frame[frame["combination"].isin(frame["combination"].unique()[:4])]
    assert fit_size_diversity(few, boot[few.index.to_numpy()]).model == "ols-cluster"


def test_a_learning_curve_alone_gives_no_source_effect():
    frame, boot = simulate(np.random.default_rng(2))
    single = frame[frame["k"] == 1]
    fit = fit_size_diversity(single, boot[single.index.to_numpy()])
    effects = fit.effects.set_index("term")
    assert np.isnan(effects.loc["k", "logit_coef"]) and "not estimable" in effects.loc["k", "verdict"]
    assert effects.loc["log2_n", "logit_low"] < BETA_N < effects.loc["log2_n", "logit_high"]


def test_union_excess_over_size():
    frame, boot = simulate(np.random.default_rng(3))
    fit = fit_size_diversity(frame, boot)
    base = 0.8
    b = np.random.default_rng(4).normal(0, 0.02, size=(3, 40))
    # Singles of 1,000 images each; the union of both has 2,000: size predicts one doubling's gain.
    predicted = fit.coef("log2_n")
    union_logit = logit(base) + predicted + 0.3  # planted diversity excess of 0.3 logit
    union = pd.DataFrame([{"test_set": "x", "label": "L", "arch": "p", "n": 2000, "auc": expit(union_logit),
                           "boot": expit(union_logit + b[0])}])  # fmt: skip
    singles = pd.DataFrame([
        {"test_set": "x", "label": "L", "arch": "p", "n": 1000, "auc": base, "boot": expit(logit(base) + b[i])}
        for i in (1, 2)
    ])  # fmt: skip
    out = union_vs_size(union, singles, fit)
    assert len(out) == 1
    assert out.loc[0, "excess_logit"] == pytest.approx(0.3)
    assert out.loc[0, "excess_low"] > 0 and "more than its size predicts" in out.loc[0, "verdict"]
