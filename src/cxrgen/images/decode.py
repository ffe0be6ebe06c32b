"""Decoding of the two high-bit-depth formats hospitals ship: DICOM files and 16-bit grayscale PNGs.

Both end as float32 gray [H, W] in [0, 1] with bright meaning dense (bone white), as
:func:`cxrgen.images.preprocess.decode` returns for every format. DICOM goes through pydicom's own helpers: the pixel
data are decoded by the handler of their transfer syntax (compressed syntaxes need a pixel-data plugin such as pylibjpeg
with its libjpeg and openjpeg plugins), then ``apply_rescale`` (RescaleSlope/Intercept) and ``apply_voi_lut`` (the VOI
LUT, else the window the file states) are applied, then MONOCHROME1 is inverted. Only the final scaling to [0, 1] is
ours: by the window's output range when a window applied, else by the stored bit depth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: File names that are read as DICOM; any other file is read as DICOM only when it carries the ``DICM`` preamble.
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})


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


def scale_high_bit_depth(values: np.ndarray, bits_stored: int | None = None) -> np.ndarray:
    """Unsigned integer pixels -> float32 [0, 1] divided by ``2**bits - 1``.

    ``bits`` is the depth the metadata states, else the highest bit used (at least 8): a 12-bit radiograph in a
    16-bit container is scaled by 4095, not 65535, so it is not darkened, and never clipped at 255.
    """
    top = int(values.max()) if values.size else 0
    bits = bits_stored if bits_stored else max(8, top.bit_length())
    bits = max(bits, top.bit_length())  # a value beyond the stated depth widens it rather than being clipped
    return (values.astype(np.float32) / np.float32(2**bits - 1)).astype(np.float32)


def dicom_size(path: Path | str) -> tuple[int, int] | None:
    """(width, height) from a DICOM header without reading its pixels, or None when the header does not say.

    Lets the pixel-count cap refuse a DICOM bomb before its pixel data are decompressed.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
    except (InvalidDicomError, EOFError, OSError, ValueError):
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
    from pydicom.pixels import apply_rescale, apply_voi_lut

    try:
        dataset = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, OSError, ValueError) as exc:
        raise DecodeError(f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
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
            scaled = scale_high_bit_depth(np.asarray(values), bits)
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
