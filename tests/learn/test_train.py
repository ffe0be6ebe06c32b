"""Training contracts: masked loss, Keras decay, resume equals uninterrupted, same seed same losses, DDP AUC."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cxrgen.errors import CxrgenError
from cxrgen.learn.module import evaluate_logits, keras_time_decay, masked_bce
from cxrgen.learn.predict import load_run_model, predict_arrays
from cxrgen.learn.train import train_run
from cxrgen.metrics import OneClassWarning, auc_per_label
from cxrgen.study.workspace import Study
from helpers.training import ARCH, LABELS, SquaresDataModule, tiny_study

TESTS = Path(__file__).resolve().parents[1]  # where the helpers package is
EPOCH_ITEMS = 64  # images fetched per training epoch by SquaresDataModule


def test_masked_bce_ignores_nan_targets() -> None:
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]], requires_grad=True)
    target = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    expected = (math.log(2.0) + math.log1p(math.e)) / 2  # -log sigmoid(0), -log(1 - sigmoid(1))
    loss = masked_bce(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logits.grad is not None and logits.grad[:, 1].abs().sum() == 0
    all_masked = masked_bce(logits, torch.full((2, 2), float("nan")))
    assert all_masked.item() == 0.0 and all_masked.requires_grad


def test_keras_time_decay_per_optimizer_step() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=1e-3, eps=1e-7)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, keras_time_decay(1e-2))
    for step in range(1, 4):
        optimizer.step()
        scheduler.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 / (1 + 1e-2 * step), rel=1e-12)
    assert scheduler.state_dict()["lr_lambdas"] == [None]  # nothing pickled into checkpoints


def test_validation_drops_sampler_padding_by_index() -> None:
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(9, 2)))
    target = torch.from_numpy((rng.random((9, 2)) < 0.5).astype(np.float64))
    index = torch.arange(9)
    padded = [torch.cat([x, x[:3]]) for x in (logits, target, index)]  # a DistributedSampler repeats the head
    loss, mean, *aucs = evaluate_logits(*padded, LABELS)
    expected = [roc_auc_score(target[:, j], logits[:, j]) for j in range(2)]
    assert aucs == pytest.approx(expected) and mean == pytest.approx(np.mean(expected))
    assert loss == pytest.approx(masked_bce(logits, target).item())


def _train(out: Path, datamodule: SquaresDataModule | None = None, **train: object) -> Path:
    return train_run(Study.of(tiny_study(out, **train)), "c", ARCH, datamodule=datamodule or SquaresDataModule())


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two uninterrupted epochs."""
    out = tmp_path_factory.mktemp("straight")
    return _train(out)


def test_loss_falls_and_metrics_csv_has_one_row_per_epoch(straight: Path) -> None:
    metrics = pd.read_csv(straight / "metrics.csv")
    expected = ["epoch", "step", "train_loss", "val_loss", "val_auc_mean"]
    assert list(metrics.columns) == [*expected, *(f"val_auc_{label}" for label in LABELS), "lr", "seconds"]
    assert metrics["epoch"].tolist() == [1, 2] and metrics["step"].tolist() == [4, 8]
    assert metrics["train_loss"].iloc[1] < metrics["train_loss"].iloc[0]
    assert metrics["val_loss"].iloc[1] < metrics["val_loss"].iloc[0]
    assert metrics["val_auc_mean"].iloc[-1] > 0.8
    assert metrics["lr"].iloc[-1] == pytest.approx(3e-3 / (1 + 1e-5 * 8))


