"""Decode, CLAHE and resize chest X-rays: small functions with one job each, composed in :func:`preprocess`.

Four engines produce the cached uint8 images:

* ``exact`` (the default): the published recipe at OpenCV speed: :func:`cxrgen.images.clahe.equalize_adapthist`
  reproduces scikit-image's CLAHE arithmetic in compiled code, then :func:`cxrgen.images.fast_resize.resize` (the
  resize as sparse products over the sampled rows only); its uint8 output
  equals the ``skimage`` engine's within 1/255 (README, exactness table).
* ``skimage``: the reference, the published recipe exactly: :func:`skimage.exposure.equalize_adapthist`
  with its defaults on the full image, then
  ``skimage.transform.resize(order=1, anti_aliasing=True, mode="constant", cval=0)``.
* ``torch``: ``exact`` in torch, batched, for JPEG datasets on a GPU (:mod:`cxrgen.images.gpu`, used by the
  cache builder). One image at a time, and every file that is not a JPEG the batched path takes, it is ``exact``.
* ``opencv``: OpenCV's CLAHE (clip 2.1 on an 8x8 tile grid, with min-max stretches before and after, the closest
  setting measured against scikit-image; it cannot reproduce it exactly) and a resize that reproduces
  scikit-image's to about 1e-7 (:func:`resize_opencv`), 10-30x faster in all.

Every value between steps is float32 gray in [0, 1]; the last step rounds to uint8. The cache decodes with
:func:`decode_pixels`, which keeps 8-bit gray as uint8 pixels for the ``exact`` engine
(:func:`preprocess_pixels`), the same uint8 output as :func:`decode` and :func:`preprocess_array` give.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from cxrgen.errors import CxrgenError
from cxrgen.images import clahe as exact_clahe
from cxrgen.images import fast_resize, png
from cxrgen.images.decode import (
    PER_FILE_FAILURES,
    DecodeError,
    decode_dicom,
    dicom_size,
    is_dicom,
    png_significant_bits,
    scale_high_bit_depth,
)
from cxrgen.images.png import decode_gray8

Engine = Literal["skimage", "opencv", "exact", "torch"]
ENGINES: tuple[Engine, ...] = ("skimage", "opencv", "exact", "torch")
#: The engines whose CPU CLAHE runs numba kernels: they also decode PNGs with one (``decode_pixels``' inflate).
NUMBA_ENGINES: tuple[Engine, ...] = ("exact", "torch")

#: Bumped whenever any function here changes its output; part of every cache fingerprint.
PREPROCESS_VERSION = "3"  # 2: 16-bit PNGs scaled by the highest bit used; DICOM. 3: by sBIT, else the container

#: The formats hospitals ship chest X-rays in (after DICOM export); anything else is refused by name.
FORMATS = ("PNG", "JPEG")

# ITU-R BT.709 luma, as scikit-image's rgb2gray: used only when an RGB image's channels differ.
_LUMA = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)
# The Gaussian of scikit-image's anti-aliasing is scipy.ndimage.gaussian_filter with its default truncate.
_TRUNCATE = 4.0
# OpenCV CLAHE: 2.1 x the mean bin count per tile, 8x8 tiles (measured closest to scikit-image's defaults).
_CV_CLIP = 2.1
_CV_TILES = (8, 8)


class ImageError(CxrgenError, ValueError):
    """An image that cannot be decoded; ``path`` and ``reason`` are kept for ``excluded.csv``."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _to_gray(image: Image.Image, path: Path, bits_stored: int | None = None) -> np.ndarray:
    """Any Pillow mode -> gray [H, W]: 8-bit gray (one channel, or three that agree) as uint8 pixels, the rest
    float32 in [0, 1]; 16-bit by the stated depth (see :func:`decode`), else / 65535."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return scale_high_bit_depth(np.asarray(image, dtype=np.uint16), bits_stored or png_significant_bits(path))
    if mode == "I":
        # Pillow opens some 16-bit grayscale files as 32-bit "I"; values beyond 16 bits have no known scale.
        values = np.asarray(image, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageError(path, f"32-bit integer pixels outside 0..65535 (mode {mode})")
        return scale_high_bit_depth(values, bits_stored or png_significant_bits(path))
    if mode in ("L", "1", "LA"):
        single = image.getchannel(0) if mode == "LA" else image.convert("L") if mode == "1" else image
        return np.asarray(single, dtype=np.uint8)
    if mode in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        # Alpha carries no image content (NIH's RGBA files hold alpha 255 everywhere and R = G = B): dropped.
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return np.ascontiguousarray(rgb[..., 0])
        return np.clip((rgb.astype(np.float32) / np.float32(255)) @ _LUMA, 0.0, 1.0)
    raise ImageError(path, f"unsupported pixel mode {mode!r}")


#: Pixels no radiograph has (12,000 x 12,000 = 144 M is refused): a small file declaring more is a bomb below
#: Pillow's own limit (179 M), costing gigabytes per worker. The study's ``verify.max_pixels`` may be lower.
MAX_PIXELS_CEILING = 100_000_000


def check_pixel_count(size: tuple[int, int], path: Path | str, max_pixels: int) -> None:
    """Refuse an image whose header declares more than ``max_pixels`` pixels, before it is decoded."""
    width, height = size
    if width * height > max_pixels:
        raise ImageError(
            path, f"too many pixels: {width} x {height} = {width * height:,} declared, the limit is {max_pixels:,}"
        )


#: What Pillow may raise for one damaged file (it reports some as SyntaxError).
_PNG_FAILURES: tuple[type[BaseException], ...] = (SyntaxError, *PER_FILE_FAILURES)


def decode(path: Path | str, bits_stored: int | None = None) -> np.ndarray:
    """Read a PNG, JPEG or DICOM file as float32 gray [H, W] in [0, 1]: :func:`decode_pixels`, 8-bit pixels divided
    by 255.

    Raises:
        ImageError: as :func:`decode_pixels`.
    """
    return as_float(decode_pixels(path, bits_stored))


def as_float(gray: np.ndarray) -> np.ndarray:
    """:func:`decode_pixels`' result as :func:`decode` returns it: uint8 pixels / 255 in float32, floats as they are."""
    return gray.astype(np.float32) / np.float32(255) if gray.dtype == np.uint8 else gray


