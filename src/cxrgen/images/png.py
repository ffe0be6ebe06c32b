"""The common case of a chest X-ray PNG, 8-bit grayscale, decoded by OpenCV's libpng instead of Pillow.

Decoding is most of what preprocessing a 1024 x 1024 NIH PNG costs once the ``exact`` engine has made CLAHE and
the resize cheap: Pillow took 15.6 ms per image, libpng 8.6 ms, for the same pixels (PNG is lossless; both hand
back the stored bytes). libpng prints its errors and warnings on stderr, so it only gets files it will read
silently: every chunk's CRC checked here first, ending in ``IEND``, and no chunk outside :data:`PLAIN_CHUNKS`
(an ``iCCP`` profile, say, makes libpng warn). Any other file goes to Pillow, which also names what is wrong.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Chunks libpng reads without a word: the image itself and metadata it does not interpret.
PLAIN_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND", b"tIME", b"pHYs", b"tEXt", b"zTXt", b"iTXt"})
_GRAY8 = (8, 0)  # IHDR bit depth and colour type of an 8-bit grayscale PNG


def _plain_gray8(data: bytes) -> tuple[int, int] | None:
    """(width, height) of an intact 8-bit grayscale PNG made of :data:`PLAIN_CHUNKS` only, else None."""
    if not data.startswith(SIGNATURE):
        return None
    position, size = len(SIGNATURE), None
    while position + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        end = position + 12 + length
        if kind not in PLAIN_CHUNKS or end > len(data):
            return None
        body = memoryview(data)[position + 8 : end - 4]
        if zlib.crc32(body, zlib.crc32(kind)) != struct.unpack_from(">I", data, end - 4)[0]:
            return None
        if kind == b"IHDR" and length == 13:
            width, height, depth, colour = struct.unpack_from(">IIBB", body)
            size = (width, height) if (depth, colour) == _GRAY8 else None
        elif kind == b"IEND":
            return size
        position = end
    return None  # no IEND: truncated


def decode_gray8(path: Path) -> np.ndarray | None:
    """An 8-bit grayscale PNG's pixels (uint8 [H, W]), or None for any other file (Pillow's to read)."""
    data = path.read_bytes()
    size = _plain_gray8(data)
    if size is None:
        return None
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.dtype != np.uint8 or pixels.shape != size[::-1]:
        return None
    return pixels
