"""scikit-image's CLAHE (``equalize_adapthist`` with its defaults) reproduced step by step in compiled code.

The paper equalizes with :func:`skimage.exposure.equalize_adapthist` (kernel 1/8 of each side, clip limit 0.01,
256 bins). scikit-image spends most of its time in NumPy temporaries: ``np.apply_along_axis`` over tiles, a
Python loop redistributing clipped counts, and four float64 ``take_along_axis`` passes over the padded image.
OpenCV's CLAHE is fast but is a different algorithm (its own clip rule, 8-bit bins, no 14-bit rescale), so it
cannot be tuned into the same output. No library offers scikit-image's arithmetic fast, hence this module: the
same integer and float steps, in the same order and the same dtypes, in small numba kernels (the clip's
sequential redistribution and the per-pixel interpolation are loops that vectorize badly, and the per-pixel
table look-ups avoid NumPy's temporaries; numba compiles them to plain loops with no threads of its own).

Compilation costs seconds per process (4 s alone on an idle core, 18 s each when two forkserver workers compiled
at once on a loaded 2-core machine), so the kernels are cached on disk (``cache=True``, see
:func:`cxrgen.images.kernels.numba_kernel`) and the cache builder calls :func:`compile_ahead` in the parent before
it starts workers: on a machine whose cache is cold they compile once there, and every worker loads them (0.2-1 s).

Lines of ``skimage/exposure/_adapthist.py`` (scikit-image 0.26.0) followed, with where they land here:

* 75-78: ``img_as_uint`` (float x 65535 in the input's float type, ``rint``, clip) then
  ``rescale_intensity(out_range=(0, 2**14 - 1))`` in float64 and ``np.round``, and 139-143, the bin of a
  14-bit value ``value // (1 + 2**14 // nbins)``: :func:`_gray_bins` (padding and binning commute).
* 81: kernel ``max(side // 8, 1)``; 125-136: reflect padding by ``k // 2`` before and
  ``(k - s % k) % k + ceil(k / 2)`` after: :func:`tile_geometry`; the padded image is never built, its tiles read
  the image through NumPy's reflected indices (:func:`_reflected`, :func:`_equalize`).
* 147-156, 166: one histogram per ``k``-sized tile starting at ``k // 2`` of the padded image;
  161: clip limit ``int(max(clip_limit * k_y * k_x, 1))``; 236-287 ``clip_histogram`` (clip, uniform
  increment, mid band, then the strided redistribution loop, overshoot included); 290-317 ``map_histogram``
  (float64 cumsum x ``(2**14 - 1) / n``, clip, truncate); 172: edge-padded mappings: :func:`_tile_mappings`.
* 180-212: per pixel, the four neighbouring mappings weighted by float64 ``x`` and ``1 - x`` products, each
  term cast to float32 and summed in float32 in ``np.ndindex`` order; 214: truncation to uint16:
  :func:`_interpolate`.
* 90-91: ``rescale_intensity`` of the float32 result to [0, 1] in float32: :func:`_stretch`.

8-bit images (most radiographs) skip the float image: :func:`equalize_gray8` takes the pixels and computes the
bin of each of the 256 levels through the same float32 arithmetic (:func:`_gray8_levels`), bit for bit what
``equalize_adapthist(pixels / np.float32(255))`` gives (``tests/images/test_gray8.py``, on every real PNG too).

Measured against scikit-image on every real image in ``../shared/realdata`` and on synthetic JPEGs (see
``benchmarks/clahe_exactness.py`` and the README): the uint8 cache outputs differ by at most 1/255.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cxrgen.images.kernels import numba_kernel

#: scikit-image's internal gray levels (``NR_OF_GRAY``) and its defaults.
GRAY_LEVELS = 2**14
CLIP_LIMIT = 0.01
NBINS = 256


def _gray_bins(image: np.ndarray) -> np.ndarray:
    """The histogram bin of every pixel: ``img_as_uint``, the 14-bit ``rescale_intensity`` and ``np.round``
    (lines 75-78), then ``value // (1 + 2**14 // nbins)`` (lines 139-143): uint8 [H, W].

    Only the bins are used later, and they depend on the 16-bit value alone, so the float64 arithmetic runs
    once per 16-bit level present (a table over ``low..high``) instead of once per pixel.
    """
    if image.ndim != 2:
        raise ValueError(f"CLAHE expects a 2-D gray image, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"CLAHE expects a float image in [0, 1], got dtype {image.dtype}")
    image = np.ascontiguousarray(image)
    scale = image.dtype.type(65535)
    extremes = np.array([image.min(), image.max()], dtype=image.dtype) if image.size else np.zeros(2, image.dtype)
    if extremes[0] < -1.0 or extremes[1] > 1.0:
        raise ValueError("Images of type float must be between -1 and 1.")
    low, table = _level_table(extremes, scale)
    return _lookup_bins(image, scale, low, table)


def _level_table(extremes: np.ndarray, scale: np.floating[Any]) -> tuple[int, np.ndarray]:
    """The 16-bit level of the darkest pixel and the bin of every 16-bit level from it to the brightest's."""
    # img_as_uint is monotonic, so the 16-bit extremes are those of the float extremes.
    low, high = (int(v) for v in np.clip(np.rint(extremes * scale), 0, 65535))
    levels = np.arange(low, high + 1, dtype=np.float64)
    if low == high:
        scaled = np.round(np.clip(levels, 0, GRAY_LEVELS - 1))
    else:
        scaled = np.round((levels - low) / (high - low) * float(GRAY_LEVELS - 1))
    return low, (scaled.astype(np.uint16) // np.uint16(1 + GRAY_LEVELS // NBINS)).astype(np.uint8)


#: The float32 gray value of every 8-bit level, as decoding divides it (``v / np.float32(255)``).
_GRAY8 = np.arange(256, dtype=np.float32) / np.float32(255)


def _gray8_levels(pixels: np.ndarray) -> np.ndarray:
    """The bin of each of the 256 8-bit levels such that ``_gray8_levels(pixels)[pixels]`` is :func:`_gray_bins`
    of ``pixels / np.float32(255)``: uint8 [256], without that float image.

    A bin depends on the pixel's value alone, so the per-pixel kernel runs on the 256 float32 gray values
    (those the division gives, through the same arithmetic); the CLAHE kernels look each pixel's bin up.
    """
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"expected 2-D uint8 pixels, got {pixels.dtype} {pixels.shape}")
    darkest, brightest = (int(pixels.min()), int(pixels.max())) if pixels.size else (0, 0)
    scale = np.float32(65535)
    low, table = _level_table(_GRAY8[[darkest, brightest]], scale)
    per_level = np.zeros(256, dtype=np.uint8)
    per_level[darkest : brightest + 1] = _lookup_bins(_GRAY8[None, darkest : brightest + 1], scale, low, table)[0]
    return per_level