def decode_pixels(path: Path | str, bits_stored: int | None = None, inflate: bool = True) -> np.ndarray:
    """Read a PNG, JPEG or DICOM file as gray [H, W]: uint8 pixels where the data are 8-bit gray, else float32 in
    [0, 1] (:func:`as_float` turns the former into the latter).

    8-bit data stay integers so that the ``exact`` engine can work from 256 levels (:func:`preprocess_pixels`),
    sparing a float image; :func:`as_float` divides them by 255. ``inflate``: see
    :func:`cxrgen.images.png.decode_gray8` (the same pixels either way).

    16-bit data are divided by ``2**bits - 1`` with ``bits`` the depth the dataset states
    (``bits_stored``, from the manifest's ``bits_stored`` column: PadChest's ``BitsStored_DICOM``), else the depth
    the PNG's ``sBIT`` chunk states, else 16 (never the image's own maximum: one hot pixel does not darken the
    rest). DICOM files go to :func:`cxrgen.images.decode.decode_dicom`, which reads the file's own BitsStored.
    RGB is reduced to gray (exactly one channel when all three agree), alpha is dropped, palettes are
    expanded. Pillow reads 16-bit RGB PNGs (rare for radiographs) at 8 bits. Pillow's decompression-bomb limit stays on.

    Raises:
        ImageError: missing, empty, non-image, truncated or corrupt file, or a decompression bomb; the reason
            says which.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(path, "missing file") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({exc.strerror})") from exc
    if size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    try:
        dicom = is_dicom(path)
    except OSError as exc:  # a directory or an unreadable file: excluded with its reason, never the end of a build
        raise ImageError(path, f"cannot read file ({exc.strerror})") from exc
    if dicom:
        dicom_pixels = dicom_size(path)
        if dicom_pixels is not None:
            check_pixel_count(dicom_pixels, path, MAX_PIXELS_CEILING)
        try:
            return decode_dicom(path)
        except DecodeError as exc:
            raise ImageError(path, exc.reason) from exc
    try:
        with Image.open(path, formats=FORMATS) as image:
            check_pixel_count(image.size, path, MAX_PIXELS_CEILING)
            if image.format == "PNG" and image.mode == "L":
                pixels = decode_gray8(path, inflate)  # the same pixels, 2-2.5x as fast; None: Pillow reads it
                if pixels is not None:
                    return pixels
            image.load()
            return _to_gray(image, path, bits_stored)
    except Image.DecompressionBombError as exc:
        raise ImageError(path, f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError:
        raise ImageError(path, f"not a {' or '.join(FORMATS)} image") from None
    except _PNG_FAILURES as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(path, f"truncated or corrupt ({type(exc).__name__}: {exc})") from exc


def clahe_skimage(image: np.ndarray) -> np.ndarray:
    """scikit-image CLAHE with its defaults (the paper's): float32 [H, W] in [0, 1], min-max stretched."""
    from skimage.exposure import equalize_adapthist  # only this engine needs it: 0.2 s of CPU to import

    return np.asarray(equalize_adapthist(image), dtype=np.float32)


def clahe_opencv(image: np.ndarray) -> np.ndarray:
    """OpenCV CLAHE on 8-bit data with scikit-image's min-max stretches around it; float32 [0, 1].

    Like scikit-image, the input is stretched to the full range first and the output stretched to [0, 1].
    8-bit, because OpenCV's 16-bit CLAHE uses 65,536 bins and barely equalizes. Clip 2.1 on 8x8 tiles was the
    closest of clip 1.0-4.0 to scikit-image's defaults on real NIH and Hannover images (mean difference after
    the 224 resize 2.0 uint8 levels; 2.0 gave 2.2, 2.56 gave 3.7, 3.0 gave 6.2); benchmarks/preprocess.py prints it.
    """
    # cv2.normalize(NORM_MINMAX) rounds to nearest and maps a constant image to 0, as a NumPy stretch would.
    stretched = np.empty(image.shape, dtype=np.uint8)
    cv2.normalize(image, stretched, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)
    equalized = cv2.createCLAHE(clipLimit=_CV_CLIP, tileGridSize=_CV_TILES).apply(stretched)
    out = np.empty(image.shape, dtype=np.float32)
    cv2.normalize(equalized, out, 0.0, 1.0, cv2.NORM_MINMAX, dtype=cv2.CV_32F)
    return out


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian (radius = int(truncate * sigma + 0.5)), as float64 taps summing to 1."""
    radius = int(_TRUNCATE * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 / (sigma * sigma) * x * x)
    return weights / weights.sum()


def _edge_weights(n_in: int, n_out: int) -> np.ndarray:
    """Per output index, the share of linear interpolation that falls inside the image.

    scikit-image samples input coordinate (j + 0.5) * n_in / n_out - 0.5 and, with mode="constant", treats
    pixels outside as 0; OpenCV clamps the coordinate to the border pixel instead. Both agree inside; outside
    (only when upsampling) the constant result is OpenCV's scaled by this weight.
    """
    coords = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    outside = np.maximum(0.0, -coords) + np.maximum(0.0, coords - (n_in - 1))
    return np.clip(1.0 - outside, 0.0, 1.0).astype(np.float32)


def resize_skimage(image: np.ndarray, size: int) -> np.ndarray:
    """The paper's resize to [size, size]: linear, Gaussian anti-aliasing, zero padding; float32."""
    from skimage.transform import resize  # only this engine needs it (with scipy.ndimage)

    out = resize(image, (size, size), order=1, anti_aliasing=True, mode="constant", cval=0)
    return np.asarray(out, dtype=np.float32)


def resize_opencv(image: np.ndarray, size: int) -> np.ndarray:
    """scikit-image's ``resize(order=1, anti_aliasing=True, mode="constant", cval=0)`` rebuilt with OpenCV.

    Per axis: a Gaussian of sigma = max(0, (scale - 1) / 2) truncated at 4 sigma with zero padding (scikit-image
    calls ``ndimage.gaussian_filter(mode="constant")``), then OpenCV's bilinear sampling (same half-pixel
    coordinates as ``ndimage.zoom(grid_mode=True)``), then scikit-image's clip to the input range. Agrees with
    :func:`resize_skimage` to about 1e-7 on [0, 1] data, non-square inputs and upsampling included.
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    height, width = image.shape
    sigma_y, sigma_x = (max(0.0, (n / size - 1.0) / 2.0) for n in (height, width))
    filtered = image
    if sigma_x > 0 or sigma_y > 0:
        identity = np.ones(1, dtype=np.float64)
        kernel_x = _gaussian_kernel(sigma_x) if sigma_x > 0 else identity
        kernel_y = _gaussian_kernel(sigma_y) if sigma_y > 0 else identity
        filtered = cv2.sepFilter2D(image, cv2.CV_32F, kernel_x, kernel_y, borderType=cv2.BORDER_CONSTANT)
    out = cv2.resize(filtered, (size, size), interpolation=cv2.INTER_LINEAR)
    if height < size or width < size:
        out *= _edge_weights(height, size)[:, None] * _edge_weights(width, size)[None, :]
    # scikit-image clips to the input's range, widened to 0 only when 0 lies outside it but inside the output.
    low, high = float(image.min()), float(image.max())
    if not low <= 0.0 <= high and float(out.min()) <= 0.0 <= float(out.max()):
        low, high = min(low, 0.0), max(high, 0.0)
    return np.clip(out, low, high, out=out)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 by round(x * 255), values outside clipped."""
    return np.clip(np.round(image * np.float32(255)), 0, 255).astype(np.uint8)


_STEPS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray, int], np.ndarray]]] = {
    "skimage": (clahe_skimage, resize_skimage),
    "opencv": (clahe_opencv, resize_opencv),
    "exact": (exact_clahe.equalize_adapthist, fast_resize.resize),
    "torch": (exact_clahe.equalize_adapthist, fast_resize.resize),  # its per-image form (batches: the cache)
}


