"""scikit-image's CLAHE (``equalize_adapthist`` with its defaults) reproduced step by step in compiled code.

The paper equalizes with :func:`skimage.exposure.equalize_adapthist` (kernel 1/8 of each side, clip limit 0.01,
256 bins). scikit-image spends most of its time in NumPy temporaries: ``np.apply_along_axis`` over tiles, a
Python loop redistributing clipped counts, and four float64 ``take_along_axis`` passes over the padded image.
OpenCV's CLAHE is fast but is a different algorithm (its own clip rule, 8-bit bins, no 14-bit rescale), so it
cannot be tuned into the same output. No library offers scikit-image's arithmetic fast, hence this module: the
same integer and float steps, in the same order and the same dtypes, as two small numba kernels (the clip's
sequential redistribution and the per-pixel interpolation are loops that vectorize badly; numba compiles them
to plain C-speed loops with no threads of its own, ``cache=True`` so worker processes do not recompile).

Lines of ``skimage/exposure/_adapthist.py`` (scikit-image 0.26.0) followed, with where they land here:

* 75-78: ``img_as_uint`` (float x 65535 in the input's float type, ``rint``, clip) then
  ``rescale_intensity(out_range=(0, 2**14 - 1))`` in float64 and ``np.round``: :func:`_to_14bit`.
* 81: kernel ``max(side // 8, 1)``; 125-136: reflect padding by ``k // 2`` before and
  ``(k - s % k) % k + ceil(k / 2)`` after: :func:`equalize_adapthist`.
* 139-143: bin of a 14-bit value = ``value // (1 + 2**14 // nbins)``: :func:`equalize_adapthist`.
* 147-156, 166: one histogram per ``k``-sized tile starting at ``k // 2`` of the padded image;
  161: clip limit ``int(max(clip_limit * k_y * k_x, 1))``; 236-287 ``clip_histogram`` (clip, uniform
  increment, mid band, then the strided redistribution loop, overshoot included); 290-317 ``map_histogram``
  (float64 cumsum x ``(2**14 - 1) / n``, clip, truncate); 172: edge-padded mappings: :func:`_tile_mappings`.
* 180-212: per pixel, the four neighbouring mappings weighted by float64 ``x`` and ``1 - x`` products, each
  term cast to float32 and summed in float32 in ``np.ndindex`` order; 214: truncation to uint16:
  :func:`_interpolate`.
* 90-91: ``rescale_intensity`` of the float32 result to [0, 1] in float32: :func:`_stretch`.

Measured against scikit-image on every real image in ``../shared/realdata`` and on synthetic JPEGs (see
``benchmarks/clahe_exactness.py`` and the README): the uint8 cache outputs differ by at most 1/255.
"""

from __future__ import annotations

import math

import numba
import numpy as np

#: scikit-image's internal gray levels (``NR_OF_GRAY``) and its defaults.
GRAY_LEVELS = 2**14
CLIP_LIMIT = 0.01
NBINS = 256