#: The bins as their own levels: what :func:`_equalize` gets with bins already computed.
_SAME = np.arange(256, dtype=np.uint8)


@numba_kernel
def _lookup_bins(image: np.ndarray, scale: float, low: int, table: np.ndarray) -> np.ndarray:
    """``table[rint(x * 65535) - low]`` per pixel, the product in the image's float type (``scale`` carries it)."""
    out = np.empty(image.shape, dtype=np.uint8)
    for y in range(image.shape[0]):
        for x in range(image.shape[1]):
            value = min(max(np.rint(image[y, x] * scale), 0), 65535)
            out[y, x] = table[int(value) - low]
    return out


@numba_kernel
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
    # scikit-image recounts the bins under the limit at every index; a running count gives the same numbers.
    under = 0
    for i in range(size):
        if hist[i] < clip_limit:
            under += 1
    while n_excess > 0:
        previous = n_excess
        for index in range(size):
            step = max(1, under // n_excess)
            for i in range(index, size, step):  # scikit-image's hist[index::step][under_mask] += 1
                if hist[i] < clip_limit:
                    hist[i] += 1
                    n_excess -= 1
                    if hist[i] == clip_limit:
                        under -= 1
            if n_excess <= 0:
                break
        if previous == n_excess:
            break


@numba_kernel
def _tile_mappings(
    codes: np.ndarray,
    levels: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    k_y: int,
    k_x: int,
    n_y: int,
    n_x: int,
    nbins: int,
    clip: int,
) -> np.ndarray:
    """Per tile the clipped, cumulated 14-bit mapping, edge-padded by one tile: [n_y + 2, nbins, n_x + 2] (a bin's
    values of neighbouring tiles side by side, as :func:`_interpolate` reads them).

    The tiles cover the image from its first pixel on and run past its end by less than a tile into the reflect
    padding; ``rows`` and ``cols`` give the image row and column of every tile row and column (see
    :func:`_reflected`), so the padded image is never built. A pixel's bin is ``levels[codes[y, x]]`` (see
    :func:`_equalize`). A band of tiles is counted row by row, each tile
    into two histograms (even and odd columns) so that a run of equal bins does not wait on its own increments:
    the same counts, 2-3x faster than tile by tile. Integers held as float64 (exact), as scikit-image's int64
    mappings become float64 when weighted.
    """
    width = codes.shape[1]
    maps = np.empty((n_y + 2, nbins, n_x + 2), dtype=np.float64)
    scale = (GRAY_LEVELS - 1) / (k_y * k_x)
    hist = np.empty(nbins, dtype=np.int64)
    counts = np.empty((n_x, 2, nbins), dtype=np.int32)  # a tile of 2**31 pixels would be a 137-gigapixel image
    inside = min(n_x, width // k_x)  # tiles that end within the image: no column look-up
    for ty in range(n_y):
        counts[:] = 0
        for y in range(ty * k_y, (ty + 1) * k_y):
            line = codes[rows[y]]
            for tx in range(inside):
                even, odd = counts[tx, 0], counts[tx, 1]
                x, end = tx * k_x, (tx + 1) * k_x
                while x + 1 < end:
                    even[levels[line[x]]] += 1
                    odd[levels[line[x + 1]]] += 1
                    x += 2
                if x < end:
                    even[levels[line[x]]] += 1
            for tx in range(inside, n_x):
                even = counts[tx, 0]
                for x in range(tx * k_x, (tx + 1) * k_x):
                    even[levels[line[cols[x]]]] += 1
        for tx in range(n_x):
            for b in range(nbins):
                hist[b] = counts[tx, 0, b] + counts[tx, 1, b]
            if clip < k_y * k_x:
                _clip_histogram(hist, clip)
            total = 0
            for b in range(nbins):
                total += hist[b]
                value = min(total * scale, GRAY_LEVELS - 1.0)
                maps[ty + 1, b, tx + 1] = np.trunc(value)  # astype(int): integral, exact in float64
    for ty in range(1, n_y + 1):  # edge padding, first along x ...
        maps[ty, :, 0] = maps[ty, :, 1]
        maps[ty, :, n_x + 1] = maps[ty, :, n_x]
    maps[0] = maps[1]  # ... then along y, corners included
    maps[n_y + 1] = maps[n_y]
    return maps


@numba_kernel
def _interpolate(
    codes: np.ndarray, levels: np.ndarray, maps: np.ndarray, k_y: int, k_x: int, pad_y: int, pad_x: int
) -> tuple[np.ndarray, int, int]:
    """Bilinear blend of the four neighbouring tile mappings per pixel (lines 180-214): uint16 [H, W], with its
    smallest and largest value (what :func:`_stretch` needs, without two more passes)."""
    height, width = codes.shape
    out = np.empty((height, width), dtype=np.uint16)
    lowest, highest = 65535, 0
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
        top, bottom = maps[by], maps[by + 1]
        for x in range(width):
            bx = tile_x[x]
            cx = weight_x[x]
            ix = 1 - cx
            b = levels[codes[y, x]]
            acc = np.float32(top[b, bx] * (ix * iy))
            acc += np.float32(top[b, bx + 1] * (cx * iy))
            acc += np.float32(bottom[b, bx] * (ix * cy))
            acc += np.float32(bottom[b, bx + 1] * (cx * cy))
            value = np.uint16(acc)
            out[y, x] = value
            lowest = min(lowest, int(value))
            highest = max(highest, int(value))
    return out, lowest, highest


def _stretch(equalized: np.ndarray, low: int, high: int) -> tuple[np.ndarray, tuple[float, float]]:
    """``rescale_intensity`` of the uint16 result cast to float32: min-max to [0, 1] in float32 (lines 90-91),
    and the stretched image's smallest and largest value.

    As a table (the float32 arithmetic depends on the value alone) over the levels present, ``low..high`` (the
    result's extremes), and one gather; the table is monotonic, so its ends are the stretched extremes.
    """
    table = np.empty(65536, dtype=np.float32)  # only low..high are ever read
    levels = np.arange(low, high + 1, dtype=np.float32)
    lo, hi = float(low), float(high)
    table[low : high + 1] = np.clip(levels, 0.0, 1.0) if lo == hi else (levels - lo) / (hi - lo)
    return _gather(table, equalized), (float(table[low]), float(table[high]))


@numba_kernel
def _gather(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``table[index]`` for a 2-D index, without NumPy's fancy-indexing overhead."""
    out = np.empty(index.shape, dtype=table.dtype)
    for y in range(index.shape[0]):
        for x in range(index.shape[1]):
            out[y, x] = table[index[y, x]]
    return out


def tile_geometry(height: int, width: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """scikit-image's default kernel, padding before and padding after, as (y, x) pairs (lines 81, 125-130)."""
    kernel = (max(height // 8, 1), max(width // 8, 1))
    before = (kernel[0] // 2, kernel[1] // 2)
    after = tuple((k - s % k) % k + math.ceil(k / 2) for k, s in zip(kernel, (height, width), strict=True))
    return kernel, before, (after[0], after[1])


def clip_count(kernel: tuple[int, int], clip_limit: float = CLIP_LIMIT) -> int:
    """scikit-image's integer clip limit per tile (line 161)."""
    return int(max(clip_limit * kernel[0] * kernel[1], 1)) if clip_limit > 0 else kernel[0] * kernel[1]


def _reflected(length: int, before: int, after: int, count: int) -> np.ndarray:
    """The image index of padded positions ``before .. before + count`` under ``np.pad(mode="reflect")``.

    Taken from ``np.pad`` itself on the indices, so that it is NumPy's reflection (repeated, for tiny images).
    """
    return np.pad(np.arange(length), (before, after), mode="reflect")[before : before + count]


def compile_ahead() -> None:
    """Compile, or load from numba's disk cache, every kernel for what the engines pass (float32 images and
    8-bit pixels). :func:`cxrgen.images.preprocess.compile_ahead` adds the PNG decoder's.
    """
    equalize_adapthist(np.linspace(0.0, 1.0, 64 * 48, dtype=np.float32).reshape(64, 48))
    equalize_gray8(np.arange(64 * 48, dtype=np.uint32).reshape(64, 48).astype(np.uint8))


def equalize_adapthist(image: np.ndarray) -> np.ndarray:
    """``skimage.exposure.equalize_adapthist(image)`` with its defaults, for a 2-D float image: float32 [0, 1].

    Raises:
        ValueError: not a 2-D float image, or values outside [-1, 1] (as scikit-image).
    """
    return _equalize(_gray_bins(image), _SAME)[0]


def equalize_gray8(pixels: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """:func:`equalize_adapthist` of ``pixels / np.float32(255)`` for 2-D uint8 pixels, bit for bit, and the
    result's smallest and largest value (a resize that clips to them need not search them).

    8-bit images are the common case; their bins come from a 256-entry table (:func:`_gray8_levels`) instead of
    a float image and a rounding per pixel, looked up where the kernels read them.

    Raises:
        ValueError: not 2-D uint8 pixels.
    """
    return _equalize(np.ascontiguousarray(pixels), _gray8_levels(pixels))


def _equalize(codes: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """CLAHE from every pixel's bin, ``levels[codes]`` (uint8 [H, W] and [256]): the stretched float32 image and
    its smallest and largest value."""
    height, width = codes.shape
    kernel, before, after = tile_geometry(height, width)
    # scikit-image pads by reflection; its tiles start at before = kernel // 2 of the padded image, i.e. at the
    # image's first pixel, and n tiles cover the image rounded up to whole tiles.
    n_y, n_x = -(-height // kernel[0]), -(-width // kernel[1])
    rows = _reflected(height, before[0], after[0], n_y * kernel[0])
    cols = _reflected(width, before[1], after[1], n_x * kernel[1])
    maps = _tile_mappings(codes, levels, rows, cols, kernel[0], kernel[1], n_y, n_x, NBINS, clip_count(kernel))
    equalized, low, high = _interpolate(codes, levels, maps, kernel[0], kernel[1], before[0], before[1])
    return _stretch(equalized, low, high)
