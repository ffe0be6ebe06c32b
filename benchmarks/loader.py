"""Training-input throughput: the uint8 cache against per-item decoding, and against the model's own speed.

Rows (DataLoader, 2 workers, batch 32, images/s):

* the memory-mapped uint8 cache through ``CacheDataset`` and ``EpochSampler`` (flips included), as training reads it;
* the same cache with workers returning normalized float32 3-channel tensors (what the design avoids);
* per-item decode + the paper's skimage CLAHE and resize of an NIH PNG (what the cache replaces);
* a DenseNet121 training step on this CPU (timm, pretrained=False, batch 16, channels-last), for scale.

Run: ``.venv/bin/python benchmarks/loader.py [--images 4096]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cxrgen.data.loaders import CacheDataset, EpochSampler
from cxrgen.images.preprocess import preprocess
from cxrgen.models.normalize import normalize_on_device

SIZE = 224
BATCH = 32
WORKERS = 2
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "nih" / "images_1024"


class FloatInWorkers(Dataset[dict[str, Any]]):
    """The cache, but normalized to float32 [3, H, W] inside the worker."""

    def __init__(self, inner: CacheDataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, item: tuple[int, bool]) -> dict[str, Any]:
        out = self.inner[item]
        out["image"] = normalize_on_device(out["image"][None], channels_last=False)[0]
        return out


class DecodeEachTime(Dataset[dict[str, Any]]):
    """Per-item decode + skimage CLAHE + resize of one PNG, as a loader without a cache does."""

    def __init__(self, path: Path, n: int) -> None:
        self.path, self.n = path, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        pixels = preprocess(self.path, SIZE, "skimage")
        return {"image": torch.from_numpy(pixels)[None], "target": torch.zeros(5), "index": index}


def _loader_rate(dataset: Dataset[dict[str, Any]], sampler: Any, epochs: int = 1) -> float:
    loader = DataLoader(dataset, batch_size=BATCH, sampler=sampler, num_workers=WORKERS, persistent_workers=True)
    for _ in loader:  # warm-up epoch: worker start, page cache
        break
    count, start = 0, time.perf_counter()
    for epoch in range(epochs):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        for batch in loader:
            count += len(batch["index"])
    return count / (time.perf_counter() - start)


def _sources(folder: Path) -> tuple[Path, Path]:
    """An NIH PNG (real when ../shared/realdata is there) and a CheXpert-small-like 320x390 JPEG made from it."""
    pngs = sorted(REALDATA.glob("*.png")) if REALDATA.is_dir() else []
    if pngs:
        gray = np.asarray(Image.open(pngs[0]).convert("L"))
    else:
        gray = np.clip(np.random.default_rng(0).normal(128, 30, (1024, 1024)), 0, 255).astype(np.uint8)
    png, jpeg = folder / "nih.png", folder / "small.jpg"
    Image.fromarray(gray).save(png)
    Image.fromarray(gray).resize((320, 390), Image.Resampling.BOX).save(jpeg, quality=95)
    return png, jpeg


def _train_rate(steps: int = 3, batch: int = 16) -> float:
    model = timm.create_model("densenet121", pretrained=False, num_classes=5).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    images = torch.randint(0, 256, (batch, 1, SIZE, SIZE), dtype=torch.uint8)
    targets = torch.randint(0, 2, (batch, 5)).float()

    def step() -> None:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(normalize_on_device(images)), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096, help="images in the synthetic cache")
    parser.add_argument("--decoded", type=int, default=32, help="NIH images decoded per item (4x for JPEG)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        array = np.lib.format.open_memmap(folder / "images.npy", "w+", np.uint8, (args.images, SIZE, SIZE))
        array[:] = np.random.default_rng(0).integers(0, 256, array.shape, dtype=np.uint8)
        array.flush()
        del array
        cached = CacheDataset(
            np.load(folder / "images.npy", mmap_mode="r"),
            np.arange(args.images),
            np.zeros((args.images, 5), np.float32),
        )
        sampler = EpochSampler(args.images, shuffle=True, seed=0, flip_p=0.5)
        png, jpeg = _sources(folder)
        small, nih = DecodeEachTime(jpeg, 4 * args.decoded), DecodeEachTime(png, args.decoded)
        rows = [
            ("uint8 cache -> uint8 [1,224,224] (the design)", _loader_rate(cached, sampler, epochs=2)),
            ("uint8 cache -> float32 [3,224,224] in workers", _loader_rate(FloatInWorkers(cached), sampler)),
            ("per-item decode + skimage pipeline, CheXpert-small JPEG", _loader_rate(small, None)),
            ("per-item decode + skimage pipeline, NIH PNG 1024", _loader_rate(nih, None)),
        ]
    train = _train_rate()
    base = rows[0][1]
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"DataLoader, {WORKERS} workers, batch {BATCH}, {SIZE}x{SIZE}; {os.cpu_count()} cores, load average {load}\n")
    print("| source | images/s | cache (uint8) is ... x faster |")
    print("|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {base / rate:.1f} |")
    print(f"| DenseNet121 training step, batch 16, channels-last, fp32 (CPU) | {train:,.1f} | {base / train:.0f} |")


if __name__ == "__main__":
    main()
