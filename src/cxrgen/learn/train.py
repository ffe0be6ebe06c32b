"""The run driver: one (configuration, architecture, seed) run trained with Lightning, resumable and DDP-ready.

The recipe is the paper's (DESIGN.md section 2): binary cross-entropy on sigmoid outputs, Adam with Keras' time
decay ``lr_t = lr / (1 + decay * step)`` and epsilon 1e-7, early stopping on the validation mean AUC with the
best checkpoint kept. Labels may be NaN (``ignore`` policies); NaN targets are masked out of loss and AUC.

A run folder ``<study>/runs/<configuration>/<arch>/`` holds ``config.yaml``, ``metrics.csv`` (one row per epoch,
rank 0), ``tensorboard/`` (the same rows as TensorBoard scalars ``epoch/<column>`` with the epoch as step, and
Lightning's per-step ``train_loss``; ``train.tensorboard: false`` turns it off), ``checkpoints/{last,best}.ckpt``
and ``done.json`` once training has finished. Checkpoints go through
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
import signal
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cxrgen.data.loaders import CXRDataModule
from cxrgen.data.subsample import planned_steps, usable_rows
from cxrgen.errors import CxrgenError
from cxrgen.learn.checkpoints import AtomicCheckpointIO, load_checkpoint
from cxrgen.learn.module import MONITOR, CXRClassifier
from cxrgen.models.registry import create_model
from cxrgen.study.config import StudyConfig, dump_resolved
from cxrgen.study.layout import RunDir, require_study_folder
from cxrgen.study.workspace import Study
from cxrgen.utils.fileio import write_text
from cxrgen.utils.interrupts import Interrupted, as_interrupted
from cxrgen.utils.lock import run_lock

#: TrainConfig fields that do not change what a run computes, only where or how fast; a finished or
#: interrupted run may continue under different values of these.
_RUNTIME_FIELDS = (
    "num_workers", "accelerator", "devices", "num_nodes", "strategy", "max_epochs", "patience", "tensorboard",
)
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
        require_study_folder(self.run.last_checkpoint)  # a removed study is not recreated by the writes below
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
    config: StudyConfig, configuration_name: str, arch: str, size: int, seed: int | None = None,
    steps: int | None = None,
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
    if steps is not None:  # a subsample's fixed step budget replaces max_epochs and patience, which are left out
        keys["steps"] = steps
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
    # A size-matched or learning-curve run trains a fixed number of optimizer steps whatever its size (issue 25),
    # so a size's effect is not an effect of more updates: no early stopping, no epoch limit.
    subsample = config.configuration(configuration_name).subsample
    steps = None if subsample is None else planned_steps(config, subsample, usable_rows(study.dir, config))
    fingerprint = run_fingerprint(config, configuration_name, arch, size, run_seed, steps)
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
    callbacks: list[pl.Callback] = [early_stopping, checkpoints] if steps is None else [checkpoints]
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=train.devices,
        num_nodes=train.num_nodes,
        strategy=train.strategy,
        precision=_precision(config, accelerator),  # type: ignore[arg-type]
        max_epochs=train.max_epochs if subsample is None else -1,
        max_steps=-1 if steps is None else steps,
        accumulate_grad_batches=train.accumulate,
        limit_train_batches=train.limit_train_batches,
        deterministic=train.deterministic,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        # Lightning's loggers write from rank 0 only; the epoch rows go there too (CXRClassifier), metrics.csv
        # stays the source of truth. version="" puts the event files in <run>/tensorboard/ itself, and a resumed run
        # adds a file beside the first one.
        logger=TensorBoardLogger(run.path, name="tensorboard", version="", default_hp_metric=False)
        if train.tensorboard else False,
        log_every_n_steps=1,  # per-step train_loss in TensorBoard, and no "fewer batches than the interval" warning
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
