"""Torch datasets and the Lightning DataModule over the preprocessed caches.

Loader workers only copy uint8 [1, H, W] rows out of the memory-mapped cache (and flip them when the sampler
says so): that runs at thousands of images per second on two workers, where returning normalized float32
3-channel tensors is several times slower. Float conversion, ImageNet normalization and channel expansion
happen on the device, in :func:`normalize_on_device`.

Flips are decided by :class:`EpochSampler` from ``default_rng([seed, epoch])``, never by worker random state, so
the same seed gives the same batches and a resumed run sees the same order and flips as an uninterrupted one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import lightning
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cxrgen.data.cache import open_cache
from cxrgen.data.subsample import ensure_subsample
from cxrgen.data.verify import read_excluded
from cxrgen.errors import CxrgenError
from cxrgen.study.workspace import Study

log = logging.getLogger(__name__)
Item = dict[str, Any]
class CacheDataset(Dataset[Item]):
    """Rows of one cache as ``{"image": uint8 [1, H, W], "target": float32 [L], "index": int}``.

    The memmap is reopened lazily in each loader worker from its file name: pickling the dataset for a worker
    sends the file name, never the pixels.

    Args:
        images: the cache's memmap uint8 [N, H, W] (an in-memory array also works, and is pickled whole).
        rows: cache row of each item, int [n].
        targets: float32 [n, L] in {0, 1}; NaN = masked (no loss, no metric).
        image_ids: study image id of each item (for predictions files).
        patient_ids: namespaced patient id of each item (``nih:123``).
        labels: the label names of the target columns, in order.
    """

    def __init__(
        self,
        images: np.ndarray,
        rows: np.ndarray,
        targets: np.ndarray,
        *,
        image_ids: Sequence[str] | None = None,
        patient_ids: Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        self.rows = np.asarray(rows, dtype=np.int64)
        self.targets = np.asarray(targets, dtype=np.float32)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N, H, W], got {images.dtype} {images.shape}")
        if self.targets.ndim != 2 or len(self.targets) != len(self.rows):
            raise ValueError(f"targets must be [n, L] with n = {len(self.rows)} rows, got {self.targets.shape}")
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= len(images)):
            raise ValueError(f"rows outside the cache's {len(images)} images")
        n = len(self.rows)
        self.image_ids = np.asarray(image_ids if image_ids is not None else [str(i) for i in range(n)], dtype=object)
        self.patient_ids = np.asarray(patient_ids if patient_ids is not None else self.image_ids, dtype=object)
        if len(self.image_ids) != n or len(self.patient_ids) != n:
            raise ValueError("image_ids and patient_ids need one entry per row")
        self.labels = tuple(labels) if labels is not None else tuple(f"label{i}" for i in range(self.targets.shape[1]))
        if len(self.labels) != self.targets.shape[1]:
            raise ValueError(f"{len(self.labels)} label names for {self.targets.shape[1]} target columns")
        if isinstance(images, np.memmap) and images.filename is not None:
            self._source: tuple[str, int, tuple[int, ...]] | None = (images.filename, images.offset, images.shape)
            self._images: np.ndarray | None = None
        else:
            self._source, self._images = None, images

    def _array(self) -> np.ndarray:
        if self._images is None:
            assert self._source is not None
            filename, offset, shape = self._source
            self._images = np.memmap(filename, dtype=np.uint8, mode="r", offset=offset, shape=shape)
        return self._images

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self._source is not None:
            state["_images"] = None  # reopened in the worker
        return state

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int | tuple[int, bool]) -> Item:
        index, flip = item if isinstance(item, tuple) else (item, False)
        index = int(index)
        image = self._array()[self.rows[index]]  # [H, W] view into the memmap
        pixels = np.array(image[:, ::-1] if flip else image)  # a copy: the memmap is read-only
        return {
            "image": torch.from_numpy(pixels).unsqueeze(0),
            "target": torch.from_numpy(self.targets[index].copy()),
            "index": index,
        }
class UnionDataset(Dataset[Item]):
    """Several datasets read as one; checks one label schema and namespaced, disjoint patient ids.

    ``index`` in the items is the position in the union, so ``image_ids[index]`` names the image.
    """

    def __init__(self, parts: Sequence[CacheDataset]) -> None:
        if not parts:
            raise ValueError("a union needs at least one dataset")
        schemas = {part.labels for part in parts}
        if len(schemas) != 1:
            raise ValueError(f"datasets of a union must share one label schema, got {sorted(schemas)}")
        patients = [set(part.patient_ids.tolist()) for part in parts]
        for ids in patients:
            bare = [pid for pid in ids if ":" not in str(pid)]
            if bare:
                raise ValueError(f"patient ids must be namespaced by dataset (nih:123), got e.g. {bare[0]!r}")
        for i, first in enumerate(patients):
            for second in patients[i + 1 :]:
                shared = first & second
                if shared:
                    raise ValueError(f"{len(shared)} patient id(s) shared by two datasets, e.g. {next(iter(shared))}")
        self.parts = list(parts)
        self.labels = parts[0].labels
        self._starts = np.cumsum([0] + [len(part) for part in parts])
        self.image_ids = np.concatenate([part.image_ids for part in parts])
        self.patient_ids = np.concatenate([part.patient_ids for part in parts])
        self.targets = np.concatenate([part.targets for part in parts])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, item: int | tuple[int, bool]) -> Item:
        index, flip = item if isinstance(item, tuple) else (item, False)
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} outside a union of {len(self)} images")
        part = int(np.searchsorted(self._starts, index, side="right")) - 1
        out = self.parts[part][(index - int(self._starts[part]), flip)]
        out["index"] = index
        return out
class EpochSampler(Sampler[tuple[int, bool]]):
    """Yields ``(index, flip)``: order and flips drawn from ``default_rng([seed, epoch])``.

    Lightning calls :meth:`set_epoch` before each epoch, so epoch e always sees the same order and flips,
    whether the run was interrupted or not.
    """

    def __init__(self, n: int, shuffle: bool, seed: int, flip_p: float) -> None:
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {flip_p}")
        self.n, self.shuffle, self.seed, self.flip_p = n, shuffle, seed, flip_p
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, bool]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        flips = rng.random(self.n) < self.flip_p
        return zip(order.tolist(), flips.tolist(), strict=True)
class CXRDataModule(lightning.LightningDataModule):
    """Train, validation and test sets of one configuration at one input size, read from the caches.

    Args:
        train: the training images (union of the configuration's training datasets, ``split == "train"``).
        val: the validation images (same datasets, ``split == "val"``).
        tests: dataset name -> its test images (``split == "test"``), excluded images dropped.
        excluded_test: dataset name -> how many of its test images were dropped as undecodable.
        batch_size, num_workers: DataLoader settings.
        flip: probability of a horizontal flip of a training image.
        seed: seed of the training order and flips.
    """

    def __init__(
        self,
        train: UnionDataset,
        val: UnionDataset,
        tests: Mapping[str, CacheDataset],
        excluded_test: Mapping[str, int],
        batch_size: int,
        num_workers: int,
        flip: float,
        seed: int,
    ) -> None:
        super().__init__()
        self.train, self.val, self.tests = train, val, dict(tests)
        self.excluded_test = dict(excluded_test)
        self.batch_size, self.num_workers, self.flip, self.seed = batch_size, num_workers, flip, seed
        self.labels = train.labels
        self.sampler = EpochSampler(len(train), shuffle=True, seed=seed, flip_p=flip)

    @classmethod
    def from_study(cls, study: Study, configuration_name: str, size: int) -> CXRDataModule:
        """Read ``manifest.parquet``, ``splits.parquet``, ``excluded.csv`` and the caches of a prepared study.

        Test sets are every internal and external dataset's ``split == "test"`` images (for a dataset with an
        official split, its official test split). Excluded images (``excluded.csv`` or ``ok == False`` in the
        cache) leave every set; the numbers that leave a test set are in :attr:`excluded_test` and logged.
        """
        config, layout = study.config, study.dir
        conf = config.configuration(configuration_name)
        manifest = pd.read_parquet(layout.manifest)
        splits = pd.read_parquet(layout.splits, columns=["image_id", "split"])
        excluded = set(read_excluded(layout.path)["image_id"])
        labels = list(config.labels)
        missing = [label for label in labels if label not in manifest.columns]
        if missing:
            raise CxrgenError(f"{layout.manifest}: no target column(s) {', '.join(missing)}")
        frame = manifest.merge(splits, on="image_id", how="left", validate="one_to_one")
        unsplit = frame["split"].isna()
        if unsplit.any():
            first = frame["image_id"][unsplit].iloc[0]
            raise CxrgenError(f"{layout.splits}: image {first} and others have no split")

        # A size-matched or learning-curve configuration trains on its recorded subsample (data/subsample.py).
        sample = ensure_subsample(layout, config, conf) if conf.subsample is not None else None

        def part(dataset: str, split: str) -> tuple[CacheDataset, int]:
            images, index = open_cache(layout.path, dataset, size, config.preprocess.engine, config.preprocess.clahe)
            rows = frame.loc[(frame["dataset"] == dataset) & (frame["split"] == split)]
            if sample is not None and split != "test":
                wanted = sample.loc[(sample["dataset"] == dataset) & (sample["split"] == split), "image_id"]
                rows = rows[rows["image_id"].isin(set(wanted))]
            lookup = index.set_index("image_id")
            unknown = ~rows["image_id"].isin(lookup.index)
            if unknown.any():
                first = rows["image_id"][unknown].iloc[0]
                raise CxrgenError(f"cache of {dataset!r} lacks image {first}; rerun prepare")
            bad = rows["image_id"].isin(excluded) | ~lookup.loc[rows["image_id"], "ok"].to_numpy(dtype=bool)
            kept = rows.loc[~bad]
            if sample is not None and split != "test" and bad.any():
                raise CxrgenError(
                    f"configuration {conf.name!r}: {int(bad.sum())} subsampled {split} image(s) of {dataset!r} are "
                    f"unusable in the cache (e.g. {rows['image_id'][bad].iloc[0]}); rerun prepare"
                )
            dataset_part = CacheDataset(
                images,
                lookup.loc[kept["image_id"], "row"].to_numpy(),
                kept[labels].to_numpy(dtype=np.float32),
                image_ids=kept["image_id"].tolist(),
                patient_ids=kept["patient_id"].astype(str).tolist(),
                labels=labels,
            )
            return dataset_part, int(bad.sum())

        train = UnionDataset([part(name, "train")[0] for name in conf.train])
        val = UnionDataset([part(name, "val")[0] for name in conf.train])
        if len(train) == 0:
            raise CxrgenError(f"configuration {conf.name!r}: no training images left")
        tests: dict[str, CacheDataset] = {}
        excluded_test: dict[str, int] = {}
        for name in dict.fromkeys([*conf.internal, *conf.external]):
            tests[name], excluded_test[name] = part(name, "test")
            if excluded_test[name]:
                log.warning("test set %s: %d image(s) excluded as undecodable", name, excluded_test[name])
        settings = config.train
        return cls(
            train, val, tests, excluded_test, settings.batch_size, settings.num_workers, settings.flip, settings.seed
        )

    def test_dataset(self, dataset_name: str) -> CacheDataset:
        """The test images of one internal or external dataset (``image_ids``, ``patient_ids`` on it)."""
        if dataset_name not in self.tests:
            known = ", ".join(self.tests)
            raise CxrgenError(f"{dataset_name!r} is no test set of this configuration; known: {known}")
        return self.tests[dataset_name]

    def _loader(
        self, dataset: Dataset[Item], sampler: Sampler[Any] | None = None, drop_last: bool = False
    ) -> DataLoader[Item]:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader[Item]:
        # A last training batch of one image fails BatchNorm in training mode on small feature maps ("Expected more
        # than 1 value per channel"): then that batch is dropped. The order is reshuffled every epoch, so it is
        # another image each time; a batch of two or more is kept as it is.
        world = self.trainer.world_size if self.trainer is not None else 1
        per_rank = -(-len(self.train) // world)
        return self._loader(self.train, self.sampler, drop_last=per_rank % self.batch_size == 1)

    def val_dataloader(self) -> DataLoader[Item]:
        return self._loader(self.val)

    def eval_dataloader(self, dataset: Dataset[Item]) -> DataLoader[Item]:
        """A loader in dataset order, unflipped, for prediction on a test set."""
        return self._loader(dataset)
