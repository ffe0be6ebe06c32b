"""Embed every image of a dataset once per frozen backbone: pooled features as a float16 memory-mapped array.

An embedding folder ``<study_dir>/embeddings/<key>/`` (key ``<dataset>-<arch>-<size>-<engine>[-noclahe]``) holds

* ``features.npy``: float16 [N, D], row i = row i of the dataset's uint8 cache (same ``image_id`` order);
* ``index.parquet``: ``row, image_id, ok`` copied from the cache index (``ok`` False for undecodable images,
  whose zero rows are embedded too and left out later by the same rules as for training);
* ``meta.json``: backbone, weights (their SHA-256, ``random`` or the hub tag), mean/std, size, the cache's
  fingerprint and the fingerprint of all of them;
* ``progress-<k>of<n>.jsonl``: the chunks each process finished.

The build follows :mod:`cxrgen.data.cache`: it happens in ``<key>.partial/``, chunk by chunk; a chunk's features are
flushed before its id is fsynced to the progress file, so a killed build, rerun, skips finished chunks and ends
byte-identical to an uninterrupted one (a chunk is always embedded in the same batches, and a random backbone is
initialized from a fixed seed). ``shard=(k, n)`` takes chunks with ``chunk_id % n == k - 1``; whoever finds every
chunk done renames the folder to its final name, the one step that publishes it.

Images are read from the cache (already CLAHE'd and resized), replicated to 3 channels and normalized with the
backbone's own mean and std (its timm pretrained config), not ImageNet's unless the backbone's are.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from cxrgen.data.cache import _progress_name, _ProgressLog, _read_progress, cache_dir, open_cache, read_meta
from cxrgen.errors import CxrgenError
from cxrgen.models.registry import create_backbone
from cxrgen.study.config import ArchitectureSpec, StudyConfig
from cxrgen.study.layout import StudyDir
from cxrgen.study.workspace import Study
from cxrgen.utils.fileio import publish_dir, sha256_of, write_parquet, write_text

log = logging.getLogger(__name__)

FEATURES = "features.npy"
INDEX = "index.parquet"
META = "meta.json"
PARTIAL_SUFFIX = ".partial"
#: Images per chunk: the unit of work, of resume and of sharding.
CHUNK = 256
#: Bump when the way features are computed changes, so old embeddings are rebuilt.
EMBED_VERSION = 1
#: Seed of a randomly initialized backbone: the same random features in every process and after every resume.
RANDOM_INIT_SEED = 0

Progress = Callable[[int, int], None]


class EmbedError(CxrgenError, RuntimeError):
    """Embeddings that cannot be built or used; the message names the folder."""


@dataclass(frozen=True)
class Backbone:
    """A frozen backbone as a study names it.

    Attributes:
        arch: The study's name for it (``runs/<configuration>/<arch>``).
        timm_name: The timm model (``name.tag``).
        pretrained: False means timm's random initialization (seeded with :data:`RANDOM_INIT_SEED`).
        weights: Local weights file, or None for timm's hub when ``pretrained``.
        weights_sha256: Expected SHA-256 of ``weights``.
    """

    arch: str
    timm_name: str
    pretrained: bool
    weights: Path | None = None
    weights_sha256: str | None = None

    @property
    def random_weights(self) -> bool:
        return not self.pretrained

    def weights_id(self) -> str:
        """What the weights are, for the fingerprint: ``random``, ``sha256:<hex>`` of the file, or ``hub:<tag>``."""
        if not self.pretrained:
            return f"random:seed{RANDOM_INIT_SEED}"
        if self.weights is not None:
            if not self.weights.is_file():
                raise EmbedError(f"backbone {self.arch!r}: weights file {self.weights} does not exist")
            return f"sha256:{sha256_of(self.weights)}"
        return f"hub:{self.timm_name}"


def study_backbone(config: StudyConfig, arch: str) -> Backbone:
    """The frozen backbone of a linear-probe architecture; ``pretrained`` unset follows ``train.pretrained``."""
    entry = config.architecture_specs.get(arch)
    if not isinstance(entry, ArchitectureSpec) or entry.mode != "linear_probe":
        raise EmbedError(f"architecture {arch!r} is no linear probe (architectures: {{name, timm, mode}})")
    pretrained = config.train.pretrained if entry.pretrained is None else entry.pretrained
    return Backbone(arch, config.arch_spec(arch).timm_name, pretrained, entry.weights, entry.weights_sha256)


def embedding_key(dataset: str, arch: str, size: int, engine: str, clahe: bool) -> str:
    """The folder name, e.g. ``nih-dinov2_probe-224-skimage``; the cache it reads is ``nih-224-skimage``."""
    return f"{dataset}-{arch}-{size}-{engine}" + ("" if clahe else "-noclahe")


def embedding_dir(study_dir: Path, dataset: str, arch: str, size: int, engine: str, clahe: bool) -> Path:
    return StudyDir(Path(study_dir)).embeddings / embedding_key(dataset, arch, size, engine, clahe)


def _normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg: dict[str, Any] = dict(getattr(model, "pretrained_cfg", {}) or {})
    mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 [B, H, W] -> float32 [B, 3, H, W]: x / 255 replicated to the backbone's channels, its mean/std."""
    x = images.to(torch.float32).div_(255.0).unsqueeze(1).expand(-1, len(mean), -1, -1)
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (x - m) / s