def test_tensorboard_event_files_hold_the_epoch_rows(straight: Path) -> None:
    """Lightning's TensorBoard logger writes into <run>/tensorboard/ by default, with metrics.csv's rows as
    ``epoch/<column>`` scalars (step = epoch), readable with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = straight / "tensorboard"
    assert list(folder.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(folder))
    events.Reload()
    metrics = pd.read_csv(straight / "metrics.csv")
    tags = events.Tags()["scalars"]
    for column in ("train_loss", "val_loss", "val_auc_mean", f"val_auc_{LABELS[0]}", "lr"):
        scalars = events.Scalars(f"epoch/{column}")
        assert [s.step for s in scalars] == metrics["epoch"].tolist()
        assert [s.value for s in scalars] == pytest.approx(metrics[column].tolist(), rel=1e-6)
    assert "train_loss" in tags  # Lightning's per-step loss beside the epoch rows


def test_tensorboard_can_be_turned_off(tmp_path: Path) -> None:
    run = _train(tmp_path, max_epochs=1, tensorboard=False)
    assert (run / "metrics.csv").is_file() and not (run / "tensorboard").exists()


def test_checkpoints_hold_only_tensors_and_plain_values(straight: Path) -> None:
    last = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    best = torch.load(straight / "checkpoints" / "best.ckpt", weights_only=True)
    assert last["epoch"] == 1 and "optimizer_states" in last and "optimizer_states" not in best
    assert last["cxrgen"]["arch"] == ARCH and last["cxrgen"]["labels"] == LABELS
    assert (straight / "config.yaml").is_file()
    assert json.loads((straight / "done.json").read_text())["epochs"] == 2


def test_finished_run_returns_at_once_and_changed_recipe_is_refused(straight: Path) -> None:
    out = straight.parents[2]
    before = (straight / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    assert _train(out) == straight
    assert (straight / "checkpoints" / "last.ckpt").stat().st_mtime_ns == before
    with pytest.raises(CxrgenError, match="fingerprint"):
        _train(out, lr=1e-2)


def _state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def _script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "job.py"
    header = f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nfrom pathlib import Path\n"
    script.write_text(header + textwrap.dedent(body))
    return script


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(straight: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    script = _script(
        tmp_path,
        f"""
        from helpers.training import ARCH, SquaresDataModule, tiny_study
        from cxrgen.learn.train import train_run
        from cxrgen.study.workspace import Study
        out = Path({str(out)!r})
        train_run(Study.of(tiny_study(out)), "c", ARCH, datamodule=SquaresDataModule(kill_after={EPOCH_ITEMS + 20}))
        """,
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == -9, result.stderr[-2000:]
    run = out / "runs" / "c" / ARCH
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    assert not (run / "done.json").exists()

    assert _train(out) == run  # a fresh process resumes from last.ckpt and runs the second epoch
    reference, resumed = _state(straight), _state(run)
    assert reference.keys() == resumed.keys()
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    columns = ["epoch", "step", "train_loss", "val_loss", "val_auc_mean"]
    pd.testing.assert_frame_equal(
        pd.read_csv(run / "metrics.csv")[columns], pd.read_csv(straight / "metrics.csv")[columns]
    )


def test_same_seed_same_losses_other_seed_other_losses(straight: Path, tmp_path: Path) -> None:
    reference = pd.read_csv(straight / "metrics.csv")["train_loss"].iloc[0]  # seed 0
    same, other = (
        pd.read_csv(_train(tmp_path / str(seed), max_epochs=1, seed=seed) / "metrics.csv")["train_loss"].iloc[0]
        for seed in (0, 1)
    )
    assert same == reference
    assert other != reference


def test_early_stopping_on_undefined_auc_and_accumulation(tmp_path: Path) -> None:
    # One-class validation labels: every AUC is NaN (with a warning), the monitored score stays 0, so nothing
    # improves after epoch 1 and patience 1 stops the run at epoch 2 instead of crashing or running on.
    with pytest.warns(OneClassWarning):
        run = _train(tmp_path, SquaresDataModule(one_class_val=True), max_epochs=5, patience=1, accumulate=2)
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2]
    assert metrics["val_auc_mean"].isna().all()
    assert metrics["step"].tolist() == [2, 4]  # 4 batches per epoch, one optimizer step per 2
    done = json.loads((run / "done.json").read_text())
    assert done["stopped_early"] and done["best_epoch"] == 1
    assert (run / "checkpoints" / "best.ckpt").is_file()


@pytest.mark.slow
def test_ddp_validation_auc_equals_single_process_evaluation(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    script = _script(
        tmp_path,
        f"""
        from helpers.training import ARCH, SquaresDataModule, tiny_study
        from cxrgen.learn.train import train_run
        from cxrgen.study.workspace import Study
        out = Path({str(out)!r})
        config = tiny_study(out, max_epochs=1, devices=2, strategy="ddp")
        train_run(Study.of(config), "c", ARCH, datamodule=SquaresDataModule())
        """,
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run = out / "runs" / "c" / ARCH
    row = pd.read_csv(run / "metrics.csv").iloc[-1]

    model, _ = load_run_model(run / "checkpoints" / "last.ckpt")
    val_set = SquaresDataModule().val_set
    p, y = predict_arrays(model, val_set, batch_size=7, device="cpu")
    aucs = auc_per_label(y, p, LABELS)
    assert [row[f"val_auc_{label}"] for label in LABELS] == pytest.approx(aucs.tolist(), abs=1e-9)
    assert row["val_auc_mean"] == pytest.approx(float(np.mean(aucs)), abs=1e-9)
    assert row["step"] == 2  # 64 images over 2 ranks in batches of 16
