"""The ``exact`` engine in torch, batched, for JPEG datasets on a GPU: decode on the device, CLAHE, resize.

Off by default: ``preprocess: {engine: torch, device: cuda}`` sends a cache's JPEGs through :func:`preprocess_paths`
(every other file through the CPU ``exact`` engine); this path is for a machine whose CPUs, not its GPU, bound
``prepare``. JPEGs decode on the device with ``torchvision.io.decode_jpeg(device="cuda")`` (nvJPEG); on CPU the same
code runs with libjpeg-turbo, which is how it is tested. The arithmetic is
:mod:`cxrgen.images.clahe`'s (scikit-image 0.26
``_adapthist.py``) and :func:`cxrgen.images.preprocess.resize_opencv`'s, written as tensor operations over a batch of
same-shape images: 14-bit rescale in float64, reflect padding, per-tile histograms by one ``bincount``,
scikit-image's clip and redistribution vectorized over tiles (its sequential loop runs over the 256 bin offsets, all
tiles at once), float64 cumulated mappings, bilinear blending with float32 accumulation, then the Gaussian
pre-filter, bilinear resize and clip of scikit-image's ``resize(anti_aliasing=True)``. No library does this
(kornia's CLAHE is OpenCV's algorithm, not scikit-image's), hence hand-written. torchvision 0.29 deprecates its
image decoders in favour of TorchCodec (a DeprecationWarning); ``decode_jpeg`` still works and is what is used.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from cxrgen.images import clahe
from cxrgen.images.preprocess import MAX_PIXELS_CEILING, ImageError

#: Images per device batch in the cache builder, and pixels: the CLAHE's float64 and int64 temporaries peaked at
#: about 300 bytes per input pixel (measured on CPU, 1500x1500), so a batch of 2**24 pixels (2.5 full-size
#: radiographs, or 16 CheXpert-small) needs about 5 GB; each cache worker process holds one batch at a time.
BATCH = 16
BATCH_PIXELS = 2**24

# BT.709 luma, as cxrgen.images.preprocess for RGB files whose channels differ.
_LUMA = (0.2125, 0.7154, 0.0721)


def decode_jpegs(paths: Sequence[Path | str], device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """JPEG files -> float32 gray [H, W] tensors in [0, 1] on ``device`` (decoded there: nvJPEG on CUDA).

    RGB JPEGs whose channels agree give that channel; others the BT.709 luma, as
    :func:`cxrgen.images.preprocess.decode`.

    Raises:
        ImageError: a file that cannot be read or decoded, named.
    """
    raws = []
    for path in paths:
        try:
            raws.append(Path(path).read_bytes())
        except OSError as exc:
            raise ImageError(path, f"cannot read file ({exc.strerror})") from exc
    decoded = _decode_or_none(raws, device)
    for path, image in zip(paths, decoded, strict=True):
        if image is None:
            raise ImageError(path, "not a JPEG the torch decoder reads")
    return [_to_gray(image) for image in decoded if image is not None]


def _to_gray(image: torch.Tensor) -> torch.Tensor:
    """uint8 [C, H, W] -> float32 [H, W] in [0, 1]: the channel when all agree, else BT.709 luma."""
    if image.shape[0] == 1 or bool((image[0] == image[1]).all() and (image[1] == image[2]).all()):
        return image[0].float() / 255
    weights = torch.tensor(_LUMA, dtype=torch.float32, device=image.device)
    return ((image.float() / 255).permute(1, 2, 0) @ weights).clamp(0, 1)


def _reflect_index(size: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices of ``np.pad(mode="reflect")`` along one axis (any pad width, as NumPy; torch's pad refuses some)."""
    return torch.from_numpy(np.pad(np.arange(size), (before, after), mode="reflect")).to(device)


def _gray_bins(images: torch.Tensor) -> torch.Tensor:
    """``img_as_uint``, the 14-bit rescale in float64 and the bin, per image of [B, H, W]: int64 bins."""
    if images.min() < -1 or images.max() > 1:
        raise ValueError("Images of type float must be between -1 and 1.")
    as_uint = torch.round(images * 65535.0).clamp(0, 65535).to(torch.float64)
    low = as_uint.amin(dim=(1, 2), keepdim=True)
    high = as_uint.amax(dim=(1, 2), keepdim=True)
    span = high - low
    stretched = (as_uint - low) / torch.where(span > 0, span, 1.0) * float(clahe.GRAY_LEVELS - 1)
    scaled = torch.where(span > 0, stretched, as_uint.clamp(0, clahe.GRAY_LEVELS - 1))
    return torch.round(scaled).to(torch.int64) // (1 + clahe.GRAY_LEVELS // clahe.NBINS)


