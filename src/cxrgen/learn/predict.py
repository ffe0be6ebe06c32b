"""Inference of a trained run on a test set -> ``predictions/<test_set>.parquet``.

Prediction runs in one process over the whole test set, never through a ``DistributedSampler``: that sampler
pads with repeated images, which would bias every AUC computed from the file. It runs in float32 (no autocast),
because bf16 rounds nearby scores to ties and ties change AUCs in the third decimal.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cxrgen.data.loaders import CXRDataModule, UnionDataset
from cxrgen.errors import CxrgenError
from cxrgen.learn.checkpoints import load_checkpoint
from cxrgen.metrics.evaluate import UNFINISHED_KEY
from cxrgen.models.normalize import normalize_on_device
from cxrgen.models.registry import create_model
from cxrgen.study.layout import RunDir
from cxrgen.study.workspace import Study
from cxrgen.utils.fileio import parquet_metadata, sha256_of, write_parquet

log = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def predict_arrays(
    model: nn.Module,
    dataset: Dataset[dict[str, torch.Tensor]],
    batch_size: int,
    device: torch.device | str,
    num_workers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and targets of every item of ``dataset``, in dataset order.

    Args:
        model: Maps normalized float images [B, 3, H, W] to logits [B, L] (the ``model`` of a
            :class:`cxrgen.learn.train.CXRClassifier`).
        dataset: Items ``{"image": uint8 [1, H, W], "target": float [L] (NaN = unlabelled), "index": int}``
            where ``index`` is the item's position.
        batch_size: Images per forward pass.
        device: Where the model runs; normalization happens there too.
        num_workers: Data-loader worker processes.

    Returns:
        ``(p, y)``: float64 [N, L] probabilities in [0, 1] and float64 [N, L] targets in {0, 1, NaN}.
    """
    device = torch.device(device)
    model = model.to(device).to(memory_format=torch.channels_last).eval()
    n = len(dataset)  # type: ignore[arg-type]
    probs: np.ndarray | None = None
    targets: np.ndarray | None = None
    seen = np.zeros(n, dtype=bool)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        logits = model(normalize_on_device(images, channels_last=True)).float()
        p = torch.sigmoid(logits).double().cpu().numpy()
        if probs is None or targets is None:
            probs, targets = np.full((n, p.shape[1]), np.nan), np.full((n, p.shape[1]), np.nan)
        rows = batch["index"].numpy()
        probs[rows], targets[rows], seen[rows] = p, batch["target"].double().numpy(), True
    if probs is None or targets is None or not seen.all():
        raise CxrgenError(f"prediction covered {int(seen.sum())} of {n} images (index must be 0..N-1)")
    return probs, targets


def predict_dataset(
    model: nn.Module, dataset: Dataset[dict[str, torch.Tensor]], batch_size: int, device: torch.device | str
) -> np.ndarray:
    """Probabilities [N, L] in [0, 1] of every image of ``dataset``, in dataset order (see :func:`predict_arrays`)."""
    return predict_arrays(model, dataset, batch_size, device)[0]


