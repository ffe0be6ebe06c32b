"""A tiny learnable chest-X-ray stand-in for training tests: uint8 noise with bright squares as findings.

Batches have the ``cxrgen.data.loaders`` format: ``{"image": uint8 [B,1,H,W], "target": float32 [B,L] (NaN masked),
"index": int64 [B]}``. Label ``j`` present means a bright square in corner ``j``, so a small CNN learns it in a
couple of epochs on the CPU.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from cxrgen.study.config import Configuration, DatasetConfig, StudyConfig, TrainConfig

LABELS = ["Left", "Right"]
SIZE = 32
ARCH = "test_byobnet"


class SquaresDataset(Dataset[dict[str, torch.Tensor]]):
    """``n`` images of ``size`` px; a fixed ``seed`` gives the same images in every process."""

    def __init__(self, n: int, seed: int, size: int = SIZE, nan_fraction: float = 0.1) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 120, (n, 1, size, size), generator=g, dtype=torch.uint8)
        present = torch.rand((n, len(LABELS)), generator=g) < 0.5
        side = size // 3
        for i in range(n):
            if present[i, 0]:
                self.images[i, 0, :side, :side] = 230
            if present[i, 1]:
                self.images[i, 0, -side:, -side:] = 230
        self.targets = present.float()
        self.targets[torch.rand((n, len(LABELS)), generator=g) < nan_fraction] = float("nan")
        # What prediction files need per item, as cxrgen.data.loaders.CacheDataset has them; two images per patient.
        self.image_ids = [f"img{i}" for i in range(n)]
        self.patient_ids = [f"a:{i // 2}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "target": self.targets[i], "index": torch.tensor(i)}


class KillingDataset(SquaresDataset):
    """Sends itself SIGKILL when item number ``kill_after`` is fetched: a real kill in the middle of training."""

    def __init__(self, n: int, seed: int, kill_after: int) -> None:
        super().__init__(n, seed)
        self.kill_after, self.fetched = kill_after, 0

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        self.fetched += 1
        if self.fetched > self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__getitem__(i)


class SquaresDataModule(pl.LightningDataModule):
    """Train 64 images (4 batches of 16), validate 41 (odd, so 2-rank DDP pads with a duplicate).

    The train loader shuffles with the global RNG, so resuming equals an uninterrupted run only when the
    checkpoint restores that RNG.
    """

    def __init__(self, batch_size: int = 16, kill_after: int | None = None, one_class_val: bool = False) -> None:
        super().__init__()
        self.batch_size = batch_size
        n_train = 64
        self.train_set = SquaresDataset(n_train, 0) if kill_after is None else KillingDataset(n_train, 0, kill_after)
        self.val_set = SquaresDataset(41, 1, nan_fraction=0.0)
        if one_class_val:  # every validation AUC undefined (NaN)
            self.val_set.targets[:] = 0.0

    def train_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        return DataLoader(self.val_set, batch_size=self.batch_size)

    def test_dataset(self, dataset_name: str) -> SquaresDataset:
        return SquaresDataset(23, seed=100 + len(dataset_name), nan_fraction=0.2)


def tiny_study(out: Path, **train: Any) -> StudyConfig:
    """A study of one configuration ``c`` on a dataset ``a`` whose files the tests never read."""
    settings: dict[str, Any] = {
        "batch_size": 16,
        "lr": 3e-3,
        "max_epochs": 2,
        "pretrained": False,
        "num_workers": 0,
        "accelerator": "cpu",
        "devices": 1,
        **train,
    }
    return StudyConfig(
        name="tiny",
        out=out,
        datasets={"a": DatasetConfig(reader="chexpert", root=out.parent / f"{out.name}-data")},  # never read
        labels=LABELS,
        uncertainty={label: "ones" for label in LABELS},
        architectures=[ARCH],
        preprocess={"size": SIZE},  # type: ignore[arg-type]
        train=TrainConfig(**settings),
        configurations=[Configuration(name="c", train=["a"], internal=["a"])],
    )
