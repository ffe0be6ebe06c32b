"""The trust flag's embedding signal (issue 24) on planted embeddings: a domain classifier's cross-validated AUC."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrgen.report.estimate_embeddings import NO_EMBEDDINGS, EmbeddingLookup
from cxrgen.shift.embedding_distance import FOLDS, domain_auc
from cxrgen.shift.estimates import MAX_EMBEDDING_AUC, estimate_label, fit_home, trust_signals


def _patients(rng: np.random.Generator, n_patients: int, per: int, dim: int, shift: float) -> tuple:
    """``per`` images of each patient around the patient's own point (a strong patient effect), moved by ``shift``."""
    centres = rng.normal(size=(n_patients, dim)) * 2.0
    x = np.repeat(centres, per, axis=0) + 0.1 * rng.normal(size=(n_patients * per, dim))
    x[:, 0] += shift
    return x, np.repeat(np.arange(n_patients), per)


def test_same_distribution_is_not_flagged_and_a_shift_is() -> None:
    rng = np.random.default_rng(0)
    home, home_groups = _patients(rng, 120, 3, 32, 0.0)
    same, same_groups = _patients(rng, 100, 3, 32, 0.0)
    moved, moved_groups = _patients(rng, 100, 3, 32, 6.0)
    alike, why = domain_auc(home, same, home_groups, same_groups)
    assert why == "" and abs(alike - 0.5) < 0.1
    shifted, _ = domain_auc(home, moved, home_groups, moved_groups)
    assert shifted > 0.9 > MAX_EMBEDDING_AUC

    # the signal in the flag: the same well-behaved scores, flagged only by the embeddings
    y = (rng.random(600) < 0.3).astype(float)
    p = 1 / (1 + np.exp(-(2.0 * (2 * y - 1) + rng.normal(size=600))))
    fitted = fit_home(y[:300], p[:300])
    assert fitted is not None
    est = estimate_label(fitted, p[300:], np.arange(300), ["cbpe", "doc"], n_boot=0)
    assert "embedding" not in trust_signals(fitted, p[300:], est, alike).reasons
    assert "embedding" in trust_signals(fitted, p[300:], est, shifted).reasons
    assert math.isnan(trust_signals(fitted, p[300:], est).embedding_auc)  # no embeddings: NaN, no reason


def test_folds_keep_a_patients_images_together() -> None:
    """Without patient groups the classifier recognizes patients across folds and calls a same-world set shifted."""
    rng = np.random.default_rng(1)
    home, home_groups = _patients(rng, 40, 6, 16, 0.0)
    target, target_groups = _patients(rng, 40, 6, 16, 0.0)
    grouped, _ = domain_auc(home, target, home_groups, target_groups)
    by_image, _ = domain_auc(home, target)
    assert grouped < 0.65 and by_image > 0.8


def test_too_few_patients_is_nan_with_the_reason() -> None:
    rng = np.random.default_rng(2)
    auc, why = domain_auc(rng.normal(size=(30, 4)), rng.normal(size=(12, 4)), np.zeros(30), np.arange(12) // 4)
    assert math.isnan(auc) and why == f"too few patients for {FOLDS} folds (1 home, 3 target)"


def _embedding_folder(root: Path, name: str, arch: str, ids: list[str], features: np.ndarray) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    np.save(folder / "features.npy", features.astype(np.float16))
    pd.DataFrame({"row": range(len(ids)), "image_id": ids, "ok": True}).to_parquet(folder / "index.parquet")
    meta = {"complete": True, "count": len(ids), "dataset": name.split("-")[0], "arch": arch, "fingerprint": "x"}
    (folder / "meta.json").write_text(json.dumps(meta))


def test_the_report_finds_both_sides_in_a_studys_embeddings(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    home, home_groups = _patients(rng, 60, 2, 8, 0.0)
    target, target_groups = _patients(rng, 60, 2, 8, 4.0)
    home_ids = [f"a:{i}" for i in range(len(home))]
    target_ids = [f"b:{i}" for i in range(len(target))]
    _embedding_folder(tmp_path, "a-probe-64-opencv", "probe", home_ids, home)
    _embedding_folder(tmp_path, "b-probe-64-opencv", "probe", target_ids, target)
    home_frame = pd.DataFrame({"image_id": home_ids, "patient_id": home_groups})
    target_frame = pd.DataFrame({"image_id": target_ids, "patient_id": target_groups})
    lookup = EmbeddingLookup(tmp_path)
    auc, why = lookup.distance(("c", "b"), home_frame, target_frame)
    expected = domain_auc(home.astype(np.float16), target.astype(np.float16), home_groups, target_groups)
    assert (auc, why) == pytest.approx(expected) and auc > MAX_EMBEDDING_AUC
    stranger = pd.DataFrame({"image_id": ["z:1"], "patient_id": [1]})
    assert lookup.distance(("c", "z"), home_frame, stranger) == (pytest.approx(math.nan, nan_ok=True), NO_EMBEDDINGS)
    assert EmbeddingLookup(tmp_path / "absent").distance(("c", "b"), home_frame, target_frame)[1] == NO_EMBEDDINGS