def load_run_model(checkpoint: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the classifier of a run checkpoint (``weights_only=True``) and return it with its metadata.

    The metadata (``arch``, ``labels``, ``input_size``, ...) is what training stored under ``"cxrgen"``.
    """
    state = load_checkpoint(checkpoint)
    meta = state.get("cxrgen")
    if not isinstance(meta, dict) or "arch" not in meta:
        raise CxrgenError(f"checkpoint {checkpoint} was not written by cxrgen training (no 'cxrgen' entry)")
    model = create_model(
        meta["arch"], len(meta["labels"]), pretrained=False, keras_faithful=bool(meta.get("keras_faithful"))
    )
    weights = {k.removeprefix("model."): v for k, v in state["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(weights)
    return model, meta


def predictions_frame(
    image_ids: Iterable[object], patient_ids: Iterable[object], labels: Sequence[str], p: np.ndarray, y: np.ndarray
) -> pd.DataFrame:
    """The predictions schema: ``image_id, patient_id``, then ``y_<label>, p_<label>`` for each label."""
    frame = pd.DataFrame({"image_id": [str(i) for i in image_ids], "patient_id": [str(i) for i in patient_ids]})
    for j, label in enumerate(labels):
        frame[f"y_{label}"] = y[:, j]
        frame[f"p_{label}"] = p[:, j]
    return frame.reset_index(drop=True)


def test_rows_digest(dataset: Any) -> str:
    """SHA-256 of a test set's image ids, patient ids and targets: what its predictions file depends on besides the
    weights."""
    digest = hashlib.sha256("\n".join(map(str, dataset.image_ids)).encode())
    digest.update("\n".join(map(str, dataset.patient_ids)).encode())
    digest.update(np.ascontiguousarray(dataset.targets, dtype=np.float32).tobytes())
    return digest.hexdigest()


def predict_run(
    study: Study,
    configuration_name: str,
    arch: str,
    test_set_name: str,
    datamodule: Any | None = None,
    device: torch.device | str | None = None,
    seed: int | None = None,
    allow_unfinished: bool = False,
) -> Path:
    """Write ``runs/<configuration>/<arch>[/seed-<N>]/predictions/<test_set>.parquet`` from ``best.ckpt``.

    ``seed`` picks the run of one training seed (None: the first; see :meth:`cxrgen.study.workspace.Study.run`).

    A run without ``done.json`` is unfinished: its ``best.ckpt`` is the best of a half-trained run, and its
    predictions are refused unless ``allow_unfinished``; then the file records ``unfinished: true`` in its
    metadata, and the report marks it.

    Skipped when the file exists and was made from the current ``best.ckpt`` (its SHA-256 is kept in the
    parquet metadata). Under ``torch.distributed`` only rank 0 predicts; the other ranks wait for it.

    Args:
        study: The study's settings and folder.
        configuration_name: The run's configuration.
        arch: The run's architecture.
        test_set_name: ``internal`` (the union of the configuration's internal datasets' test splits) or the
            name of one external dataset, as :meth:`cxrgen.study.config.Configuration.test_sets` names them.
        datamodule: Provides ``test_dataset(dataset_name)``, a dataset with ``image_ids`` and ``patient_ids``
            per item; built with ``CXRDataModule.from_study`` when omitted.
        device: Defaults to the GPU when there is one.
        allow_unfinished: Predict from an unfinished run's ``best.ckpt`` too.

    Returns:
        The predictions file.

    Raises:
        CxrgenError: no ``best.ckpt`` (train first), the run is unfinished (and not allowed), or its labels
            differ from the study's.
    """
    run = study.run(configuration_name, arch, seed)
    distributed = dist.is_available() and dist.is_initialized()
    if not distributed or dist.get_rank() == 0:
        _predict_run(study, configuration_name, run, test_set_name, datamodule, device, allow_unfinished)
    if distributed:
        dist.barrier()
    return run.predictions(test_set_name)


def _predict_run(
    study: Study,
    configuration_name: str,
    run: RunDir,
    test_set_name: str,
    datamodule: Any | None,
    device: torch.device | str | None,
    allow_unfinished: bool,
) -> None:
    best, out, unfinished = run.best_checkpoint, run.predictions(test_set_name), not run.finished
    if not best.is_file():
        raise CxrgenError(f"{best} does not exist: train this run first (cxrgen train)")
    config = study.config
    configuration = config.configuration(configuration_name)
    known = {test_set.name: test_set.datasets for test_set in configuration.test_sets()}
    if test_set_name not in known:
        raise CxrgenError(f"{test_set_name!r} is no test set of configuration {configuration_name!r}: {list(known)}")
    model, meta = load_run_model(best)
    if unfinished and not allow_unfinished:
        run.require_finished(f"{configuration_name}/{meta.get('arch', '?')}")
    if list(meta["labels"]) != list(config.labels):
        raise CxrgenError(f"{best} predicts labels {meta['labels']}, the study file has {config.labels}")
    if datamodule is None:
        datamodule = CXRDataModule.from_study(study, configuration_name, int(meta["input_size"]))
    parts = [datamodule.test_dataset(name) for name in known[test_set_name]]
    dataset = parts[0] if len(parts) == 1 else UnionDataset(parts)
    # The file is current when both the weights and the test rows (ids and ground truth) are unchanged: a new
    # label policy or labeler for a test dataset changes y without touching best.ckpt.
    checksum = sha256_of(best)
    rows = test_rows_digest(dataset)
    if out.is_file():
        recorded = parquet_metadata(out)
        same_state = recorded.get(UNFINISHED_KEY, "false") == str(unfinished).lower()
        if recorded.get("checkpoint_sha256") == checksum and recorded.get("test_rows_sha256") == rows and same_state:
            return
    p, y = predict_arrays(model, dataset, config.train.batch_size, device or default_device(), config.train.num_workers)
    frame = predictions_frame(dataset.image_ids, dataset.patient_ids, config.labels, p, y)
    metadata = {
        "checkpoint_sha256": checksum, "test_rows_sha256": rows, "test_set": test_set_name, "arch": str(meta["arch"]),
    }
    metadata[UNFINISHED_KEY] = str(unfinished).lower()
    write_parquet(frame, out, metadata={**metadata, "configuration": configuration_name})


def predict_validation(
    study: Study,
    configuration_name: str,
    arch: str,
    datamodule: Any | None = None,
    device: torch.device | str | None = None,
    seed: int | None = None,
) -> Path:
    """Write ``<run>/validation.parquet``: ``best.ckpt`` on the training datasets' val split (``seed`` as in
    :func:`predict_run`).

    The file sits beside ``predictions/``, not in it, so no report mistakes it for a test set.

    Thresholds and temperatures are chosen on it and applied unchanged to every test set (issue 11), so the test
    sets never pick their own operating point. Skipped, like :func:`predict_run`, when weights and rows are
    unchanged.
    """
    run = study.run(configuration_name, arch, seed)
    distributed = dist.is_available() and dist.is_initialized()
    if not distributed or dist.get_rank() == 0:
        _predict_validation(study, configuration_name, run, datamodule, device)
    if distributed:
        dist.barrier()
    return run.validation


def _predict_validation(
    study: Study, configuration_name: str, run: RunDir, datamodule: Any | None, device: torch.device | str | None
) -> None:
    best, out = run.best_checkpoint, run.validation
    if not best.is_file():
        raise CxrgenError(f"{best} does not exist: train this run first (cxrgen train)")
    model, meta = load_run_model(best)
    config = study.config
    if datamodule is None:
        datamodule = CXRDataModule.from_study(study, configuration_name, int(meta["input_size"]))
    dataset = datamodule.val
    if len(dataset) == 0:
        log.warning("%s: no validation images; no thresholds or temperatures can be fitted for this run", run.path)
        return
    checksum, rows = sha256_of(best), test_rows_digest(dataset)
    recorded = parquet_metadata(out) if out.is_file() else {}
    if recorded.get("checkpoint_sha256") == checksum and recorded.get("test_rows_sha256") == rows:
        return
    p, y = predict_arrays(model, dataset, config.train.batch_size, device or default_device(), config.train.num_workers)
    frame = predictions_frame(dataset.image_ids, dataset.patient_ids, config.labels, p, y)
    metadata = {"checkpoint_sha256": checksum, "test_rows_sha256": rows, "test_set": "validation"}
    write_parquet(frame, out, metadata={**metadata, "arch": str(meta["arch"]), "configuration": configuration_name})
