"""The 8-bit grayscale PNG fast path: Pillow's pixels exactly, and every other file left to Pillow, silently."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

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
