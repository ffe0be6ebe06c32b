"""The paper's recipe as a LightningModule: masked BCE, Keras time decay, DDP-exact validation AUC."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from cxrgen.metrics import auc_per_label
from cxrgen.models.normalize import normalize_on_device
from cxrgen.study.layout import require_study_folder
from cxrgen.utils.fileio import write_csv

#: The quantity early stopping and the best checkpoint follow: the validation mean AUC, or 0 when no label
#: has both classes in the validation set (so a run never stops or crashes on an undefined AUC).
MONITOR = "val_score"


def masked_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the labelled entries.

    Args:
        logits: [B, L] raw scores (sigmoid applied inside, in float32 for stability under autocast).
        target: [B, L] in {0, 1}, NaN where the label is masked (``ignore`` policy).

    Returns:
        Scalar mean over non-NaN entries; 0 (still differentiable) when every entry is masked. Written
        without boolean indexing so it never synchronizes the host with the GPU.
    """
    mask = ~torch.isnan(target)
    safe = torch.where(mask, target, torch.zeros_like(target))
    losses = F.binary_cross_entropy_with_logits(logits.float(), safe.float(), reduction="none")
    return (losses * mask).sum() / mask.sum().clamp_min(1)


def keras_time_decay(decay: float) -> Callable[[int], float]:
    """LR factor of Keras' legacy ``decay`` argument: ``1 / (1 + decay * iterations)``, per optimizer step.

    A plain function (not a callable object) so ``LambdaLR.state_dict()`` stays free of pickled objects.
    """

    def factor(step: int) -> float:
        return 1.0 / (1.0 + decay * step)

    return factor


def _rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain values (loadable with ``weights_only=True``)."""
    np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, key, *rest = state["numpy"]
    np.random.set_state((kind, key.numpy(), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CXRClassifier(pl.LightningModule):
    """A multi-label chest X-ray classifier under the paper's training recipe.

    Args:
        model: Backbone + linear head returning [B, L] logits (see :func:`cxrgen.models.registry.create_model`).
        labels: Label names, in the order of the model's outputs and the batches' ``target`` columns.
        lr: Adam learning rate at step 0.
        lr_decay: Keras time decay per optimizer step (0 keeps the learning rate constant).
        epsilon: Adam epsilon (Keras' default 1e-7, not torch's 1e-8).
        channels_last: Run the model in channels-last memory format (faster convolutions on GPU and CPU).
        metrics_csv: Where rank 0 writes one row per epoch; ``None`` writes nothing.
        meta: Plain values stored in every checkpoint under ``"cxrgen"`` (arch, labels, input size,
            fingerprint), enough to rebuild the model for prediction.
    """

    def __init__(
        self,
        model: nn.Module,
        labels: Sequence[str],
        lr: float = 1e-3,
        lr_decay: float = 1e-5,
        epsilon: float = 1e-7,
        channels_last: bool = True,
        metrics_csv: Path | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.labels = list(labels)
        self.lr, self.lr_decay, self.epsilon = lr, lr_decay, epsilon
        self.channels_last = channels_last
        self.metrics_csv = metrics_csv
        self.meta = dict(meta or {})
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._loss_sum = torch.zeros(())
        self._loss_count = torch.zeros(())
        self._epoch_start = time.monotonic()
        self._resume_rng: tuple[int, dict[str, Any]] | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits [B, L] of uint8 images [B, 1, H, W] (normalized here, on the model's device)."""
        return self.model(normalize_on_device(images, channels_last=self.channels_last))

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        # Fused Adam is one kernel per step instead of several per tensor: at batch 32 the step is host-bound.
        optimizer = torch.optim.Adam(params, lr=self.lr, eps=self.epsilon, fused=self.device.type == "cuda")
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, keras_time_decay(self.lr_decay))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_epoch_start(self) -> None:
        if self._resume_rng is not None and self.current_epoch == self._resume_rng[0]:
            _set_rng_state(self._resume_rng[1])
            self._resume_rng = None
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_count = torch.zeros((), device=self.device)
        self._epoch_start = time.monotonic()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = masked_bce(self(batch["image"]), batch["target"])
        self._loss_sum += loss.detach()
        self._loss_count += 1
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch["image"]).float()
        self._val.append((logits, batch["target"].float(), batch["index"].long()))

    def _gather(self, local: torch.Tensor) -> torch.Tensor:
        """Concatenate a [n_rank, ...] tensor over ranks; ranks may hold different n."""
        if self.trainer.world_size == 1:
            return local
        sizes = cast(torch.Tensor, self.all_gather(torch.tensor([local.shape[0]], device=self.device))).reshape(-1)
        padded = local.new_zeros((int(sizes.max()), *local.shape[1:]))
        padded[: local.shape[0]] = local
        gathered = cast(torch.Tensor, self.all_gather(padded))  # [world, max_n, ...]
        return torch.cat([gathered[r, : int(n)] for r, n in enumerate(sizes)])

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        n_labels = len(self.labels)
        if self._val:
            logits, target, index = (torch.cat(parts) for parts in zip(*self._val, strict=True))
        else:
            logits = torch.zeros((0, n_labels), device=self.device)
            target, index = torch.zeros_like(logits), torch.zeros(0, dtype=torch.long, device=self.device)
        self._val = []
        logits, target, index = self._gather(logits), self._gather(target), self._gather(index)
        train_loss = self.trainer.strategy.reduce(self._loss_sum, reduce_op="sum")
        train_count = self.trainer.strategy.reduce(self._loss_count, reduce_op="sum")
        values: list[float] | None = None
        if self.trainer.is_global_zero:
            values = evaluate_logits(logits.cpu(), target.cpu(), index.cpu(), self.labels)
        values = self.trainer.strategy.broadcast(values, src=0)
        assert values is not None
        val_loss, auc_mean, aucs = values[0], values[1], values[2:]
        self.log(MONITOR, 0.0 if math.isnan(auc_mean) else auc_mean, sync_dist=True)
        self.log("val_auc_mean", auc_mean, sync_dist=True, prog_bar=True)
        if self.trainer.is_global_zero and self.metrics_csv is not None:
            row: dict[str, float | int] = {
                "epoch": self.current_epoch + 1,
                "step": self.global_step,
                "train_loss": float(train_loss / train_count.clamp_min(1)),
                "val_loss": val_loss,
                "val_auc_mean": auc_mean,
                **{f"val_auc_{label}": auc for label, auc in zip(self.labels, aucs, strict=True)},
                "lr": float(self.trainer.optimizers[0].param_groups[0]["lr"]),
                "seconds": round(time.monotonic() - self._epoch_start, 3),
            }
            append_epoch_row(self.metrics_csv, row)
            if self.logger is not None:  # TensorBoard's view of the same row: one scalar per column, step = epoch
                scalars = {f"epoch/{k}": float(v) for k, v in row.items() if k != "epoch"}
                self.logger.log_metrics(scalars, step=int(row["epoch"]))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cxrgen"] = self.meta
        # The global RNG feeds data-loader worker seeds (random flips); restoring it makes resume exact.
        checkpoint["rng"] = _rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Applied when the next epoch starts, not now: on resume Lightning first closes the checkpointed epoch
        # (its data iterator draws from the global RNG), which the uninterrupted run had already done.
        if "rng" in checkpoint:
            self._resume_rng = (int(checkpoint["epoch"]) + 1, checkpoint["rng"])


