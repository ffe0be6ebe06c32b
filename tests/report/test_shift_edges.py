"""The report's shift tables at their edges (issue 27): a threshold that cannot be chosen, EM's convergence, views
outside PA/AP/LATERAL, a bootstrap p of 0."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrgen.report.inputs import find_predictions, load_inputs
from cxrgen.report.shift_html import shift_html
from cxrgen.report.shift_tables import write_shift_results
from cxrgen.shift.calibration_shift import apply_temperature, fit_temperature
from cxrgen.shift.operating_points import choose_threshold
from cxrgen.study.workspace import Study
from helpers.report_study import LABELS, make_study, predictions

CARDIO, EDEMA = LABELS
N_BOOT = 100  # the fake study's evaluation.bootstrap


def saerens_em(p: np.ndarray, pi: float, tol: float = 1e-8, max_iter: int = 1000) -> tuple[float, int, bool]:
    """Saerens, Latinne & Decaestecker (2002), Neural Comput 14:21-41, eqs. 2.9-2.10, written out: prevalence, steps,
    converged."""
    prior = pi
    for step in range(1, max_iter + 1):
        num = prior / pi * p
        post = num / (num + (1 - prior) / (1 - pi) * (1 - p))
        if abs(post.mean() - prior) < tol:
            return float(post.mean()), step, True
        prior = float(post.mean())
    return prior, max_iter, False


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Configuration ``alpha``: a validation set without a Cardiomegaly positive (no threshold); ``both``: a normal
    one. gamma carries synthetic truth whose CTR puts every error of ``both`` next to the borderline (a slope no
    resample contradicts: bootstrap p = 0), and 8 images with views outside PA/AP/LATERAL."""
    root = tmp_path_factory.mktemp("edges")
    study = make_study(root, archs=("densenet121",), patients=60, reference=False)
    opened = Study.open(study)
    manifest = pd.read_parquet(study / "manifest.parquet")
    frame = manifest.merge(pd.read_parquet(study / "splits.parquet"))
    rng = np.random.default_rng(1)
    thresholds = {}
    for conf in opened.config.configurations:
        val = predictions(frame.loc[frame["dataset"].isin(conf.train)], 1.6, rng)
        if conf.name == "alpha":
            val[f"y_{CARDIO}"] = 0.0
        val.to_parquet(opened.run(conf.name, "densenet121").validation)
        thresholds[conf.name] = choose_threshold(val[f"y_{CARDIO}"], val[f"p_{CARDIO}"], "youden")
    gamma = pd.read_parquet(opened.run("both", "densenet121").predictions("gamma"))
    y, p = gamma[f"y_{CARDIO}"].to_numpy(float), gamma[f"p_{CARDIO}"].to_numpy(float)
    wrong = (p >= thresholds["both"]) != (y == 1)
    paths = manifest.set_index("image_id").loc[gamma["image_id"], "path"].to_numpy()
    truth = pd.DataFrame({"path": paths, "ctr": np.where(wrong, 0.51, 0.8), "device": rng.integers(0, 2, len(paths))})
    folder = Path(opened.config.datasets["gamma"].root)
    folder.mkdir(parents=True, exist_ok=True)
    truth.to_parquet(folder / "truth.parquet", index=False)
    odd = manifest["image_id"].isin(gamma["image_id"].iloc[:8])
    manifest.loc[odd, "view"] = ["LL"] * 5 + [None] * 3
    manifest.to_parquet(study / "manifest.parquet", index=False)
    return study