def _check_engine(engine: str, size: int | None = None) -> None:
    """Refuse an unknown engine, or a size below 1, before any work."""
    if engine not in _STEPS:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if size is not None and size < 1:
        raise ValueError(f"size must be positive, got {size}")


def preprocess_array(image: np.ndarray, size: int, engine: Engine = "skimage", clahe: bool = True) -> np.ndarray:
    """Optionally CLAHE, then resize and quantize a decoded image (float32 [H, W] in [0, 1]): uint8 [size, size].

    Raises:
        ValueError: unknown engine or a size below 1.
    """
    _check_engine(engine, size)
    clahe_step, resize_step = _STEPS[engine]
    if clahe:
        image = clahe_step(image)
    return to_uint8(resize_step(image, size))


def preprocess_pixels(gray: np.ndarray, size: int, engine: Engine = "skimage", clahe: bool = True) -> np.ndarray:
    """:func:`preprocess_array` of ``as_float(gray)`` for what :func:`decode_pixels` returns, bit for bit.

    With CLAHE, the ``exact`` engine (and ``torch``'s per-image form) equalizes 8-bit pixels as they are
    (:func:`cxrgen.images.clahe.equalize_gray8`) and hands the resize the extremes it knows; every other case
    gets the float image.

    Raises:
        ValueError: unknown engine or a size below 1.
    """
    _check_engine(engine, size)
    if gray.dtype == np.uint8 and clahe and engine in NUMBA_ENGINES:
        equalized, extremes = exact_clahe.equalize_gray8(gray)
        return to_uint8(fast_resize.resize(equalized, size, extremes))
    return preprocess_array(as_float(gray), size, engine, clahe)


def preprocess(
    path: Path | str, size: int, engine: Engine = "skimage", clahe: bool = True, bits_stored: int | None = None
) -> np.ndarray:
    """Decode, optionally CLAHE, resize and quantize one image: uint8 [size, size].

    ``bits_stored``: the bit depth the dataset states for a 16-bit PNG (see :func:`decode`); None: unknown.

    Raises:
        ImageError: the file cannot be decoded.
        ValueError: unknown engine or a size below 1.
    """
    _check_engine(engine)
    gray = decode_pixels(path, bits_stored, inflate=engine in NUMBA_ENGINES and clahe)
    return preprocess_pixels(gray, size, engine, clahe)


def compile_ahead() -> None:
    """Compile, or load from numba's disk cache, the kernels of the ``exact`` engine and of the PNG decoder.

    Called before worker processes start, so that they load the kernels rather than each compile them.
    """
    exact_clahe.compile_ahead()
    png.compile_ahead()
