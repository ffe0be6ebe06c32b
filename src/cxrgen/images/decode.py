"""Decoding of the two high-bit-depth formats hospitals ship: DICOM files and 16-bit grayscale PNGs.

Both end as float32 gray [H, W] in [0, 1] with bright meaning dense (bone white), as
:func:`cxrgen.images.preprocess.decode` returns for every format. DICOM goes through pydicom's own helpers: the pixel
data are decoded by the handler of their transfer syntax (compressed syntaxes need a pixel-data plugin such as pylibjpeg
with its libjpeg and openjpeg plugins), then ``apply_rescale`` (RescaleSlope/Intercept) and ``apply_voi_lut`` (the VOI
LUT, else the window the file states) are applied, then MONOCHROME1 is inverted. Only the final scaling to [0, 1] is
ours: by the window's output range when a window applied, else by the stored bit depth.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

#: File names that are read as DICOM; any other file is read as DICOM only when it carries the ``DICM`` preamble.
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})


#: What reading or decoding one file may raise, from the file's content alone; each excludes that file.
PER_FILE_FAILURES: tuple[type[BaseException], ...] = (
    ArithmeticError, AttributeError, EOFError, IndexError, KeyError, NotImplementedError, OSError, RuntimeError,
    TypeError, ValueError, struct.error, zlib.error,
)  # fmt: skip


class DecodeError(ValueError):
    """A file that cannot be decoded; ``reason`` is what ``excluded.csv`` records."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_dicom(path: Path) -> bool:
    """A ``.dcm``/``.dicom`` name or the 128-byte preamble followed by ``DICM`` (DICOM part 10)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with path.open("rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def scale_high_bit_depth(values: np.ndarray, bits_stored: int | None = None, container_bits: int = 16) -> np.ndarray:
    """Unsigned integer pixels -> float32 [0, 1] divided by ``2**bits - 1``.

    ``bits`` is the depth the file or dataset states (a PNG's ``sBIT`` chunk, DICOM's BitsStored), else the
    container's depth (16 for a 16-bit PNG): never the image's own maximum, so one hot pixel does not rescale the
    whole image (a 12-bit radiograph with one 65535 pixel keeps its mean). A value beyond the stated depth is a
    recording error and is clipped to 1.
    """
    bits = bits_stored if bits_stored and 0 < bits_stored <= container_bits else container_bits
    scaled = values.astype(np.float32) / np.float32(2**bits - 1)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def png_significant_bits(path: Path) -> int | None:
    """The bit depth a PNG's ``sBIT`` chunk states for its gray (or first colour) channel, or None without one.

    Pillow does not expose ``sBIT``; the chunk comes before ``IDAT``, so only the header chunks are read.
    """
    with path.open("rb") as handle:
        if handle.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        while True:
            head = handle.read(8)
            if len(head) < 8:
                return None
            length, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind in (b"IDAT", b"IEND") or length > 1 << 20:
                return None
            data = handle.read(length)
            handle.seek(4, 1)  # CRC
            if kind == b"sBIT" and data:
                return int(data[0]) or None


def dicom_size(path: Path | str) -> tuple[int, int] | None:
    """(width, height) from a DICOM header without reading its pixels, or None when the header does not say.

    Lets the pixel-count cap refuse a DICOM bomb before its pixel data are decompressed.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    failures: tuple[type[BaseException], ...] = (InvalidDicomError, *PER_FILE_FAILURES)
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
    except failures:
        return None  # decode_dicom gives the reason
    rows, columns = header.get("Rows"), header.get("Columns")
    return (int(columns), int(rows)) if rows and columns else None


def decode_dicom(path: Path) -> np.ndarray:
    """One DICOM image as float32 gray [H, W] in [0, 1], bright = dense.

    Raises:
        DecodeError: not DICOM, no pixel data, an undecodable transfer syntax (named), or not a single gray frame.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    failures: tuple[type[BaseException], ...] = (InvalidDicomError, *PER_FILE_FAILURES)
    try:
        dataset = pydicom.dcmread(path)
    except failures as exc:
        raise DecodeError(f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    try:
        return _dicom_pixels(dataset)
    except DecodeError:
        raise
    except PER_FILE_FAILURES as exc:
        # pydicom's own message names neither the file nor the step: a window of width 0, a text WindowCenter, a
        # corrupt deflated dataset. One such file is excluded with the reason, never the end of the study.
        raise DecodeError(f"DICOM cannot be decoded ({type(exc).__name__}: {exc})") from exc


def _dicom_pixels(dataset: Any) -> np.ndarray:
    """The pixels of a read DICOM dataset as float32 [H, W] in [0, 1] (see :func:`decode_dicom`)."""
    from pydicom.multival import MultiValue
    from pydicom.pixels import apply_rescale, apply_voi_lut

    if "PixelData" not in dataset:
        raise DecodeError("DICOM file has no pixel data")
    syntax = dataset.file_meta.get("TransferSyntaxUID", "unknown")
    syntax_name = getattr(syntax, "name", str(syntax))
    try:
        raw = dataset.pixel_array
    except (NotImplementedError, RuntimeError, ValueError, AttributeError, KeyError) as exc:
        raise DecodeError(
            f"DICOM pixel data in transfer syntax {syntax_name} ({syntax}) cannot be decoded: {exc}"
        ) from exc
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if raw.ndim != 2 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DecodeError(f"DICOM is not a single grayscale frame (shape {raw.shape}, {photometric})")
    has_voi = "VOILUTSequence" in dataset or "WindowCenter" in dataset
    if "WindowWidth" in dataset and "VOILUTSequence" not in dataset:
        widths = dataset.WindowWidth
        first = widths[0] if isinstance(widths, MultiValue) else widths
        if float(first) <= 0:  # a text value raises ValueError here, caught by decode_dicom
            raise DecodeError(f"DICOM WindowWidth {first} is not positive; the window cannot be applied")
    values = apply_rescale(raw, dataset)
    if has_voi:
        values = apply_voi_lut(values, dataset)
        low, high = _voi_range(dataset, values)
    else:
        bits = int(dataset.get("BitsStored", 0)) or None
        signed = int(dataset.get("PixelRepresentation", 0)) == 1
        if signed or not np.issubdtype(np.asarray(values).dtype, np.integer) or "RescaleSlope" in dataset:
            low, high = float(np.min(values)), float(np.max(values))
        else:
            pixels = np.asarray(values)
            scaled = scale_high_bit_depth(pixels, bits, container_bits=pixels.dtype.itemsize * 8)
            return (1.0 - scaled).astype(np.float32) if photometric == "MONOCHROME1" else scaled
    out = (np.asarray(values, dtype=np.float64) - low) / max(high - low, 1e-12)
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    return (1.0 - out).astype(np.float32) if photometric == "MONOCHROME1" else out


def _voi_range(dataset: object, values: np.ndarray) -> tuple[float, float]:
    """The output range of the VOI transform the file states, as pydicom computes it.

    The VOI LUT and every window function clamp, so applying the same transform to the two extreme inputs
    gives its output range (a window's ``y_min``/``y_max`` after rescale, or a LUT's first and last entries).
    """
    from pydicom.pixels import apply_voi_lut

    extremes = apply_voi_lut(np.array([-(2**31), 2**31 - 1], dtype=np.int64), dataset)  # type: ignore[arg-type]
    low, high = float(np.min(extremes)), float(np.max(extremes))
    if high <= low:
        low, high = float(np.min(values)), float(np.max(values))
    return low, high
