"""Training of one (configuration, architecture) run with Lightning.

The recipe is the paper's (DESIGN.md section 2): binary cross-entropy on sigmoid outputs, Adam with Keras' time
decay ``lr_t = lr / (1 + decay * step)`` and epsilon 1e-7, early stopping on the validation mean AUC with the
best checkpoint kept. Labels may be NaN (``ignore`` policies); NaN targets are masked out of loss and AUC.

A run folder ``<study>/runs/<configuration>/<arch>/`` holds ``config.yaml``, ``metrics.csv`` (one row per epoch,
rank 0), ``checkpoints/{last,best}.ckpt`` and ``done.json`` once training has finished. Checkpoints go through
:mod:`cxrgen.learn.checkpoints` (atomic writes, ``weights_only=True`` reads), including Lightning's own resume, so a
killed ``train`` rerun resumes from ``last.ckpt`` and ends with the weights an uninterrupted run would have.

Validation in DDP: every rank predicts its shard; the shards are gathered, the duplicates a
``DistributedSampler`` pads with are dropped by dataset index, and rank 0 computes the AUCs and broadcasts them,
so the number equals a single-process evaluation of the same weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn

from cxrgen.data.loaders import CXRDataModule
from cxrgen.errors import CxrgenError
from cxrgen.learn.checkpoints import AtomicCheckpointIO, load_checkpoint
from cxrgen.metrics import auc_per_label
from cxrgen.models.normalize import normalize_on_device
from cxrgen.models.registry import create_model
from cxrgen.study.config import StudyConfig, dump_resolved
from cxrgen.study.layout import RunDir
from cxrgen.study.workspace import Study
from cxrgen.utils.fileio import write_csv, write_text
from cxrgen.utils.interrupts import Interrupted, as_interrupted
from cxrgen.utils.lock import run_lock

#: The quantity early stopping and the best checkpoint follow: the validation mean AUC, or 0 when no label
#: has both classes in the validation set (so a run never stops or crashes on an undefined AUC).
MONITOR = "val_score"

#: TrainConfig fields that do not change what a run computes, only where or how fast; a finished or
#: interrupted run may continue under different values of these.
_RUNTIME_FIELDS = ("num_workers", "accelerator", "devices", "num_nodes", "strategy", "max_epochs", "patience")


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
    later rows keeps exactly one row per epoch.
    """
    frame = pd.DataFrame([row])
    if path.exists():
        old = pd.read_csv(path)
        frame = pd.concat([old[old["epoch"] < row["epoch"]], frame], ignore_index=True)
    write_csv(frame, path)


class RunCheckpoints(Checkpoint):
    """Write ``best.ckpt`` (weights, when the monitored score improves) then ``last.ckpt`` (full state) per epoch.

    Best is written first: a kill between the two leaves ``last.ckpt`` one epoch behind, and the resumed run
    recomputes that epoch and rewrites the same best. Whether early stopping has fired is saved too, so a run
    killed right after its last epoch's checkpoint stops on resume instead of training one epoch more.
    """

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.best = -math.inf
        self.best_epoch = -1
        self.stopped = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.stopped:
            trainer.should_stop = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        score = float(trainer.callback_metrics[MONITOR])
        if score > self.best:
            self.best, self.best_epoch = score, trainer.current_epoch + 1
            trainer.save_checkpoint(self.run.best_checkpoint, weights_only=True)
        self.stopped = trainer.should_stop
        trainer.save_checkpoint(self.run.last_checkpoint, weights_only=False)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "stopped": self.stopped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_epoch = float(state_dict["best"]), int(state_dict["best_epoch"])
        self.stopped = bool(state_dict["stopped"])


