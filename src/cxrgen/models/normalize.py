"""The model's input: uint8 batches to ImageNet-normalized float, computed on the device."""

from __future__ import annotations

import functools

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@functools.lru_cache(maxsize=8)
def _imagenet_affine(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(1 / (255 std), mean / std)`` [1, 3, 1, 1] on ``device``, made once per device.

    Cached so a training step copies nothing from the host (and CUDA-graph capture sees fixed tensors).
    """
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    return (1.0 / (255.0 * std)).to(device), (mean / std).to(device)


def normalize_on_device(images: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """uint8 [B, 1, H, W] -> float32 [B, 3, H, W]: x / 255 replicated to 3 channels, ImageNet mean/std.

    Runs wherever ``images`` lives (the GPU in training), so loader workers move 4x fewer bytes. One fused
    multiply-add per output value: ``x * (1 / (255 * std_c)) - mean_c / std_c``.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"expected uint8 [B, 1, H, W], got {images.dtype} {list(images.shape)}")
    batch, _, height, width = images.shape
    scale, shift = _imagenet_affine(images.device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((batch, 3, height, width), dtype=torch.float32, device=images.device, memory_format=fmt)
    torch.mul(images, scale, out=out)
    return out.sub_(shift)
