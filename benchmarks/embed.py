"""Embed-stage throughput per frozen backbone, and seconds to fit every linear probe of the paper study's shape.

Embedding: images/s of :func:`cxrgen.learn.embed.embed_array` (what ``cxrgen embed`` runs per chunk: uint8 cache rows
normalized with the backbone's mean/std, forward without gradients, bf16 autocast on a GPU, float16 features) on
random uint8 images at each backbone's input size, random weights (throughput does not depend on them). The
ratio column is each backbone against the first one measured in the same run.

Probes: :func:`cxrgen.learn.probes.fit_probes` (5 labels x the C grid, then prediction of the test sets) for each of
the paper's three configurations, on synthetic float16 embeddings with the paper's split sizes times
``--scale`` (CheXpert 161,035 / 18,097 / 44,282 train / val / test images; ChestX-ray14 80,657 / 9,169 /
22,294; MIMIC test 5,159) and the paper's label prevalences. ``--scale 1`` is the full study.

    python benchmarks/embed.py                                  # CPU: small image counts, probes at scale 0.05
    python benchmarks/embed.py --images 512 --batch-size 128 --scale 1 --backbones vit_base_patch14_dinov2:518
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cxrgen.learn.embed import Backbone, embed_array, load_frozen
from cxrgen.learn.probes import fit_probes, predict_probes

#: (train, val, test) images of the paper's random patient splits; MIMIC is external test only.
PAPER_SPLITS = {"chexpert": (161_035, 18_097, 44_282), "nih": (80_657, 9_169, 22_294)}
MIMIC_TEST = 5_159
#: Positives / images per label (CheXpert totals after the U-policy, DESIGN.md section 2): prevalences.
PREVALENCE = np.array([67_115, 27_000, 14_783, 65_230, 97_815]) / 223_414
CONFIGURATIONS = {"chexpert": ["chexpert"], "nih": ["nih"], "both": ["chexpert", "nih"]}
LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


def embed_images_per_second(name: str, size: int, images: int, batch_size: int, device: torch.device) -> float:
    model = load_frozen(Backbone(name, name, pretrained=False), size, device)
    pixels = np.random.default_rng(0).integers(0, 256, (images, size, size), dtype=np.uint8)
    embed_array(model, pixels[:batch_size], batch_size, device)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    embed_array(model, pixels, batch_size, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return images / (time.perf_counter() - start)


def synthetic_embeddings(n: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """float16 features [n, dim] and 0/1 targets [n, 5]: each label a logistic function of 8 feature directions."""
    x = rng.normal(size=(n, dim)).astype(np.float16)
    weights = rng.normal(size=(dim, len(LABELS))) * (rng.random((dim, len(LABELS))) < 8 / dim)
    logits = x.astype(np.float32) @ weights.astype(np.float32) + np.log(PREVALENCE / (1 - PREVALENCE))
    y = (rng.random((n, len(LABELS))) < 1 / (1 + np.exp(-logits))).astype(np.float64)
    return x, y


def _stack(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def probe_seconds(scale: float, dim: int, cs: list[float]) -> dict[str, float]:
    rng = np.random.default_rng(0)
    sizes = {name: tuple(max(50, int(v * scale)) for v in split) for name, split in PAPER_SPLITS.items()}
    data = {name: [synthetic_embeddings(n, dim, rng) for n in split] for name, split in sizes.items()}
    mimic = synthetic_embeddings(max(50, int(MIMIC_TEST * scale)), dim, rng)
    out = {}
    for configuration, datasets in CONFIGURATIONS.items():
        (xt, yt), (xv, yv), (xs, _) = (_stack([data[d][part] for d in datasets]) for part in range(3))
        start = time.perf_counter()
        probes = fit_probes(LABELS, xt, yt, xv, yv, cs)
        predict_probes(probes, xs)
        predict_probes(probes, mimic[0])
        out[configuration] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--backbones", nargs="+", default=["densenet121:224", "resnet50:224", "vit_small_patch14_dinov2:224"],
        help="timm_name:size pairs",
    )
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--scale", type=float, default=0.05, help="fraction of the paper's split sizes")
    parser.add_argument("--dim", type=int, default=768, help="embedding width (ViT-B: 768, DenseNet121: 1024)")
    parser.add_argument("--cs", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1, 1.0, 10.0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"embed: {args.images} images, batch {args.batch_size}, {name}")
    baseline = None
    for entry in args.backbones:
        timm_name, size = entry.rsplit(":", 1)
        ips = embed_images_per_second(timm_name, int(size), args.images, args.batch_size, device)
        baseline = baseline or ips
        print(f"  {timm_name}@{size}: {ips:8.1f} images/s  (x{ips / baseline:.2f} of the first)")
    print(f"probes: 5 labels x {len(args.cs)} C, dim {args.dim}, paper split sizes x {args.scale}")
    seconds = probe_seconds(args.scale, args.dim, args.cs)
    for configuration, value in seconds.items():
        print(f"  configuration {configuration}: {value:7.1f} s (fit every C and label, predict both test sets)")
    print(f"  all three configurations: {sum(seconds.values()):.1f} s")


if __name__ == "__main__":
    main()
