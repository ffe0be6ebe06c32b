"""Datasets, sampler and DataModule over the cache: flips on train only, same seed same batches, normalization."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrgen.data import cache
from cxrgen.data.loaders import CacheDataset, CXRDataModule, EpochSampler, UnionDataset
from cxrgen.errors import CxrgenError
from cxrgen.models.normalize import IMAGENET_MEAN, IMAGENET_STD, normalize_on_device
from cxrgen.runner import prepare
from cxrgen.study.config import StudyConfig
from cxrgen.study.workspace import Study
from cxrgen.utils.fileio import write_csv

LABELS = ["Cardiomegaly", "Edema"]
SIZE = 16


def test_normalize_on_device_matches_hand_computation() -> None:
    images = torch.tensor([0, 128, 255, 51], dtype=torch.uint8).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    out = normalize_on_device(images)
    assert out.shape == (2, 3, 2, 2) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    for channel in range(3):
        for value, (y, x) in zip((0, 128, 255, 51), ((0, 0), (0, 1), (1, 0), (1, 1)), strict=True):
            expected = (value / 255 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
            assert abs(out[1, channel, y, x].item() - expected) < 1e-6
    plain = normalize_on_device(images, channels_last=False)
    assert plain.is_contiguous() and torch.equal(plain, out)
    with pytest.raises(ValueError, match="uint8"):
        normalize_on_device(images.float())


def _images(n: int = 5) -> np.ndarray:
    return np.arange(n * 3 * 4, dtype=np.uint8).reshape(n, 3, 4)


def test_cache_dataset_items_and_flip() -> None:
    images = _images()
    targets = np.array([[1, np.nan], [0, 1]], dtype=np.float32)
    data = CacheDataset(images, np.array([4, 1]), targets)
    item = data[0]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (1, 3, 4)
    assert torch.equal(item["image"][0], torch.from_numpy(images[4]))
    assert item["index"] == 0
    torch.testing.assert_close(item["target"], torch.from_numpy(targets[0]), equal_nan=True)
    flipped = data[(1, True)]["image"][0]
    assert torch.equal(flipped, torch.from_numpy(images[1][:, ::-1].copy()))
    assert torch.equal(data[(1, False)]["image"][0], torch.from_numpy(images[1]))
    assert np.array_equal(images, _images())  # flipping copied, never touched the source


def test_cache_dataset_pickles_the_file_name_not_the_pixels(tmp_path: Path) -> None:
    array = np.lib.format.open_memmap(tmp_path / "images.npy", mode="w+", dtype=np.uint8, shape=(50, 64, 64))
    array[:] = np.arange(50, dtype=np.uint8)[:, None, None]
    array.flush()
    data = CacheDataset(np.load(tmp_path / "images.npy", mmap_mode="r"), np.arange(50), np.zeros((50, 1), np.float32))
    payload = pickle.dumps(data)
    assert len(payload) < 50 * 64 * 64 // 4
    clone = pickle.loads(payload)
    assert int(clone[7]["image"].max()) == 7 and clone[(49, True)]["image"].shape == (1, 64, 64)


def test_epoch_sampler_same_seed_same_order_and_flips() -> None:
    a = EpochSampler(100, shuffle=True, seed=3, flip_p=0.5)
    b = EpochSampler(100, shuffle=True, seed=3, flip_p=0.5)
    assert list(a) == list(b)
    first = list(a)
    assert sorted(i for i, _ in first) == list(range(100))
    assert 20 < sum(f for _, f in first) < 80
    a.set_epoch(1)
    second = list(a)
    assert second != first
    b.set_epoch(1)
    assert list(b) == second  # a "resumed" sampler set to epoch 1 sees what epoch 1 saw
    a.set_epoch(0)
    assert list(a) == first
    assert list(EpochSampler(4, shuffle=False, seed=0, flip_p=0.0)) == [(i, False) for i in range(4)]
    assert all(f for _, f in EpochSampler(10, shuffle=True, seed=0, flip_p=1.0))
    assert list(EpochSampler(50, shuffle=True, seed=4, flip_p=0.5)) != first[:50]


def test_union_checks_schema_and_namespaced_disjoint_patients() -> None:
    images, targets = _images(), np.zeros((2, 2), np.float32)

    def part(patients: list[str], labels: list[str] = LABELS) -> CacheDataset:
        return CacheDataset(images, np.array([0, 1]), targets, patient_ids=patients, labels=labels)

    union = UnionDataset([part(["a:1", "a:2"]), part(["b:1", "b:1"])])
    assert len(union) == 4 and union[(3, True)]["index"] == 3
    assert list(union.patient_ids) == ["a:1", "a:2", "b:1", "b:1"]
    with pytest.raises(ValueError, match="one label schema"):
        UnionDataset([part(["a:1", "a:2"]), part(["b:1", "b:2"], ["Edema", "Cardiomegaly"])])
    with pytest.raises(ValueError, match="namespaced"):
        UnionDataset([part(["1", "2"]), part(["b:1", "b:2"])])
    with pytest.raises(ValueError, match="shared by two datasets"):
        UnionDataset([part(["a:1", "a:2"]), part(["a:2", "b:2"])])


def _study(tmp_path: Path) -> Study:
    """Three tiny datasets with manifest, splits, excluded.csv and opencv caches at SIZE."""
    study = tmp_path / "study"
    frames, split_rows = [], []
    rng = np.random.default_rng(0)
    for name, n in (("one", 24), ("two", 12), ("ext", 8)):
        root = tmp_path / name
        (root / "img").mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 255, (20, 20 + i % 3), dtype=np.uint8)
            pixels[:, :4] = 255  # a bright left edge: a flip shows
            Image.fromarray(pixels).save(root / "img" / f"{i}.png")
            split = "ext" if name == "ext" else ("train", "train", "val", "test")[i % 4]
            frames.append(
                {
                    "dataset": name,
                    "image_id": f"{name}:{i}",
                    "path": f"img/{i}.png",
                    "patient_id": f"{name}:p{i // 2}",
                    "Cardiomegaly": float(i % 2),
                    "Edema": np.nan if i % 3 == 0 else 1.0,
                }
            )
            split_rows.append(
                {"image_id": f"{name}:{i}", "dataset": name, "split": "test" if split == "ext" else split}
            )
    (tmp_path / "one" / "img" / "3.png").write_bytes(b"")  # a test image that fails
    manifest = pd.DataFrame(frames)
    study.mkdir()
    manifest.to_parquet(study / "manifest.parquet")
    pd.DataFrame(split_rows).to_parquet(study / "splits.parquet")
    excluded = manifest.loc[manifest["image_id"].isin(["one:3", "one:0"]), ["dataset", "image_id", "path"]]
    write_csv(excluded.assign(reason="empty file"), study / "excluded.csv")  # one:0 (train) as if it had failed
    config = StudyConfig.model_validate(
        {
            "name": "t",
            "out": str(study),
            "datasets": {n: {"reader": "nih", "root": str(tmp_path / n)} for n in ("one", "two", "ext")},
            "labels": LABELS,
            "preprocess": {"engine": "opencv", "size": SIZE},
            "train": {"batch_size": 4, "num_workers": 0, "flip": 0.5, "seed": 7},
            "configurations": [
                {"name": "both", "train": ["one", "two"], "internal": ["one", "two"], "external": ["ext"]},
                {"name": "solo", "train": ["two"], "internal": ["two"], "external": ["ext"]},
            ],
        }
    )
    prepared = Study.of(config)
    prepare.ensure_caches(prepared, manifest, {}, workers=1)
    return prepared


@pytest.fixture()
def study(tmp_path: Path) -> Study:
    return _study(tmp_path)


def test_datamodule_sets_and_exclusions(study: Study) -> None:
    module = CXRDataModule.from_study(study, "both", SIZE)
    assert set(module.train.image_ids) == {f"one:{i}" for i in range(1, 24) if i % 4 < 2} | {
        f"two:{i}" for i in range(12) if i % 4 < 2
    }
    assert set(module.val.image_ids) == {
        f"{n}:{i}" for n, k in (("one", 24), ("two", 12)) for i in range(k) if i % 4 == 2
    }
    assert module.excluded_test == {"one": 1, "two": 0, "ext": 0}
    one = module.test_dataset("one")
    assert "one:3" not in set(one.image_ids) and len(one) == 5
    assert len(module.test_dataset("ext")) == 8 and module.test_dataset("ext").patient_ids[0] == "ext:p0"
    assert module.labels == tuple(LABELS)
    images, index = cache.open_cache(study.dir.path, "ext", SIZE, "opencv", True)
    item = module.test_dataset("ext")[3]
    row = int(index.set_index("image_id").loc["ext:3", "row"])
    assert torch.equal(item["image"][0], torch.from_numpy(np.array(images[row])))
    assert np.isnan(item["target"][1].item()) and item["target"][0].item() == 1.0  # NaN = masked
    with pytest.raises(CxrgenError, match="no test set"):
        module.test_dataset("nope")
    with pytest.raises(CxrgenError, match="did you mean 'solo'"):
        CXRDataModule.from_study(study, "sollo", SIZE)


def _batches(module: CXRDataModule, epoch: int) -> list[dict[str, torch.Tensor]]:
    module.sampler.set_epoch(epoch)
    return list(module.train_dataloader())


def test_flip_only_on_train_and_same_seed_same_batches(study: Study) -> None:
    module = CXRDataModule.from_study(study, "both", SIZE)
    twin = CXRDataModule.from_study(study, "both", SIZE)
    epoch0, again = _batches(module, 0), _batches(twin, 0)
    for a, b in zip(epoch0, again, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["index"], b["index"])
    epoch1 = _batches(module, 1)
    assert torch.cat([b["index"] for b in epoch1]).tolist() != torch.cat([b["index"] for b in epoch0]).tolist()
    # 4 batches: the fixture has 4 * batch_size + 1 training images, and a last batch of one is dropped
    assert [torch.equal(a["image"], b["image"]) for a, b in zip(_batches(twin, 1), epoch1, strict=True)] == [True] * 4

    def flips(batches: list[dict[str, torch.Tensor]], data: UnionDataset) -> list[bool]:
        out = []
        for batch in batches:
            for image, index in zip(batch["image"], batch["index"].tolist(), strict=True):
                stored = data[index]["image"]
                assert torch.equal(image, stored) or torch.equal(image, stored.flip(-1))
                out.append(not torch.equal(image, stored))
        return out

    train_flips = flips(epoch0, module.train)
    assert 0 < sum(train_flips) < len(train_flips)
    assert not any(flips(list(module.val_dataloader()), module.val))
    test_loader = module.eval_dataloader(module.test_dataset("ext"))
    assert torch.cat([b["index"] for b in test_loader]).tolist() == list(range(8))  # dataset order, for predictions


def test_dataloader_workers_read_the_memmap(study: Study) -> None:
    config = study.config.model_copy(update={"train": study.config.train.model_copy(update={"num_workers": 2})})
    module = CXRDataModule.from_study(Study.of(config), "solo", SIZE)
    loader = module.train_dataloader()
    assert loader.persistent_workers and loader.pin_memory == torch.cuda.is_available()
    in_workers = list(loader)
    module.num_workers = 0
    in_process = list(module.train_dataloader())
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(in_workers, in_process, strict=True))