@pytest.fixture(scope="module")
def results(study: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    inputs = load_inputs(study)
    out = tmp_path_factory.mktemp("results")
    shift = write_shift_results(inputs, find_predictions(inputs), out)
    return out, shift_html(shift, 0.95)


def test_no_threshold_is_nan_with_status_in_every_analysis(results: tuple[Path, str]) -> None:
    out, page = results
    op = pd.read_csv(out / "operating_points.csv")
    none = op[(op["configuration"] == "alpha") & (op["label"] == CARDIO)]
    assert len(none) and (none["status"] == "no threshold").all() and none["threshold"].isna().all()
    assert none[["value", "ci_low", "ci_high", "tp", "fp", "tn", "fn"]].isna().all().all()  # no made-up counts
    assert (op.loc[op["configuration"] == "both", "status"] == "ok").all()
    shortcut = pd.read_csv(out / "shortcut.csv").query("label == @CARDIO").set_index("configuration")
    assert shortcut.loc["alpha", "status"] == "no threshold" and not shortcut.loc["alpha", "detected"]
    assert math.isnan(shortcut.loc["alpha", "fpr_device"]) and math.isnan(shortcut.loc["alpha", "difference"])
    assert shortcut.loc["both", "status"] == "ok" and not math.isnan(shortcut.loc["both", "fpr_device"])
    borderline = pd.read_csv(out / "borderline.csv")
    alpha = borderline[borderline["configuration"] == "alpha"]
    assert (alpha["status"] == "no threshold").all() and alpha[["error_rate", "slope", "p"]].isna().all().all()
    assert ">no threshold<" in page  # the shortcut's verdict column, not "not detected"


def test_em_convergence_is_written_and_equals_a_hand_written_saerens_em(study: Path, results: tuple[Path, str]) -> None:
    cal = pd.read_csv(results[0] / "calibration_shift.csv")
    em = cal[cal["method"] == "prior_shift"]
    assert len(em) and em["em_converged"].astype(bool).all() and (em["em_iterations"] >= 1).all()
    assert cal.loc[cal["method"] != "prior_shift", ["em_iterations", "em_converged"]].isna().all().all()
    opened = Study.open(study)
    row = em[(em["configuration"] == "both") & (em["test_set"] == "gamma") & (em["label"] == EDEMA)].iloc[0]
    val = pd.read_parquet(opened.run("both", "densenet121").validation)
    test = pd.read_parquet(opened.run("both", "densenet121").predictions("gamma"))
    vy, vp = val[f"y_{EDEMA}"].to_numpy(float), val[f"p_{EDEMA}"].to_numpy(float)
    scaled = apply_temperature(test[f"p_{EDEMA}"].to_numpy(float), fit_temperature(vy, vp))
    prevalence, steps, converged = saerens_em(np.clip(scaled, 1e-12, 1 - 1e-12), float(np.nanmean(vy)))
    assert row["estimated_prevalence"] == pytest.approx(prevalence, abs=1e-9)
    assert (int(row["em_iterations"]), bool(row["em_converged"])) == (steps, converged)


def test_views_outside_pa_ap_lateral_are_counted_in_a_note(study: Path, results: tuple[Path, str]) -> None:
    gamma = pd.read_parquet(Study.open(study).run("both", "densenet121").predictions("gamma"))
    note = f"gamma: 8 of {len(gamma)} images have a view outside PA/AP/LATERAL (LL: 5, not recorded: 3)"
    assert results[1].count(note) == 1  # once per test set, not once per run
    sub = pd.read_csv(results[0] / "subgroups.csv")
    assert set(sub.loc[sub["family"] == "view", "subgroup"]) == {"PA"}  # they still form no view subgroup


def test_a_bootstrap_p_of_zero_is_shown_below_its_resolution(results: tuple[Path, str]) -> None:
    out, page = results
    borderline = pd.read_csv(out / "borderline.csv")
    both = borderline[(borderline["configuration"] == "both") & (borderline["test_set"] == "gamma")]
    assert (both["p"] == 0.0).all() and (both["n_boot"] == N_BOOT).all() and (both["slope"] < 0).all()
    start = page.index("Borderline errors")
    table = page[start : page.index("</table>", start)]  # the band and slope table
    assert f"<td>&lt; {1 / N_BOOT:g}</td></tr>" in table and "<td>0.000</td>" not in table  # p, not "0.000"


def test_bootstrap_p_text() -> None:
    from cxrgen.report.pvalues import bootstrap_p_text

    assert bootstrap_p_text(0.0, 1000) == "< 0.001" and bootstrap_p_text(0.0, 2000) == "< 0.0005"
    assert bootstrap_p_text(0.004, 1000) == "0.004" and bootstrap_p_text(math.nan, 1000) == ""
