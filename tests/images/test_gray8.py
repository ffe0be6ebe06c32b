"""8-bit images through the ``exact`` engine from their pixels (issue 30): bit for bit what the float path gives.

:func:`cxrgen.images.preprocess.decode_pixels` keeps 8-bit gray as uint8 and
:func:`cxrgen.images.preprocess.preprocess_pixels` equalizes it from a 256-entry table; the cache must not change
by one bit (``PREPROCESS_VERSION`` stays), so every comparison here is ``np.array_equal``, never a tolerance.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.exposure import equalize_adapthist

from cxrgen.data.verify import degenerate_reason
from cxrgen.images import clahe, fast_resize
from cxrgen.images.preprocess import (
    ENGINES,
    PREPROCESS_VERSION,
    as_float,
    decode,
    decode_pixels,
    preprocess,
    preprocess_array,
    preprocess_pixels,
)


def _edge_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(30)
    noise = rng.integers(0, 256, (64, 48)).astype(np.uint8)
    full = noise.copy()
    full[0, 0], full[-1, -1] = 0, 255
    return {
        "zeros": np.zeros((40, 30), np.uint8),
        "constant 128": np.full((40, 30), 128, np.uint8),
        "constant 255": np.full((33, 31), 255, np.uint8),
        "two levels": np.where(np.kron(np.eye(4), np.ones((10, 10))) > 0, 200, 17).astype(np.uint8),
        "full range": full,
        "ramp": np.arange(256, dtype=np.uint8)[None, :].repeat(20, axis=0),
        "inside 23..231": rng.integers(23, 232, (70, 90)).astype(np.uint8),
        "37 x 1025": rng.integers(5, 250, (37, 1025)).astype(np.uint8),
        "tiny 8 x 8": rng.integers(0, 256, (8, 8)).astype(np.uint8),
        "1 x 9": rng.integers(0, 256, (1, 9)).astype(np.uint8),
        "9 x 1": rng.integers(0, 256, (9, 1)).astype(np.uint8),
        "1 x 1": np.array([[77]], np.uint8),
        "skewed dark": (rng.random((120, 100)) ** 4 * 90 + 3).astype(np.uint8),
    }


@pytest.mark.parametrize("name", list(_edge_cases()))
def test_gray8_clahe_is_bit_equal_to_the_float_path_and_to_skimage(name: str) -> None:
    pixels = _edge_cases()[name]
    gray = as_float(pixels)
    np.testing.assert_array_equal(gray, pixels.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(clahe._gray8_levels(pixels)[pixels], clahe._gray_bins(gray))
    equalized, (low, high) = clahe.equalize_gray8(pixels)
    reference = equalize_adapthist(gray).astype(np.float32)
    assert equalized.dtype == np.float32
    assert np.array_equal(equalized, clahe.equalize_adapthist(gray)), name
    assert np.array_equal(equalized, reference), name
    assert (low, high) == (float(reference.min()), float(reference.max()))


@pytest.mark.parametrize("name", list(_edge_cases()))
def test_gray8_cache_pixels_are_bit_equal_for_every_engine(name: str) -> None:
    pixels = _edge_cases()[name]
    gray = as_float(pixels)
    engines = ENGINES if pixels.size < 5000 else ("exact", "torch", "opencv")  # skimage is slow on big images
    for engine in engines:
        for size in (7, 32):
            for use_clahe in (True, False):
                expected = preprocess_array(gray, size, engine, use_clahe)
                got = preprocess_pixels(pixels, size, engine, use_clahe)
                assert got.dtype == np.uint8
                assert np.array_equal(got, expected), (name, engine, size, use_clahe)
    np.testing.assert_array_equal(preprocess_pixels(gray, 32, "exact"), preprocess_array(gray, 32, "exact"))


def test_resize_with_known_extremes_equals_the_search() -> None:
    rng = np.random.default_rng(3)
    for image in (rng.random((90, 70), dtype=np.float32), np.full((20, 20), 0.25, np.float32)):
        stated = (float(image.min()), float(image.max()))
        np.testing.assert_array_equal(fast_resize.resize(image, 31, stated), fast_resize.resize(image, 31))


def test_decode_pixels_keeps_8_bit_gray_as_uint8_and_decode_divides_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    gray = rng.integers(0, 256, (30, 20)).astype(np.uint8)
    files = {
        "L.png": Image.fromarray(gray),
        "RGB.png": Image.fromarray(np.stack([gray] * 3, axis=-1)),
        "RGBA.png": Image.fromarray(np.stack([gray, gray, gray, np.full_like(gray, 255)], axis=-1)),
        "LA.png": Image.fromarray(np.stack([gray, gray], axis=-1), mode="LA"),
        "L.jpg": Image.fromarray(gray),
        "I16.png": Image.fromarray(gray.astype(np.uint16) * 257),
    }
    for name, image in files.items():
        image.save(tmp_path / name)
        pixels = decode_pixels(tmp_path / name)
        assert pixels.dtype == (np.float32 if name == "I16.png" else np.uint8), name
        np.testing.assert_array_equal(as_float(pixels), decode(tmp_path / name))
        if name.endswith(".png") and name != "I16.png":
            np.testing.assert_array_equal(pixels, gray)


def test_degenerate_reason_words_uint8_pixels_as_their_float_image() -> None:
    for value in (0, 1, 128, 254, 255):
        pixels = np.full((300, 300), value, np.uint8)
        reason = degenerate_reason(pixels)
        assert reason is not None and reason == degenerate_reason(as_float(pixels))
    small = np.zeros((10, 400), np.uint8)
    assert degenerate_reason(small) == degenerate_reason(as_float(small))
    varied = np.arange(90000, dtype=np.uint32).reshape(300, 300).astype(np.uint8)
    assert degenerate_reason(varied) is None


def _real_pngs(realdata: Path) -> list[Path]:
    nih = sorted((realdata / "nih").rglob("*.png"))
    hannover = sorted((realdata / "hannover").rglob("*.png"))
    assert len(nih) >= 110 and len(hannover) >= 243, "the real data are incomplete"
    return nih + hannover


@pytest.mark.realdata
def test_gray8_path_is_bit_equal_on_every_real_png(realdata: Path) -> None:
    gray8 = 0
    for path in _real_pngs(realdata):
        gray = decode(path)
        pixels = decode_pixels(path)
        np.testing.assert_array_equal(as_float(pixels), gray)
        if pixels.dtype == np.uint8:
            gray8 += 1
            equalized, (low, high) = clahe.equalize_gray8(pixels)
            assert np.array_equal(equalized, clahe.equalize_adapthist(gray)), path
            assert (low, high) == (float(equalized.min()), float(equalized.max())), path
        assert np.array_equal(preprocess_pixels(pixels, 224, "exact"), preprocess_array(gray, 224, "exact")), path
    assert gray8 >= 300  # NIH's and Hannover's PNGs are 8-bit gray (three NIH files are RGBA, gray in all three)


#: SHA-256 of the 224 px ``exact`` cache rows of the 110 real NIH PNGs (``images_1024``, sorted by name),
#: as the code before issue 30 made them; a change of these pixels needs a new PREPROCESS_VERSION.
NIH_EXACT_224 = {"3": "065d9f001d378f02f75846d0c63029466378fb8c65e35b6014c59af5f5b0a75e"}


@pytest.mark.realdata
def test_exact_cache_pixels_of_the_real_nih_pngs_are_those_before_issue_30(realdata: Path) -> None:
    paths = sorted((realdata / "nih" / "images_1024").glob("*.png"))
    assert len(paths) == 110
    if PREPROCESS_VERSION not in NIH_EXACT_224:
        pytest.skip(f"no recorded digest for PREPROCESS_VERSION {PREPROCESS_VERSION}")
    digest = hashlib.sha256()
    for path in paths:
        digest.update(preprocess(path, 224, "exact").tobytes())
    assert digest.hexdigest() == NIH_EXACT_224[PREPROCESS_VERSION]
