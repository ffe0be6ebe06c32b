"""The common case of a chest X-ray PNG, 8-bit grayscale, decoded without Pillow.

Decoding is most of what preprocessing a 1024 x 1024 NIH PNG costs once the ``exact`` engine has made CLAHE and
the resize cheap: Pillow took 15.6 ms per image (9.2 ms on a later, quieter day), OpenCV's libpng 7.8-8.6 ms, and
zlib's inflate plus PNG's five row filters undone in a small compiled kernel (:func:`_unfilter`) 5.7 ms, for the
same pixels (PNG is lossless: every decoder hands back the stored bytes). Only files of the plainest form take that
path: every chunk's CRC checked here first, ending in ``IEND``, no chunk outside :data:`PLAIN_CHUNKS` (an ``iCCP``
profile, say, makes libpng warn), not interlaced, one zlib stream that inflates to exactly the filtered rows.
Anything else the kernel does not take goes to libpng as before (libpng prints its errors and warnings on stderr,
so it too gets only such intact files), and any other file to Pillow, which also names what is wrong.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from cxrgen.images.kernels import numba_kernel

SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Chunks libpng reads without a word: the image itself and metadata it does not interpret.
PLAIN_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND", b"tIME", b"pHYs", b"tEXt", b"zTXt", b"iTXt"})
_GRAY8 = (8, 0)  # IHDR bit depth and colour type of an 8-bit grayscale PNG


def _layout(data: bytes) -> tuple[tuple[int, int], bool, list[memoryview]] | None:
    """For an intact 8-bit grayscale PNG made of :data:`PLAIN_CHUNKS` only: (width, height), whether its IHDR
    is the plain form :func:`_inflate` reads (first chunk, compression, filter and interlace methods 0, its
    IDAT chunks consecutive), and those chunks' bodies; else None."""
    if not data.startswith(SIGNATURE):
        return None
    position, size, plain = len(SIGNATURE), None, False
    bodies: list[memoryview] = []
    previous = b""
    while position + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        end = position + 12 + length
        if kind not in PLAIN_CHUNKS or end > len(data):
            return None
        body = memoryview(data)[position + 8 : end - 4]
        if zlib.crc32(body, zlib.crc32(kind)) != struct.unpack_from(">I", data, end - 4)[0]:
            return None
        if kind == b"IHDR" and length == 13:
            width, height, depth, colour, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", body)
            size = (width, height) if (depth, colour) == _GRAY8 else None
            plain = position == len(SIGNATURE) and (compression, filtering, interlace) == (0, 0, 0)
        elif kind == b"IDAT":
            plain = plain and (not bodies or previous == b"IDAT")
            bodies.append(body)
        elif kind == b"IEND":
            return None if size is None else (size, plain and bool(bodies), bodies)
        previous = kind
        position = end
    return None  # no IEND: truncated


def decode_gray8(path: Path, inflate: bool = True) -> np.ndarray | None:
    """An 8-bit grayscale PNG's pixels (uint8 [H, W]), or None for any other file (Pillow's to read).

    ``inflate``: plain files through zlib and :func:`_unfilter`; False: all through libpng. The kernel's first call
    in a process loads numba's runtime (0.24 s of CPU), which a process running only other engines' code would
    not otherwise pay: on 110 NIH PNGs that costs more than the 1.5 ms per image it saves.
    """
    data = path.read_bytes()
    layout = _layout(data)
    if layout is None:
        return None
    size, plain, bodies = layout
    if plain and inflate:
        pixels = _inflate(bodies, size)
        if pixels is not None:
            return pixels
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.dtype != np.uint8 or pixels.shape != size[::-1]:
        return None
    return pixels


def _inflate(bodies: list[memoryview], size: tuple[int, int]) -> np.ndarray | None:
    """The pixels of a plain PNG's IDAT data, or None (libpng's to read) unless they are exactly one complete
    zlib stream of ``height`` filtered rows of ``1 + width`` bytes with known filter types."""
    width, height = size
    expected = height * (width + 1)
    if width == 0 or height == 0:
        return None
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(bodies), expected + 1)  # a longer stream is cut, never inflated whole
    except zlib.error:
        return None
    if len(raw) != expected or not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
        return None
    pixels = np.empty((height, width), dtype=np.uint8)
    return pixels if _unfilter(np.frombuffer(raw, dtype=np.uint8), pixels) else None


@numba_kernel
def _paeth(left: int, up: int, up_left: int) -> int:
    """PNG's Paeth predictor (spec 9.4): of left, up and up-left, the one nearest ``left + up - up_left``."""
    estimate = left + up - up_left
    to_left, to_up, to_up_left = abs(estimate - left), abs(estimate - up), abs(estimate - up_left)
    if to_left <= to_up and to_left <= to_up_left:
        return left
    if to_up <= to_up_left:
        return up
    return up_left


@numba_kernel
def _unfilter(raw: np.ndarray, out: np.ndarray) -> bool:
    """Undo PNG's per-row filters (None, Sub, Up, Average, Paeth; PNG spec 9.2-9.4) for one byte per pixel,
    into ``out``; False at a filter type beyond 4 (a damaged file: libpng's verdict).

    Sub, Average and Paeth chain each pixel to its left neighbour, so a row is a chain of dependent steps; two
    Paeth rows in a row (most of an NIH image) run as two chains in one loop, the second a pixel behind the
    first, which the processor overlaps (2.9 -> 2.2 ms per NIH image).
    """
    height, width = out.shape
    y = 0
    while y < height:
        kind = raw[y * (width + 1)]
        base = y * (width + 1) + 1
        if kind > 4:
            return False
        if kind == 4 and 0 < y < height - 1 and raw[(y + 1) * (width + 1)] == 4:
            below = base + width + 1
            left, up_left, left_below, up_left_below = 0, 0, 0, 0
            for x in range(width):
                up = int(out[y - 1, x])
                left = (int(raw[base + x]) + _paeth(left, up, up_left)) & 255
                out[y, x] = left
                left_below = (int(raw[below + x]) + _paeth(left_below, left, up_left_below)) & 255
                out[y + 1, x] = left_below
                up_left, up_left_below = up, left
            y += 2
            continue
        if kind == 0 or (kind == 2 and y == 0):  # Up on the first row adds the zero row above
            for x in range(width):
                out[y, x] = raw[base + x]
        elif kind == 1:
            left = 0
            for x in range(width):
                left = (int(raw[base + x]) + left) & 255
                out[y, x] = left
        elif kind == 2:
            for x in range(width):
                out[y, x] = (int(raw[base + x]) + int(out[y - 1, x])) & 255
        elif kind == 3:
            left = 0
            for x in range(width):
                up = int(out[y - 1, x]) if y > 0 else 0
                left = (int(raw[base + x]) + ((left + up) >> 1)) & 255
                out[y, x] = left
        else:
            left, up_left = 0, 0
            for x in range(width):
                up = int(out[y - 1, x]) if y > 0 else 0
                left = (int(raw[base + x]) + _paeth(left, up, up_left)) & 255
                out[y, x] = left
                up_left = up
        y += 1
    return True


def compile_ahead() -> None:
    """Compile, or load from numba's disk cache, :func:`_unfilter` (:func:`cxrgen.images.preprocess.compile_ahead`)."""
    _unfilter(np.repeat(np.arange(5, dtype=np.uint8), 4), np.empty((5, 3), dtype=np.uint8))
