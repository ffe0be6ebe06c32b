"""The 8-bit grayscale PNG fast path: Pillow's pixels exactly, and every other file left to Pillow, silently."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from cxrgen.images import png
from cxrgen.images.png import decode_gray8
from cxrgen.images.preprocess import ImageError, decode


def _gray(path: Path, **kwargs: object) -> Path:
    pixels = np.random.default_rng(0).integers(0, 256, (50, 40), dtype=np.uint8)
    Image.fromarray(pixels).save(path, **kwargs)  # type: ignore[arg-type]
    return path


def _with_chunk(source: Path, target: Path, kind: bytes, body: bytes) -> Path:
    """``source`` with one chunk inserted after IHDR."""
    data = source.read_bytes()
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    target.write_bytes(data[:33] + chunk + data[33:])
    return target


def test_same_pixels_as_pillow(tmp_path: Path, realdata: Path) -> None:
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "a radiograph")
    files = [
        _gray(tmp_path / "plain.png"),
        _gray(tmp_path / "text.png", pnginfo=text),
        _gray(tmp_path / "small_idat.png", compress_level=9),
        *sorted((realdata / "nih" / "images_1024").glob("*.png"))[:12],
    ]
    for path in files:
        pixels = decode_gray8(path)
        with Image.open(path) as image:
            if image.mode != "L":
                assert pixels is None, path  # the RGBA NIH files
                continue
            expected = np.asarray(image)
        assert pixels is not None and pixels.dtype == np.uint8, path
        np.testing.assert_array_equal(pixels, expected)
        np.testing.assert_array_equal(decode(path), expected.astype(np.float32) / np.float32(255))


def test_other_files_are_left_to_pillow(tmp_path: Path) -> None:
    plain = _gray(tmp_path / "plain.png")
    data = plain.read_bytes()
    flipped = bytearray(data)
    flipped[60] ^= 1  # inside IDAT: its CRC no longer matches
    (tmp_path / "crc.png").write_bytes(bytes(flipped))
    (tmp_path / "truncated.png").write_bytes(data[:-12])  # no IEND
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint16)).save(tmp_path / "sixteen.png")
    _with_chunk(plain, tmp_path / "iccp.png", b"iCCP", b"profile\0\0" + zlib.compress(b"x"))
    _with_chunk(plain, tmp_path / "trns.png", b"tRNS", b"\0\0")
    (tmp_path / "not.png").write_bytes(b"GIF89a")
    for name in ("crc", "truncated", "rgb", "sixteen", "iccp", "trns", "not"):
        assert decode_gray8(tmp_path / f"{name}.png") is None, name


@pytest.mark.parametrize("cut", [0.3, 0.9])
def test_a_broken_png_keeps_its_reason_and_libpng_stays_quiet(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], cut: float
) -> None:
    data = _gray(tmp_path / "plain.png").read_bytes()
    broken = tmp_path / "broken.png"
    broken.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        decode(broken)
    assert capfd.readouterr().err == ""


def test_damaged_files_get_pillows_verdict(tmp_path: Path, realdata: Path) -> None:
    # random truncations and bit flips of a real NIH PNG: decoded to Pillow's pixels or refused, as Pillow does
    original = sorted((realdata / "nih" / "images_1024").glob("*.png"))[0].read_bytes()
    rng = np.random.default_rng(30)
    damaged = tmp_path / "damaged.png"
    for _ in range(40):
        data = bytearray(original)
        if rng.random() < 0.5:
            data = data[: int(rng.integers(8, len(data)))]
        else:
            data[int(rng.integers(8, len(data)))] ^= 1 << int(rng.integers(8))
        damaged.write_bytes(bytes(data))
        try:
            with Image.open(damaged) as image:
                expected = np.asarray(image.convert("L"), dtype=np.float32) / np.float32(255)
        except (OSError, SyntaxError, ValueError):
            with pytest.raises(ImageError):
                decode(damaged)
        else:
            np.testing.assert_array_equal(decode(damaged), expected)


def _filtered_png(path: Path, pixels: np.ndarray, filters: list[int], interlace: int = 0, tail: bytes = b"") -> Path:
    """An 8-bit gray PNG whose row ``y`` is stored with PNG filter ``filters[y]`` (0-4, or any byte), as an encoder
    choosing them would write it; ``tail`` is appended to the zlib stream."""
    image = pixels.astype(np.int32)
    height, width = image.shape
    rows = []
    for y, kind in enumerate(filters):
        row = image[y]
        up = image[y - 1] if y else np.zeros(width, np.int32)
        left = np.concatenate([[0], row[:-1]])
        up_left = np.concatenate([[0], up[:-1]])
        if kind == 1:
            row = row - left
        elif kind == 2:
            row = row - up
        elif kind == 3:
            row = row - (left + up) // 2
        elif kind == 4:
            estimate = left + up - up_left
            to_left, to_up, to_up_left = abs(estimate - left), abs(estimate - up), abs(estimate - up_left)
            predicted = np.where(
                (to_left <= to_up) & (to_left <= to_up_left), left, np.where(to_up <= to_up_left, up, up_left)
            )
            row = row - predicted
        rows.append(bytes([kind]) + (row % 256).astype(np.uint8).tobytes())

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, interlace)
    stream = zlib.compress(b"".join(rows)) + tail
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream[:7]) + chunk(b"IDAT", stream[7:])
        + chunk(b"IEND", b"")
    )  # fmt: skip
    return path


def test_every_row_filter_is_undone_as_libpng_and_pillow_do(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    for shape in ((40, 33), (7, 1), (1, 9), (1, 1), (64, 64)):
        pixels = rng.integers(0, 256, shape).astype(np.uint8)
        pixels[: shape[0] // 2] //= 7  # smooth and noisy rows, both
        orders = ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 2, 3, 4, 1], [4], [1, 4, 4], list(rng.integers(0, 5, shape[0])))
        for order in orders:  # [4] and [1, 4, 4]: runs of Paeth rows, unfiltered two at a time
            filters = [int(order[y % len(order)]) for y in range(shape[0])]
            path = _filtered_png(tmp_path / "f.png", pixels, filters)
            with Image.open(path) as image:
                np.testing.assert_array_equal(np.asarray(image), pixels)  # the helper writes valid PNGs
            fast = decode_gray8(path)
            assert fast is not None and np.array_equal(fast, pixels), (shape, filters)
            libpng = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(fast, libpng)
            np.testing.assert_array_equal(decode_gray8(path, inflate=False), libpng)  # libpng's path, as before


def test_streams_the_kernel_does_not_take_go_to_libpng(tmp_path: Path) -> None:
    pixels = np.random.default_rng(6).integers(0, 256, (12, 10)).astype(np.uint8)
    cases = {
        "bad filter": _filtered_png(tmp_path / "a.png", pixels, [0] * 11 + [5]),
        "data after the stream": _filtered_png(tmp_path / "b.png", pixels, [1] * 12, tail=b"\0\0"),
        "interlaced flag": _filtered_png(tmp_path / "c.png", pixels, [1] * 12, interlace=1),
    }
    for name, path in cases.items():
        layout = png._layout(path.read_bytes())
        assert layout is not None
        size, plain, bodies = layout
        assert not plain or png._inflate(bodies, size) is None, name
        libpng = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
        expected = libpng if libpng is not None and libpng.shape == pixels.shape else None
        got = decode_gray8(path)
        assert (got is None) == (expected is None), name
        if got is not None:
            np.testing.assert_array_equal(got, expected)
    layout = png._layout(_filtered_png(tmp_path / "d.png", pixels[:11], [1] * 11).read_bytes())
    assert layout is not None and layout[0] == (10, 11) and layout[1]
    assert png._inflate(layout[2], (10, 12)) is None  # a row short of what the header would claim
    assert png._inflate(layout[2], (10, 10)) is None  # a row more


@pytest.mark.realdata
def test_real_pngs_take_the_kernel_and_get_libpngs_pixels(realdata: Path) -> None:
    taken = 0
    for path in sorted((realdata / "nih").rglob("*.png")) + sorted((realdata / "hannover").rglob("*.png")):
        data = path.read_bytes()
        layout = png._layout(data)
        if layout is None:
            continue  # the RGBA NIH files
        size, plain, bodies = layout
        fast = png._inflate(bodies, size) if plain else None
        taken += fast is not None
        libpng = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert fast is not None and np.array_equal(fast, libpng), path
    assert taken >= 350