def evaluate_logits(
    logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor, labels: Sequence[str]
) -> list[float]:
    """Validation loss, mean AUC and per-label AUCs of gathered predictions.

    Args:
        logits: [N, L] logits from all ranks, possibly with repeated samples.
        target: [N, L] targets in {0, 1, NaN}.
        index: [N] dataset index of each row; repeats (``DistributedSampler`` padding) are dropped, keeping the
            first, and rows are put in dataset order.
        labels: Names used in warnings about labels with a single class.

    Returns:
        ``[val_loss, mean AUC (NaN-skipping; NaN when no label has both classes), AUC per label...]``.
    """
    _, first = np.unique(index.numpy(), return_index=True)
    keep = torch.from_numpy(first)
    logits, target = logits[keep].double(), target[keep].double()
    val_loss = float(masked_bce(logits, target)) if len(keep) else math.nan
    aucs = auc_per_label(target.numpy(), torch.sigmoid(logits).numpy(), labels) if len(keep) else None
    if aucs is None:
        aucs = np.full(len(labels), np.nan)
    finite = aucs[np.isfinite(aucs)]
    mean = float(finite.mean()) if finite.size else math.nan
    return [val_loss, mean, *map(float, aucs)]


def append_epoch_row(path: Path, row: dict[str, float | int]) -> None:
    """Add one epoch's row to ``metrics.csv`` atomically, replacing rows of that epoch or later.

    A run killed after writing a row but before its checkpoint repeats that epoch on resume; dropping the
    later rows keeps exactly one row per epoch. A study folder removed meanwhile is an error, not recreated.
    """
    require_study_folder(path)
    frame = pd.DataFrame([row])
    if path.exists():
        old = pd.read_csv(path)
        frame = pd.concat([old[old["epoch"] < row["epoch"]], frame], ignore_index=True)
    write_csv(frame, path)