def clip_histograms(hist: torch.Tensor, clip_limit: int) -> torch.Tensor:
    """scikit-image's ``clip_histogram`` (lines 236-287) on every row of an int64 [T, nbins] tensor at once."""
    hist = hist.clone()
    nbins = hist.shape[1]
    n_excess = (hist - clip_limit).clamp(min=0).sum(dim=1)
    hist = hist.clamp(max=clip_limit)
    bin_incr = n_excess // nbins
    upper = (clip_limit - bin_incr)[:, None]
    low = hist < upper
    n_excess -= low.sum(dim=1) * bin_incr
    hist += low * bin_incr[:, None]
    mid = (hist >= upper) & (hist < clip_limit)
    n_excess += torch.where(mid, hist - clip_limit, 0).sum(dim=1)
    hist = torch.where(mid, clip_limit, hist)
    positions = torch.arange(nbins, device=hist.device)
    active = n_excess > 0
    while bool(active.any()):
        previous = n_excess.clone()
        for index in range(nbins):
            under = hist < clip_limit
            step = (under.sum(dim=1) // n_excess.clamp(min=1)).clamp(min=1)[:, None]
            picked = under & active[:, None] & (positions >= index) & ((positions - index) % step == 0)
            hist += picked
            n_excess -= picked.sum(dim=1)
            active &= n_excess > 0
            if not bool(active.any()):
                break
        active &= n_excess != previous  # a tile with nothing left to fill stops, as scikit-image's break
    return hist


def _tile_mappings(bins: torch.Tensor, kernel: tuple[int, int], tiles: tuple[int, int]) -> torch.Tensor:
    """Clipped, cumulated mappings per tile, edge-padded by one: float64 [B, n_y + 2, n_x + 2, nbins]."""
    (k_y, k_x), (n_y, n_x) = kernel, tiles
    batch = bins.shape[0]
    region = bins[:, k_y // 2 : k_y // 2 + n_y * k_y, k_x // 2 : k_x // 2 + n_x * k_x]
    tile_of_row = torch.arange(n_y * k_y, device=bins.device) // k_y
    tile_of_col = torch.arange(n_x * k_x, device=bins.device) // k_x
    tile = (torch.arange(batch, device=bins.device)[:, None, None] * n_y + tile_of_row[None, :, None]) * n_x
    tile = tile + tile_of_col[None, None, :]
    flat = (tile * clahe.NBINS + region).reshape(-1)
    hist = torch.bincount(flat, minlength=batch * n_y * n_x * clahe.NBINS).reshape(-1, clahe.NBINS)
    hist = clip_histograms(hist, clahe.clip_count(kernel))
    scale = (clahe.GRAY_LEVELS - 1) / (k_y * k_x)
    maps = torch.trunc((torch.cumsum(hist, dim=1).to(torch.float64) * scale).clamp(max=clahe.GRAY_LEVELS - 1))
    maps = maps.reshape(batch, n_y, n_x, clahe.NBINS)
    rows = torch.cat([maps[:, :1], maps, maps[:, -1:]], dim=1)
    return torch.cat([rows[:, :, :1], rows, rows[:, :, -1:]], dim=2)


def equalize_adapthist(images: torch.Tensor) -> torch.Tensor:
    """The exact CLAHE (:func:`cxrgen.images.clahe.equalize_adapthist`) on a float [B, H, W] batch: float32 [0, 1]."""
    if images.ndim != 3 or not images.is_floating_point():
        raise ValueError(f"expected a float [B, H, W] batch, got {tuple(images.shape)} {images.dtype}")
    batch, height, width = images.shape
    device = images.device
    kernel, before, after = clahe.tile_geometry(height, width)
    bins = _gray_bins(images)
    rows = _reflect_index(height, before[0], after[0], device)
    cols = _reflect_index(width, before[1], after[1], device)
    padded = bins[:, rows][:, :, cols]
    tiles = (padded.shape[1] // kernel[0] - 1, padded.shape[2] // kernel[1] - 1)
    maps = _tile_mappings(padded, kernel, tiles).reshape(-1)
    # Per output pixel: tile, float64 weight (offset / k, as np.arange(k) / k) and its bin.
    py = torch.arange(height, device=device) + before[0]
    px = torch.arange(width, device=device) + before[1]
    by, bx = py // kernel[0], px // kernel[1]
    cy = ((py % kernel[0]).to(torch.float64) / kernel[0])[:, None]
    cx = ((px % kernel[1]).to(torch.float64) / kernel[1])[None, :]
    iy, ix = 1 - cy, 1 - cx
    inner = padded[:, before[0] : before[0] + height, before[1] : before[1] + width]
    image_offset = torch.arange(batch, device=device)[:, None, None] * (tiles[0] + 2)
    result = torch.zeros((batch, height, width), dtype=torch.float32, device=device)
    for ey, ex, weight in ((0, 0, ix * iy), (0, 1, cx * iy), (1, 0, ix * cy), (1, 1, cx * cy)):
        tile = ((image_offset + (by + ey)[None, :, None]) * (tiles[1] + 2) + (bx + ex)[None, None, :]) * clahe.NBINS
        result += (maps[tile + inner] * weight).to(torch.float32)
    equalized = torch.trunc(result).to(torch.float32)  # result.astype(uint16), values >= 0
    low = equalized.amin(dim=(1, 2), keepdim=True)
    high = equalized.amax(dim=(1, 2), keepdim=True)
    span = high - low
    return torch.where(span > 0, (equalized - low) / torch.where(span > 0, span, 1.0), equalized.clamp(0, 1))


def _gaussian_taps(sigma: float) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian (truncate 4), float64 taps summing to 1."""
    radius = int(4.0 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 / (sigma * sigma) * x * x)
    return weights / weights.sum()


def _edge_weights(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """Share of each output's linear interpolation inside the image (zero padding when upsampling)."""
    coords = (torch.arange(n_out, dtype=torch.float64, device=device) + 0.5) * (n_in / n_out) - 0.5
    outside = (-coords).clamp(min=0) + (coords - (n_in - 1)).clamp(min=0)
    return (1.0 - outside).clamp(0.0, 1.0).to(torch.float32)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Scikit-image's anti-aliased linear resize (:func:`cxrgen.images.preprocess.resize_opencv`) on [B, H, W]."""
    height, width = images.shape[1:]
    out = images[:, None].to(torch.float64)
    sigma_y, sigma_x = (max(0.0, (n / size - 1.0) / 2.0) for n in (height, width))
    if sigma_y > 0:
        taps = _gaussian_taps(sigma_y).to(images.device)
        out = F.conv2d(out, taps.reshape(1, 1, -1, 1), padding=(taps.numel() // 2, 0))
    if sigma_x > 0:
        taps = _gaussian_taps(sigma_x).to(images.device)
        out = F.conv2d(out, taps.reshape(1, 1, 1, -1), padding=(0, taps.numel() // 2))
    out = F.interpolate(out.to(torch.float32), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    if height < size or width < size:
        out = out * _edge_weights(height, size, images.device)[:, None] * _edge_weights(width, size, images.device)
    # scikit-image clips to the input's range, widened to 0 only when 0 lies outside it but inside the output.
    low = images.amin(dim=(1, 2), keepdim=True)
    high = images.amax(dim=(1, 2), keepdim=True)
    widen = ~((low <= 0) & (high >= 0)) & (out.amin(dim=(1, 2), keepdim=True) <= 0)
    widen &= out.amax(dim=(1, 2), keepdim=True) >= 0
    low = torch.where(widen, low.clamp(max=0), low)
    high = torch.where(widen, high.clamp(min=0), high)
    return torch.minimum(torch.maximum(out, low), high)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> uint8 by round(x * 255), clipped, as :func:`cxrgen.images.preprocess.to_uint8`."""
    return torch.round(images * 255).clamp(0, 255).to(torch.uint8)


def preprocess_batch(images: torch.Tensor, size: int, equalize: bool = True) -> torch.Tensor:
    """CLAHE (optional), resize and quantize a float [B, H, W] batch in [0, 1]: uint8 [B, size, size]."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    return to_uint8(resize(equalize_adapthist(images) if equalize else images.float(), size))


def preprocess_jpegs(
    paths: Sequence[Path | str], size: int, device: torch.device | str = "cuda", batch_size: int = 32
) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`preprocess_paths` for files that must all be JPEGs this path takes; yield (input index, uint8 image).

    Raises:
        ImageError: the first file the torch path would leave to the CPU engine (unreadable, not an 8-bit gray or
            RGB JPEG, or refused by the decoder), named.
    """
    done, refused = preprocess_paths(paths, size, device, batch_size=batch_size)
    if refused:
        raise ImageError(paths[refused[0]], "not a JPEG the torch path decodes (8-bit gray or RGB)")
    yield from sorted(done.items())


def _batchable_pixels(raw: bytes) -> int:
    """Pixels of a JPEG the batched path decodes as :func:`cxrgen.images.preprocess.decode` would (8-bit gray or
    RGB within the pixel limit, read from the header by Pillow), else 0: CMYK, 12-bit or bombs go to the CPU engine."""
    if raw[:3] != b"\xff\xd8\xff":
        return 0
    try:
        with Image.open(io.BytesIO(raw), formats=("JPEG",)) as image:
            pixels = image.width * image.height
            return pixels if image.mode in ("L", "RGB") and pixels <= MAX_PIXELS_CEILING else 0
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return 0


def _batches(pixels: dict[int, int], batch_size: int, budget: int) -> Iterator[list[int]]:
    """Consecutive indices in batches of at most ``batch_size`` images and ``budget`` pixels (at least one)."""
    batch: list[int] = []
    total = 0
    for index, count in pixels.items():
        if batch and (len(batch) == batch_size or total + count > budget):
            yield batch
            batch, total = [], 0
        batch.append(index)
        total += count
    if batch:
        yield batch


def _decode_or_none(raws: list[bytes], device: torch.device | str) -> list[torch.Tensor | None]:
    """Decode a batch on ``device``; when the batch call fails, each file alone, None for those refused."""
    tensors = [torch.frombuffer(bytearray(raw), dtype=torch.uint8) for raw in raws]
    try:
        return list(decode_jpeg(tensors, mode=ImageReadMode.UNCHANGED, device=device))
    except RuntimeError:
        decoded: list[torch.Tensor | None] = []
        for tensor in tensors:
            try:
                decoded.append(decode_jpeg(tensor, mode=ImageReadMode.UNCHANGED, device=device))
            except RuntimeError:
                decoded.append(None)
        return decoded


def preprocess_paths(
    paths: Sequence[Path | str],
    size: int,
    device: torch.device | str,
    clahe: bool = True,
    batch_size: int = BATCH,
    batch_pixels: int = BATCH_PIXELS,
) -> tuple[dict[int, np.ndarray], list[int]]:
    """The ``torch`` engine over the files of a cache chunk: JPEGs decoded and preprocessed in batches on ``device``.

    Returns:
        (input index -> uint8 [size, size] image, the indices left to the CPU ``exact`` engine: files that are not
        a JPEG this path takes, cannot be read, or that the torch decoder refuses). Never raises for a bad file,
        so that the CPU engine reports it with the same reason as every other engine.
    """
    raws: dict[int, bytes] = {}
    pixels: dict[int, int] = {}
    refused = []
    for index, path in enumerate(paths):
        try:
            raw = Path(path).read_bytes()
        except OSError:
            raw = b""
        pixels[index] = _batchable_pixels(raw)
        if pixels[index]:
            raws[index] = raw
        else:
            refused.append(index)
    done: dict[int, np.ndarray] = {}
    for chunk in _batches({i: pixels[i] for i in raws}, batch_size, batch_pixels):
        by_shape: dict[tuple[int, int], list[tuple[int, torch.Tensor]]] = {}
        for index, image in zip(chunk, _decode_or_none([raws[i] for i in chunk], device), strict=True):
            if image is None:
                refused.append(index)
            else:
                gray = _to_gray(image)
                by_shape.setdefault((int(gray.shape[0]), int(gray.shape[1])), []).append((index, gray))
        for members in by_shape.values():
            batch = torch.stack([gray for _, gray in members])
            out = preprocess_batch(batch, size, equalize=clahe).cpu().numpy()
            done.update((index, image) for (index, _), image in zip(members, out, strict=True))
    return done, sorted(refused)