def load_frozen(backbone: Backbone, size: int, device: torch.device) -> nn.Module:
    """The backbone in eval mode on ``device``, without gradients; a random one from a fixed seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        model = create_backbone(
            backbone.timm_name, backbone.pretrained, size, backbone.weights, backbone.weights_sha256
        )
    model.requires_grad_(False)
    return model.to(device).eval()


@torch.inference_mode()
def embed_array(
    model: nn.Module, images: np.ndarray, batch_size: int, device: torch.device
) -> np.ndarray:
    """Pooled features float16 [n, D] of uint8 images [n, H, W], in batches of ``batch_size``.

    On a GPU the forward pass runs under bf16 autocast; features are stored as float16 either way.
    """
    mean, std = _normalization(model)
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[start : start + batch_size])).to(device)  # a writable copy
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            features = model(normalize(batch, mean, std))
        if features.dim() != 2:
            raise EmbedError(f"backbone returned features of shape {list(features.shape)}, expected [B, D]")
        out.append(features.float().cpu().numpy().astype(np.float16))
    return np.concatenate(out)


def _fingerprint(backbone: Backbone, cache_fingerprint: str, size: int, mean: Any, std: Any) -> dict[str, Any]:
    params = {
        "backbone": backbone.timm_name,
        "weights": backbone.weights_id(),
        "size": size,
        "mean": list(mean),
        "std": list(std),
        "cache_fingerprint": cache_fingerprint,
        "version": EMBED_VERSION,
    }
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    return {**params, "fingerprint": digest}


def _create_partial(partial: Path, index: pd.DataFrame, meta: dict[str, Any], dim: int) -> None:
    """Lay out an empty partial folder under a temporary name and rename it into place (first one wins)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{partial.name}.", dir=partial.parent))
    try:
        array = np.lib.format.open_memmap(tmp / FEATURES, mode="w+", dtype=np.float16, shape=(len(index), dim))
        array.flush()
        del array
        write_parquet(index[["row", "image_id", "ok"]], tmp / INDEX)
        write_text(tmp / META, json.dumps(meta, indent=2, sort_keys=True))
        with contextlib.suppress(OSError):  # another shard created it first: use theirs
            os.rename(tmp, partial)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _chunks(n: int, chunk_size: int, shard: tuple[int, int] | None) -> Iterator[int]:
    for c in range(-(-n // chunk_size)):
        if shard is None or c % shard[1] == shard[0] - 1:
            yield c


def build_embeddings(
    study_dir: Path,
    dataset: str,
    backbone: Backbone,
    size: int,
    engine: str,
    clahe: bool,
    *,
    device: torch.device | str | None = None,
    batch_size: int = 64,
    shard: tuple[int, int] | None = None,
    chunk_size: int = CHUNK,
    progress: Progress | None = None,
) -> Path:
    """Build (or find) the embeddings of one dataset's cache under one frozen backbone.

    Args:
        study_dir: The study directory, whose ``cache/<dataset>-<size>-<engine>`` must be finished.
        dataset: The study's dataset name.
        backbone: The frozen backbone (see :func:`study_backbone`).
        size: Input side in pixels (the cache's).
        engine, clahe: The cache's preprocessing.
        device: Where the backbone runs; the GPU when there is one.
        batch_size: Images per forward pass.
        shard: ``(k, n)``: only chunks with ``chunk_id % n == k - 1``.
        chunk_size: Images per chunk of a new build (a resumed build keeps its own).
        progress: Called with (images done, images in all) at the start and after each chunk.

    Returns:
        The final folder once every chunk is done, otherwise the ``.partial`` folder other shards complete.
    """
    if shard is not None and not 1 <= shard[0] <= shard[1]:
        raise ValueError(f"shard must be (k, n) with 1 <= k <= n, got {shard}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    images, index = open_cache(study_dir, dataset, size, engine, clahe)
    cache_meta = read_meta(cache_dir(study_dir, dataset, size, engine, clahe)) or {}
    final = embedding_dir(study_dir, dataset, backbone.arch, size, engine, clahe)
    model = load_frozen(backbone, size, device)
    mean, std = _normalization(model)
    meta = {
        **_fingerprint(backbone, str(cache_meta.get("fingerprint")), size, mean, std),
        "dataset": dataset,
        "arch": backbone.arch,
        "backbone_config": {k: str(v) for k, v in asdict(backbone).items()},
        "count": len(index),
        "chunk_size": chunk_size,
        "torch": torch.__version__,
        "complete": False,
    }
    published = read_meta(final)
    if published is not None and published.get("fingerprint") == meta["fingerprint"] and published.get("complete"):
        if progress is not None:
            progress(len(index), len(index))
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + PARTIAL_SUFFIX)
    existing = read_meta(partial)
    if partial.exists() and (existing is None or existing.get("fingerprint") != meta["fingerprint"]):
        log.info("embeddings %s: removing a partial build of other inputs", partial.name)
        shutil.rmtree(partial, ignore_errors=True)
        existing = None
    if existing is None:
        dim = int(embed_array(model, np.asarray(images[:1]), 1, device).shape[1]) if len(index) else 0
        _create_partial(partial, index, {**meta, "dim": dim}, dim)
        existing = read_meta(partial)
        if existing is None:
            raise EmbedError(f"{partial}: could not create the partial embeddings folder")
    chunk_size = int(existing["chunk_size"])
    n = len(index)
    done = _read_progress(partial)
    todo = [c for c in _chunks(n, chunk_size, shard) if c not in done]
    count = sum(min(chunk_size, n - c * chunk_size) for c in done)
    if progress is not None:
        progress(count, n)
    features = np.load(partial / FEATURES, mmap_mode="r+")
    progress_log = _ProgressLog(partial / _progress_name(shard))
    try:
        for c in todo:
            start, stop = c * chunk_size, min(n, (c + 1) * chunk_size)
            features[start:stop] = embed_array(model, np.asarray(images[start:stop]), batch_size, device)
            features.flush()
            progress_log.record(c, [])
            count += stop - start
            if progress is not None:
                progress(count, n)
    finally:
        progress_log.close()
        del features
    if len(_read_progress(partial)) < -(-n // chunk_size):
        log.info("embeddings %s: chunks left for other shards", final.name)
        return partial
    return _publish(partial, final, existing)


def _publish(partial: Path, final: Path, meta: dict[str, Any]) -> Path:
    with open(partial / FEATURES, "rb") as handle:
        os.fsync(handle.fileno())
    write_text(partial / META, json.dumps({**meta, "complete": True}, indent=2, sort_keys=True))
    fingerprint = meta["fingerprint"]
    return publish_dir(partial, final, lambda folder: (read_meta(folder) or {}).get("fingerprint") == fingerprint)


def open_embeddings(folder: Path) -> tuple[np.memmap, dict[str, Any]]:
    """A finished embedding folder's features (read-only float16 memmap [N, D]) and meta."""
    meta = read_meta(folder)
    if meta is None or not meta.get("complete"):
        raise EmbedError(f"{folder}: no finished embeddings; run `cxrgen embed` (all shards) first")
    features = np.load(folder / FEATURES, mmap_mode="r")
    if features.shape[0] != meta["count"]:
        raise EmbedError(f"{folder}: features.npy has {features.shape[0]} rows, meta.json says {meta['count']}")
    return features, meta


def ensure_embeddings(
    study: Study,
    arch: str,
    datasets: list[str],
    *,
    device: torch.device | str | None = None,
    shard: tuple[int, int] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Path]:
    """Embed each of ``datasets`` under the backbone of linear-probe ``arch``; dataset -> folder."""
    config = study.config
    backbone = study_backbone(config, arch)
    size = config.input_size(arch)
    engine, clahe = config.preprocess.engine, config.preprocess.clahe
    folders = {}
    for dataset in datasets:
        key = embedding_key(dataset, arch, size, engine, clahe)
        report = (lambda done, total, key=key: progress(key, done, total)) if progress else None
        folders[dataset] = build_embeddings(
            study.dir.path, dataset, backbone, size, engine, clahe, device=device,
            batch_size=config.probe.embed_batch_size, shard=shard, progress=report,
        )
    return folders


def embed_study(
    study: Study,
    *,
    arch: str | None = None,
    device: torch.device | str | None = None,
    shard: tuple[int, int] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[Path]:
    """Embed every dataset of a prepared study under each linear-probe architecture (or the one ``arch`` names).

    Raises:
        EmbedError: the study has no linear-probe architecture, or ``arch`` names none of them.
    """
    config = study.config
    probes = [name for name in config.architectures if config.is_linear_probe(name)]
    if arch is not None and arch not in probes:
        raise EmbedError(f"--arch {arch!r} is no linear-probe architecture of this study (they are: {probes})")
    if not probes:
        raise EmbedError("the study names no linear-probe architecture ({name, timm, mode: linear_probe})")
    folders: list[Path] = []
    for name in [arch] if arch else probes:
        found = ensure_embeddings(study, name, config.used_datasets(), device=device, shard=shard, progress=progress)
        folders += found.values()
    return folders
