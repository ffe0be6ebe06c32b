"""Pairing two predictions files on their shared images: counted drops, refusal below 95 %, never unpaired."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from cxrgen import metrics
from cxrgen.metrics.clustered import clustered_paired_bootstrap
from cxrgen.metrics.pairing import PairingError, image_keys, pair_on_images, paired_clustered, unpaired_clustered


def _frame(n: int, seed: int, shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    return pd.DataFrame({
        "image_id": [f"img{i:05d}" for i in range(n)],
        "patient_id": [f"pat{i // 2:05d}" for i in range(n)],
        "y_Edema": y,
        "p_Edema": 1 / (1 + np.exp(-(rng.normal(size=n) + shift * y))),
    })


def test_one_dropped_image_keeps_the_test_paired_and_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    a = _frame(2000, seed=0, shift=1.2)
    b = a.assign(p_Edema=_frame(2000, seed=1, shift=1.0)["p_Edema"])
    b_short = b.drop(index=17)
    with caplog.at_level(logging.WARNING, logger="cxrgen.metrics.pairing"):
        paired = pair_on_images(a, b_short, "a.parquet", "b.parquet")
    assert (paired.n_dropped_a, paired.n_dropped_b, len(paired.merged)) == (1, 0, 1999)
    assert "dropped 1 of a.parquet" in caplog.text
    row = paired_clustered(paired, "Edema", "a vs b", n_boot=300, seed=0, ci=0.95)
    assert row["test"] == "clustered_paired_bootstrap" and row["n_dropped_a"] == 1 and row["n_a"] == 1999
    keep = a["image_id"] != "img00017"
    ref = clustered_paired_bootstrap(a.loc[keep, "y_Edema"], a.loc[keep, "p_Edema"], b_short["p_Edema"],
                                     a.loc[keep, "patient_id"], n_boot=300, seed=0)
    assert row["p"] == pytest.approx(ref.p, abs=1e-12) and row["se"] == pytest.approx(ref.se, abs=1e-12)
    dl = metrics.delong_paired_test(a.loc[keep, "y_Edema"], a.loc[keep, "p_Edema"], b_short["p_Edema"])
    assert row["delong_p"] == pytest.approx(dl.p, abs=1e-12)


def test_pairing_below_95_percent_overlap_is_refused_not_switched() -> None:
    a = _frame(1000, seed=0, shift=1.0)
    b = a.iloc[:940]
    with pytest.raises(PairingError, match=r"a.parquet \(1000 images\) and b.parquet \(940 images\) share 940"):
        pair_on_images(a, b, "a.parquet", "b.parquet")
    assert len(pair_on_images(a, a.iloc[:950], "a", "b").merged) == 950  # exactly 95 % is accepted


def test_different_ground_truth_on_shared_images_is_an_error() -> None:
    a = _frame(200, seed=0, shift=1.0)
    b = a.copy()
    b.loc[3, "y_Edema"] = 1 - b.loc[3, "y_Edema"]
    paired = pair_on_images(a, b, "a", "b")
    with pytest.raises(PairingError, match="'y_Edema' differs on 1 shared images"):
        paired_clustered(paired, "Edema", "a vs b", n_boot=50, seed=0, ci=0.95)


def test_unpaired_comparison_uses_clustered_standard_errors() -> None:
    a, b = _frame(800, seed=3, shift=1.5), _frame(600, seed=4, shift=0.8)
    row = unpaired_clustered(a, b, "Edema", n_boot=300, seed=0, ci=0.95)
    assert row["test"] == "clustered_unpaired" and (row["n_a"], row["n_b"]) == (800, 600)
    assert row["difference"] == pytest.approx(row["auc_a"] - row["auc_b"])
    assert row["ci_low"] < row["difference"] < row["ci_high"]
    assert row["se"] != pytest.approx(row["delong_se"], rel=1e-3)


# ------------------------------------------------------------------------- bare and namespaced image ids


def _namespaced(frame: pd.DataFrame, dataset: str = "nih") -> pd.DataFrame:
    """The frame as cxrgen writes it: image and patient ids namespaced by the dataset."""
    return frame.assign(image_id=dataset + ":" + frame["image_id"], patient_id=dataset + ":" + frame["patient_id"])


@pytest.mark.parametrize(
    ("a", "b", "expected_a", "expected_b", "note"),
    [
        (["nih:1.png", "nih:2.png"], ["1.png", "2.png"], ["1.png", "2.png"], ["1.png", "2.png"],
         "ids compared without the 'nih:' namespace of A"),
        (["1.png"], ["nih:1.png"], ["1.png"], ["1.png"], "ids compared without the 'nih:' namespace of B"),
        (["nih:1.png"], ["nih:1.png"], ["nih:1.png"], ["nih:1.png"], ""),  # namespaces agree: as written
        (["nih:1.png"], ["mimic:1.png"], ["nih:1.png"], ["mimic:1.png"], ""),  # two datasets: never one image
        (["nih:1.png", "2.png"], ["1.png"], ["nih:1.png", "2.png"], ["1.png"], ""),  # a mixed file is not stripped
        ([r"C:\x\1.png"], ["1.png"], [r"C:\x\1.png"], ["1.png"], ""),  # a drive letter is no namespace
    ],
)
def test_image_keys_strip_a_namespace_only_one_side_has(
    a: list[str], b: list[str], expected_a: list[str], expected_b: list[str], note: str
) -> None:
    keys_a, keys_b, said = image_keys(pd.Series(a), pd.Series(b), "A", "B")
    assert (keys_a.tolist(), keys_b.tolist(), said) == (expected_a, expected_b, note)


def test_stripping_that_merges_two_datasets_images_is_refused() -> None:
    with pytest.raises(PairingError, match=r"A vs B: A holds images of 2 datasets .* '1\.png' is 2 images"):
        image_keys(pd.Series(["nih:1.png", "mimic:1.png"]), pd.Series(["1.png"]), "A", "B")


def test_bare_and_namespaced_ids_are_paired_like_identical_ids() -> None:
    a = _frame(400, seed=0, shift=1.2)
    b = a.assign(p_Edema=_frame(400, seed=1, shift=1.0)["p_Edema"])
    same = paired_clustered(pair_on_images(a, b, "a", "b"), "Edema", "a vs b", n_boot=100, seed=0, ci=0.95)
    mixed = pair_on_images(_namespaced(a), b.drop(index=5), "a", "b")  # patients 'nih:pat00000' vs 'pat00000'
    assert (mixed.n_dropped_a, mixed.n_dropped_b) == (1, 0)
    row = paired_clustered(pair_on_images(_namespaced(a), b, "a", "b"), "Edema", "a vs b", n_boot=100, seed=0,
                           ci=0.95)  # fmt: skip
    assert row == same


def test_a_patient_split_in_the_other_file_is_refused() -> None:
    a = _frame(100, seed=0, shift=1.0)
    b = a.assign(patient_id=[f"q{i}" for i in range(100)])  # every image its own patient
    with pytest.raises(PairingError, match="group the same images into different patients"):
        pair_on_images(a, b, "a", "b")
