"""Prediction: probabilities in dataset order, and the predictions file schema of DESIGN.md section 8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cxrgen.errors import CxrgenError
from cxrgen.learn.checkpoints import save_checkpoint
from cxrgen.learn.module import CXRClassifier
from cxrgen.learn.predict import predict_dataset, predict_run
from cxrgen.metrics.evaluate import read_predictions
from cxrgen.models.registry import create_model
from cxrgen.study.layout import StudyDir
from cxrgen.study.workspace import Study
from cxrgen.utils.fileio import parquet_metadata
from helpers.training import ARCH, LABELS, SquaresDataModule, SquaresDataset, tiny_study


def test_predict_dataset_gives_sigmoid_of_the_classifier_in_dataset_order() -> None:
    torch.manual_seed(0)
    model = create_model(ARCH, len(LABELS), pretrained=False)
    dataset = SquaresDataset(11, seed=3)
    p = predict_dataset(model, dataset, batch_size=4, device="cpu")
    module = CXRClassifier(model, LABELS).eval()
    with torch.no_grad():
        expected = torch.sigmoid(module(dataset.images)).double().numpy()
    assert p.shape == (11, len(LABELS))
    np.testing.assert_allclose(p, expected, rtol=1e-5, atol=1e-6)


def _fake_run(out: Path) -> Path:
    """A best.ckpt as training writes it, without training."""
    torch.manual_seed(0)
    model = create_model(ARCH, len(LABELS), pretrained=False)
    meta = {"arch": ARCH, "labels": LABELS, "input_size": 32, "configuration": "c", "keras_faithful": True}
    best = StudyDir(out).run("c", ARCH).best_checkpoint
    save_checkpoint({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "cxrgen": meta}, best)
    (best.parent.parent / "done.json").write_text("{}\n")  # a finished run (unfinished ones are refused)
    return best


def test_predict_run_writes_the_predictions_schema(tmp_path: Path) -> None:
    study = Study.of(tiny_study(tmp_path))
    _fake_run(tmp_path)
    path = predict_run(study, "c", ARCH, "internal", datamodule=SquaresDataModule(), device="cpu")
    assert path == tmp_path / "runs" / "c" / ARCH / "predictions" / "internal.parquet"
    frame = pd.read_parquet(path)
    assert list(frame.columns) == ["image_id", "patient_id", "y_Left", "p_Left", "y_Right", "p_Right"]
    expected = SquaresDataModule().test_dataset("a")  # "internal" of configuration c is dataset a
    assert frame["image_id"].tolist() == expected.image_ids
    assert frame["patient_id"].tolist() == expected.patient_ids
    np.testing.assert_array_equal(frame[["y_Left", "y_Right"]].to_numpy(), expected.targets.double().numpy())
    assert frame[["y_Left", "y_Right"]].isna().any().any()  # masked labels stay NaN
    assert ((frame[["p_Left", "p_Right"]] >= 0) & (frame[["p_Left", "p_Right"]] <= 1)).all().all()
    _, labels = read_predictions(path)  # the evaluate stage accepts it
    assert labels == LABELS
    assert "checkpoint_sha256" in parquet_metadata(path)


def test_predictions_are_kept_while_best_checkpoint_is_unchanged(tmp_path: Path) -> None:
    study = Study.of(tiny_study(tmp_path))
    _fake_run(tmp_path)
    path = predict_run(study, "c", ARCH, "internal", datamodule=SquaresDataModule(), device="cpu")
    before = path.stat().st_mtime_ns
    predict_run(study, "c", ARCH, "internal", datamodule=SquaresDataModule(), device="cpu")
    assert path.stat().st_mtime_ns == before


def test_predict_without_best_checkpoint_or_for_unknown_test_set_fails(tmp_path: Path) -> None:
    study = Study.of(tiny_study(tmp_path))
    with pytest.raises(CxrgenError, match="train this run first"):
        predict_run(study, "c", ARCH, "internal", datamodule=SquaresDataModule())
    _fake_run(tmp_path)
    with pytest.raises(CxrgenError, match="no test set"):
        predict_run(study, "c", ARCH, "mimic", datamodule=SquaresDataModule())
