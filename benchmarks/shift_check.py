"""Is the synthetic hospitals' dataset shift real yet learnable? Train a small CNN and print a table.

Reads the generated files directly (PIL and the CSVs, never the project's readers), applies the paper's label
recipe (U-Ones for Atelectasis, Edema, Effusion; U-Zeroes for Cardiomegaly, Consolidation; blank -> 0), splits
CheXpert- and NIH-like patients 80/20 at random, trains a 4-layer CNN on 64 px images on the CPU on each
hospital and on both, and reports mean AUC on each internal test part and on the MIMIC-like official test
split. Targets: internal >= 0.80, a single-hospital model loses >= 0.05 externally, the two-hospital model less.

    python benchmarks/shift_check.py --data runs/synthetic      # generates it first when missing
"""

from __future__ import annotations

import argparse
import csv
import gzip
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from torch import nn

from cxrgen.synthetic import write_synthetic

LABELS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
U_ONES = {"Atelectasis", "Edema", "Pleural Effusion"}
NIH_TOKEN = {"Pleural Effusion": "Effusion"}


def _target(value: str, label: str) -> float:
    if value in ("", "0.0"):
        return 0.0
    if value == "-1.0":
        return 1.0 if label in U_ONES else 0.0
    return 1.0


def _load(paths: list[Path], size: int) -> np.ndarray:
    """uint8 [N, size, size]: grayscale (RGBA PNGs included), bilinear resize, aspect not kept."""
    bilinear = Image.Resampling.BILINEAR
    return np.stack([np.asarray(Image.open(p).convert("L").resize((size, size), bilinear)) for p in paths])


def read_chexpert(root: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    with open(root / "chexpert/CheXpert-v1.0-small/train.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    paths = [root / "chexpert" / r["Path"] for r in rows]
    y = np.array([[_target(r[label], label) for label in LABELS] for r in rows], dtype=np.float32)
    return paths, y, [r["Path"].split("/")[2] for r in rows]


def read_nih(root: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    folders = {p.name: p for p in (root / "nih").glob("images_*/images/*.png")}
    with open(root / "nih/Data_Entry_2017_v2020.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    paths = [folders[r["Image Index"]] for r in rows]
    tokens = [set(r["Finding Labels"].split("|")) for r in rows]
    y = np.array([[float(NIH_TOKEN.get(label, label) in t) for label in LABELS] for t in tokens], dtype=np.float32)
    return paths, y, [r["Patient ID"] for r in rows]


def read_mimic_test(root: Path) -> tuple[list[Path], np.ndarray]:
    def table(name: str) -> list[dict[str, str]]:
        with gzip.open(root / f"mimic/mimic-cxr-2.0.0-{name}.csv.gz", "rt", newline="") as stream:
            return list(csv.DictReader(stream))

    labels = {(r["subject_id"], r["study_id"]): r for r in table("chexpert")}
    split = {r["dicom_id"]: r["split"] for r in table("split")}
    paths, y = [], []
    for r in table("metadata"):
        if split[r["dicom_id"]] != "test":
            continue
        subject, study = r["subject_id"], r["study_id"]
        paths.append(root / f"mimic/files/p{subject[:2]}/p{subject}/s{study}/{r['dicom_id']}.jpg")
        y.append([_target(labels[subject, study][label], label) for label in LABELS])
    return paths, np.array(y, dtype=np.float32)


def patient_split(patients: list[str], seed: int) -> np.ndarray:
    """Boolean test mask: 20 % of patients at random."""
    unique = sorted(set(patients))
    test = set(np.random.default_rng(seed).permutation(unique)[: round(0.2 * len(unique))].tolist())
    return np.array([p in test for p in patients])


def small_cnn() -> nn.Module:
    layers: list[nn.Module] = []
    channels = 1
    for width in (16, 32, 64, 128):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, len(LABELS)))


def _tensor(images: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(images).float().unsqueeze(1) / 255.0 - 0.5) / 0.25


def train(images: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = small_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, targets = _tensor(images), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start : start + 64]
            inputs = x[batch]
            flip = torch.rand(len(batch), generator=generator) < 0.5
            inputs[flip] = inputs[flip].flip(-1)
            loss = nn.functional.binary_cross_entropy_with_logits(model(inputs), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def aucs(model: nn.Module, images: np.ndarray, y: np.ndarray) -> np.ndarray:
    scores = torch.cat([model(_tensor(images[i : i + 256])) for i in range(0, len(images), 256)]).numpy()
    return np.array([
        roc_auc_score(y[:, k], scores[:, k]) if 0 < y[:, k].sum() < len(y) else np.nan for k in range(len(LABELS))
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("runs/synthetic"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if not (args.data / "study.yaml").exists():
        write_synthetic(args.data, seed=args.seed, scale=args.scale, workers=args.threads)
    data = {}
    for name, reader in (("chexpert", read_chexpert), ("nih", read_nih)):
        paths, y, patients = reader(args.data)
        test = patient_split(patients, args.seed)
        images = _load(paths, args.size)
        data[name] = (images[~test], y[~test], images[test], y[test])
    mimic_paths, mimic_y = read_mimic_test(args.data)
    mimic_images = _load(mimic_paths, args.size)
    print(f"loaded in {time.perf_counter() - start:.0f} s; train/test images: "
          + ", ".join(f"{k} {len(v[0])}/{len(v[2])}" for k, v in data.items()) + f", mimic test {len(mimic_y)}")
    header = f"{'trained on':<14}{'internal':>9}{'external':>9}{'drop':>7}   external per label ({', '.join(LABELS)})"
    print(header)
    for config in (["chexpert"], ["nih"], ["chexpert", "nih"]):
        x = np.concatenate([data[c][0] for c in config])
        y = np.concatenate([data[c][1] for c in config])
        model = train(x, y, args.epochs, args.seed)
        test_x = np.concatenate([data[c][2] for c in config])
        internal = aucs(model, test_x, np.concatenate([data[c][3] for c in config]))
        external = aucs(model, mimic_images, mimic_y)
        inside, outside = float(np.nanmean(internal)), float(np.nanmean(external))
        print(f"{'+'.join(config):<14}{inside:>9.3f}{outside:>9.3f}{inside - outside:>7.3f}   "
              + " ".join(f"{v:.3f}" for v in external) + "   internal: " + " ".join(f"{v:.3f}" for v in internal))
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