def run_fingerprint(
    config: StudyConfig, configuration_name: str, arch: str, size: int, seed: int | None = None
) -> str:
    """Hash of everything that decides a run's weights (data, labels, preprocessing, recipe), not of where it runs.

    A run that exists with another fingerprint is refused instead of resumed under a changed recipe.
    """
    conf = config.configuration(configuration_name)
    train = config.train.model_dump(mode="json", exclude=set(_RUNTIME_FIELDS))
    # Where files live is not what they are: roots and the weights path are left out (the weights' sha256 stays),
    # so a study folder and its data can be moved.
    train.pop("weights")
    # A run is one seed: the list of the study's other seeds does not decide its weights. With the default
    # (seeds absent, seed = train.seed) the hash is the one single-seed studies always had.
    train.pop("seeds", None)
    train["seed"] = config.train.seed_list()[0] if seed is None else seed
    train["weights_sha256"] = {k: v for k, v in train["weights_sha256"].items() if k == arch}
    keys = {
        "datasets": {name: config.datasets[name].fingerprint() for name in conf.train},
        "configuration": conf.model_dump(mode="json"),
        "labels": config.labels,
        "uncertainty": {label: config.uncertainty_for(label) for label in config.labels},
        "blank": config.blank,
        "views": config.views,
        "splits": {name: config.split_for(name).model_dump(mode="json") for name in conf.train},
        "preprocess": config.preprocess.model_dump(mode="json"),
        "arch": arch,
        "size": size,
        "train": train,
    }
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def _precision(config: StudyConfig, accelerator: str) -> str:
    if config.train.precision is not None:
        return config.train.precision
    return "bf16-mixed" if accelerator == "gpu" else "32-true"


def _accelerator(config: StudyConfig) -> str:
    wanted = config.train.accelerator
    if wanted == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if wanted == "cuda" else wanted


def _check_fingerprint(path: Path, recorded: str | None, fingerprint: str) -> None:
    if recorded != fingerprint:
        raise CxrgenError(
            f"{path}: made with other data, labels, preprocessing or training settings (fingerprint "
            f"{recorded}, now {fingerprint}); delete {path.parent} to start this run over"
        )


def _stopped_run(
    exc: BaseException, trainer: pl.Trainer, configuration_name: str, arch: str, last: Path
) -> Interrupted:
    """The interruption of a run, named: which run, which epoch, and what a rerun resumes from.

    ``SIGTERMException`` is what Lightning raises (a ``SystemExit`` with status 0) when its own SIGTERM handler
    ran without :func:`cxrgen.utils.interrupts.raise_on_signals`, e.g. when ``train_run`` is called from Python.
    """
    stopped = as_interrupted(exc) or Interrupted(signal.SIGTERM)
    epoch = f"epoch {trainer.current_epoch + 1} of {trainer.max_epochs}"
    if last.exists():
        resume = f"rerun to resume from {last} (the last finished epoch)"
    else:
        resume = "no epoch finished; a rerun starts it over"
    run = f"{configuration_name}/{arch}"
    message = f"run {run} stopped by {stopped.signal_name} in {epoch}, unfinished (no done.json); {resume}"
    return Interrupted(stopped.signum, message)


