"""Training-step throughput of the study's architectures against the cache loader's throughput.

A training step here is what ``cxrgen.learn.train`` runs per batch: uint8 images normalized on the device, forward
under autocast, masked BCE, backward, Adam (fused on CUDA) and the Keras LR decay. The loader figure is either
given (``--loader-ips``) or measured by reading a temporary uint8 memmap cache through ``cxrgen.data.loaders`` with the
same DataLoader settings as training. The ratio loader / train says whether the accelerator (ratio > 1) or the
input pipeline (ratio < 1) bounds training.

    python benchmarks/train_throughput.py                          # CPU smoke numbers, small step counts
    python benchmarks/train_throughput.py --batch-size 32 --steps 50 --compile reduce-overhead   # on a GPU

``--compile reduce-overhead`` captures CUDA graphs, which removes the per-kernel launch cost that makes
DenseNet121 host-bound at batch 32.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from cxrgen.data.loaders import CacheDataset, EpochSampler
from cxrgen.learn.module import keras_time_decay, masked_bce
from cxrgen.models.normalize import normalize_on_device
from cxrgen.models.registry import create_model, get_arch

NUM_LABELS = 5


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_images_per_second(
    arch: str,
    batch_size: int,
    steps: int,
    warmup: int,
    device: torch.device,
    bf16: bool,
    channels_last: bool,
    compile_mode: str,
) -> float:
    """Images per second of full training steps on random uint8 batches already on ``device``."""
    size = get_arch(arch).input_size
    model = create_model(arch, NUM_LABELS, pretrained=False, keras_faithful=True).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-3, eps=1e-7, fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, keras_time_decay(1e-5))
    forward = model if compile_mode == "none" else torch.compile(model, mode=compile_mode)
    images = torch.randint(0, 256, (batch_size, 1, size, size), dtype=torch.uint8, device=device)
    target = (torch.rand(batch_size, NUM_LABELS, device=device) < 0.3).float()

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = forward(normalize_on_device(images, channels_last=channels_last))
        loss = masked_bce(logits, target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

    for _ in range(warmup):  # includes compilation and CUDA-graph capture
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def loader_images_per_second(size: int, batch_size: int, workers: int, n_images: int) -> float:
    """Images per second of one epoch read from a uint8 memmap cache the way training reads it."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "images.npy"
        cache = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n_images, size, size))
        cache[:] = np.random.default_rng(0).integers(0, 256, cache.shape, dtype=np.uint8)
        cache.flush()
        images = np.load(path, mmap_mode="r")
        dataset = CacheDataset(images, np.arange(n_images), np.zeros((n_images, NUM_LABELS), np.float32))
        sampler = EpochSampler(n_images, shuffle=True, seed=0, flip_p=0.5)
        loader = DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, persistent_workers=workers > 0
        )
        for _ in loader:  # warm-up epoch: worker start and page cache
            pass
        start = time.perf_counter()
        count = sum(len(batch["image"]) for batch in loader)
        return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=["densenet121", "inception_resnet_v2"])
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 on GPU, 8 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 30 on GPU, 3 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default: 10 on GPU, 1 on CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto", help="auto: bf16 on GPU")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--compile", choices=["none", "default", "reduce-overhead", "max-autotune"], default="none")
    parser.add_argument("--loader-ips", type=float, default=None, help="loader images/s; measured when omitted")
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument("--loader-images", type=int, default=2048)
    args = parser.parse_args()

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    batch_size = args.batch_size or (32 if gpu else 8)
    steps = args.steps or (30 if gpu else 3)
    warmup = args.warmup if args.warmup is not None else (10 if gpu else 1)
    bf16 = args.precision == "bf16" or (args.precision == "auto" and gpu)
    if gpu:
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}")
    print("| arch | input | batch | precision | channels-last | compile | train img/s | loader img/s | loader/train |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arch in args.arch:
        size = get_arch(arch).input_size
        train_ips = train_images_per_second(
            arch, batch_size, steps, warmup, device, bf16, args.channels_last, args.compile
        )
        loader_ips = args.loader_ips or loader_images_per_second(
            size, batch_size, args.loader_workers, args.loader_images
        )
        print(
            f"| {arch} | {size} | {batch_size} | {'bf16' if bf16 else 'fp32'} | {args.channels_last} | "
            f"{args.compile} | {train_ips:,.1f} | {loader_ips:,.0f} | {loader_ips / train_ips:,.1f} |"
        )


if __name__ == "__main__":
    main()