def _to_14bit(image: np.ndarray) -> np.ndarray:
    """``img_as_uint`` then ``round(rescale_intensity(out_range=(0, 2**14 - 1)))`` as uint16 (lines 75-78)."""
    if image.ndim != 2:
        raise ValueError(f"CLAHE expects a 2-D gray image, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"CLAHE expects a float image in [0, 1], got dtype {image.dtype}")
    if image.size and (float(image.min()) < -1.0 or float(image.max()) > 1.0):
        raise ValueError("Images of type float must be between -1 and 1.")
    as_uint16 = _as_uint16(np.ascontiguousarray(image), image.dtype.type(65535))
    low, high = int(as_uint16.min()), int(as_uint16.max())
    # The float64 rescale depends on the 16-bit value alone: one table over low..high, then one gather.
    levels = np.arange(65536, dtype=np.float64)
    if low == high:
        table = np.round(np.clip(levels, 0, GRAY_LEVELS - 1))
    else:
        table = np.round((np.clip(levels, low, high) - low) / (high - low) * float(GRAY_LEVELS - 1))
    return table.astype(np.uint16)[as_uint16]


@numba.njit(cache=True, nogil=True)
def _as_uint16(image: np.ndarray, scale: float) -> np.ndarray:
    """``img_as_uint`` of a float image: ``rint(x * 65535)`` in the image's float type (``scale`` carries it)."""
    out = np.empty(image.shape, dtype=np.uint16)
    for y in range(image.shape[0]):
        for x in range(image.shape[1]):
            value = np.rint(image[y, x] * scale)
            out[y, x] = np.uint16(min(max(value, 0), 65535))
    return out


@numba.njit(cache=True, nogil=True)
def _clip_histogram(hist: np.ndarray, clip_limit: int) -> None:
    """scikit-image's ``clip_histogram`` (lines 236-287) in place on one int64 histogram, overshoot included."""
    size = hist.size
    n_excess = 0
    for i in range(size):
        if hist[i] > clip_limit:
            n_excess += hist[i] - clip_limit
            hist[i] = clip_limit
    bin_incr = n_excess // size
    upper = clip_limit - bin_incr
    for i in range(size):
        if hist[i] < upper:
            n_excess -= bin_incr
            hist[i] += bin_incr
    for i in range(size):
        if upper <= hist[i] < clip_limit:
            n_excess += hist[i] - clip_limit
            hist[i] = clip_limit
    while n_excess > 0:
        previous = n_excess
        for index in range(size):
            under = 0
            for i in range(size):
                if hist[i] < clip_limit:
                    under += 1
            step = max(1, under // n_excess)
            # The mask is taken before the increments, as scikit-image's under_mask[index::step].
            added = 0
            for i in range(index, size, step):
                if hist[i] < clip_limit:
                    added += 1
            for i in range(index, size, step):
                if hist[i] < clip_limit:
                    hist[i] += 1
            n_excess -= added
            if n_excess <= 0:
                break
        if previous == n_excess:
            break


@numba.njit(cache=True, nogil=True)
def _tile_mappings(bins: np.ndarray, k_y: int, k_x: int, n_y: int, n_x: int, nbins: int, clip: int) -> np.ndarray:
    """Per tile the clipped, cumulated 14-bit mapping, edge-padded by one tile: int64 [n_y + 2, n_x + 2, nbins]."""
    maps = np.empty((n_y + 2, n_x + 2, nbins), dtype=np.int64)
    scale = (GRAY_LEVELS - 1) / (k_y * k_x)
    hist = np.empty(nbins, dtype=np.int64)
    for ty in range(n_y):
        for tx in range(n_x):
            hist[:] = 0
            y0 = k_y // 2 + ty * k_y
            x0 = k_x // 2 + tx * k_x
            for y in range(y0, y0 + k_y):
                for x in range(x0, x0 + k_x):
                    hist[bins[y, x]] += 1
            if clip < k_y * k_x:
                _clip_histogram(hist, clip)
            total = 0
            for b in range(nbins):
                total += hist[b]
                value = min(total * scale, GRAY_LEVELS - 1.0)
                maps[ty + 1, tx + 1, b] = int(value)
    for ty in range(1, n_y + 1):  # edge padding, first along x ...
        maps[ty, 0] = maps[ty, 1]
        maps[ty, n_x + 1] = maps[ty, n_x]
    for tx in range(n_x + 2):  # ... then along y, corners included
        maps[0, tx] = maps[1, tx]
        maps[n_y + 1, tx] = maps[n_y, tx]
    return maps


@numba.njit(cache=True, nogil=True)
def _interpolate(
    bins: np.ndarray, maps: np.ndarray, k_y: int, k_x: int, pad_y: int, pad_x: int, height: int, width: int
) -> np.ndarray:
    """Bilinear blend of the four neighbouring tile mappings per pixel (lines 180-214): uint16 [height, width]."""
    out = np.empty((height, width), dtype=np.uint16)
    # Per column its tile and float64 weight x / k_x, as scikit-image's np.arange(k) / k.
    tile_x = np.empty(width, dtype=np.int64)
    weight_x = np.empty(width, dtype=np.float64)
    for x in range(width):
        tile_x[x] = (x + pad_x) // k_x
        weight_x[x] = ((x + pad_x) % k_x) / k_x
    for y in range(height):
        py = y + pad_y
        by = py // k_y
        cy = (py % k_y) / k_y
        iy = 1 - cy
        for x in range(width):
            bx = tile_x[x]
            cx = weight_x[x]
            ix = 1 - cx
            b = bins[py, x + pad_x]
            acc = np.float32(maps[by, bx, b] * (ix * iy))
            acc += np.float32(maps[by, bx + 1, b] * (cx * iy))
            acc += np.float32(maps[by + 1, bx, b] * (ix * cy))
            acc += np.float32(maps[by + 1, bx + 1, b] * (cx * cy))
            out[y, x] = np.uint16(acc)
    return out


def _stretch(equalized: np.ndarray) -> np.ndarray:
    """``rescale_intensity`` of the uint16 result cast to float32: min-max to [0, 1] in float32 (lines 90-91).

    As a 14-bit table (the float32 arithmetic depends on the value alone) and one gather.
    """
    low, high = float(equalized.min()), float(equalized.max())
    levels = np.arange(65536, dtype=np.float32)
    table = np.clip(levels, 0.0, 1.0) if low == high else (levels - low) / (high - low)
    return table.astype(np.float32)[equalized]


def tile_geometry(height: int, width: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """scikit-image's default kernel, padding before and padding after, as (y, x) pairs (lines 81, 125-130)."""
    kernel = (max(height // 8, 1), max(width // 8, 1))
    before = (kernel[0] // 2, kernel[1] // 2)
    after = tuple((k - s % k) % k + math.ceil(k / 2) for k, s in zip(kernel, (height, width), strict=True))
    return kernel, before, (after[0], after[1])


def clip_count(kernel: tuple[int, int], clip_limit: float = CLIP_LIMIT) -> int:
    """scikit-image's integer clip limit per tile (line 161)."""
    return int(max(clip_limit * kernel[0] * kernel[1], 1)) if clip_limit > 0 else kernel[0] * kernel[1]


def equalize_adapthist(image: np.ndarray) -> np.ndarray:
    """``skimage.exposure.equalize_adapthist(image)`` with its defaults, for a 2-D float image: float32 [0, 1].

    Raises:
        ValueError: not a 2-D float image, or values outside [-1, 1] (as scikit-image).
    """
    scaled = _to_14bit(image)
    height, width = scaled.shape
    kernel, before, after = tile_geometry(height, width)
    padded = np.pad(scaled, [(before[0], after[0]), (before[1], after[1])], mode="reflect")
    bins = (padded // np.uint16(1 + GRAY_LEVELS // NBINS)).astype(np.uint8)
    n_y, n_x = padded.shape[0] // kernel[0] - 1, padded.shape[1] // kernel[1] - 1
    maps = _tile_mappings(bins, kernel[0], kernel[1], n_y, n_x, NBINS, clip_count(kernel))
    equalized = _interpolate(bins, maps, kernel[0], kernel[1], before[0], before[1], height, width)
    return _stretch(equalized)