def _train_unlocked(
    study: Study,
    configuration_name: str,
    arch: str,
    datamodule: pl.LightningDataModule | None = None,
    progress: bool = False,
    seed: int | None = None,
) -> Path:
    """Train one architecture on one configuration with one seed, resuming or skipping work already done.

    ``seed`` is one of ``train.seeds`` (None: the first); it seeds everything and, with several seeds, names the
    run folder ``seed-<N>`` (:meth:`cxrgen.study.workspace.Study.run`).

    Args:
        study: The study's settings and folder.
        configuration_name: Name of one entry of ``config.configurations``.
        arch: Registry key or timm model name.
        datamodule: Batches ``{"image": uint8 [B,1,H,W], "target": float [B,L] (NaN masked), "index": int64
            [B]}``; built with ``CXRDataModule.from_study`` when omitted.
        progress: Show Lightning's progress bar.

    Returns:
        The run folder. When ``done.json`` is already there, it is returned at once; when
        ``checkpoints/last.ckpt`` is there, training resumes from it (same fingerprint required).

    Raises:
        CxrgenError: unknown configuration or architecture, missing pretrained weights, damaged checkpoint,
            or an existing run made with different settings.
    """
    config = study.config
    config.configuration(configuration_name)  # fails early, with a suggestion, on an unknown name
    size = config.input_size(arch)
    run_seed = study.seed(seed)
    run = study.run(configuration_name, arch, run_seed)
    folder = run.path
    fingerprint = run_fingerprint(config, configuration_name, arch, size, run_seed)
    done = run.done
    if done.exists():
        _check_fingerprint(done, json.loads(done.read_text()).get("fingerprint"), fingerprint)
        return folder
    last = run.last_checkpoint
    resume = last.exists()
    # run.json records the fingerprint when a run starts, so a resume need not read last.ckpt twice to check it.
    stamp = run.fingerprint
    if stamp.exists():
        _check_fingerprint(stamp, json.loads(stamp.read_text()).get("fingerprint"), fingerprint)
    elif resume:
        _check_fingerprint(last, load_checkpoint(last).get("cxrgen", {}).get("fingerprint"), fingerprint)

    pl.seed_everything(run_seed, workers=True, verbose=False)
    if datamodule is None:
        datamodule = CXRDataModule.from_study(study, configuration_name, size)
    train = config.train
    # On resume the weights come from last.ckpt; do not fetch (possibly unavailable) pretrained weights.
    model = create_model(
        arch,
        len(config.labels),
        pretrained=train.pretrained and not resume,
        weights_path=train.weights.get(arch),
        weights_sha256=train.weights_sha256.get(arch),
        keras_faithful=train.keras_faithful,
    )
    meta = {
        "arch": arch,
        "labels": list(config.labels),
        "input_size": size,
        "configuration": configuration_name,
        "keras_faithful": train.keras_faithful,
        "fingerprint": fingerprint,
    }
    module = CXRClassifier(
        model,
        config.labels,
        lr=train.lr,
        lr_decay=train.lr_decay,
        epsilon=train.epsilon,
        channels_last=train.channels_last,
        metrics_csv=run.metrics,
        meta=meta,
    )
    write_text(run.config, dump_resolved(config))
    started = {"fingerprint": fingerprint, "arch": arch, "configuration": configuration_name}
    write_text(stamp, json.dumps(started) + "\n")
    accelerator = _accelerator(config)
    checkpoints = RunCheckpoints(run)
    # Decide at validation end, before RunCheckpoints (checkpoint callbacks run last), so last.ckpt holds the
    # updated early-stopping state; the default (train epoch end) would run after the save.
    early_stopping = EarlyStopping(MONITOR, mode="max", patience=train.patience, check_on_train_epoch_end=False)
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=train.devices,
        num_nodes=train.num_nodes,
        strategy=train.strategy,
        precision=_precision(config, accelerator),  # type: ignore[arg-type]
        max_epochs=train.max_epochs,
        accumulate_grad_batches=train.accumulate,
        limit_train_batches=train.limit_train_batches,
        deterministic=train.deterministic,
        callbacks=[early_stopping, checkpoints],
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=folder,
    )
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=last if resume else None, weights_only=True)
    except (Interrupted, KeyboardInterrupt, SIGTERMException) as exc:
        raise _stopped_run(exc, trainer, configuration_name, arch, last) from None
    if trainer.state.finished and trainer.is_global_zero:
        summary = {
            "fingerprint": fingerprint,
            "epochs": trainer.current_epoch,
            "best_epoch": checkpoints.best_epoch,
            "best_val_score": checkpoints.best,
            "stopped_early": trainer.should_stop and trainer.current_epoch < train.max_epochs,
        }
        write_text(done, json.dumps(summary, indent=2) + "\n")
    return folder


def train_run(
    study: Study,
    configuration_name: str,
    arch: str,
    datamodule: pl.LightningDataModule | None = None,
    progress: bool = False,
    seed: int | None = None,
) -> Path:
    """Train one run (see :func:`_train_unlocked` for the arguments) while holding its folder's lock.

    Raises:
        LockedError: another process (a ``cxrgen study`` or ``cxrgen train``) is training this run now.
    """
    study.config.configuration(configuration_name)  # fails early, with a suggestion, on an unknown name
    with run_lock(study.run(configuration_name, arch, seed).path):
        return _train_unlocked(study, configuration_name, arch, datamodule, progress, seed)
