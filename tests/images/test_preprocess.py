"""Decoding of every kind of file hospitals ship, the two engines, and the exact OpenCV rebuild of the resize."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from skimage.exposure import equalize_adapthist
from skimage.transform import resize

from cxrgen.images import preprocess as images
from cxrgen.images.preprocess import ImageError, decode, preprocess


def _gray(height: int = 48, width: int = 40, seed: int = 0) -> np.ndarray:
    """A smooth 8-bit 'chest' with noise: enough structure for CLAHE to matter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    body = 120 + 80 * np.exp(-(((x - width / 2) / (width / 3)) ** 2 + ((y - height / 2) / (height / 2.5)) ** 2))
    return np.clip(body + rng.normal(0, 12, (height, width)), 0, 255).astype(np.uint8)


def _save(array: np.ndarray, path: Path, mode: str | None = None, **kwargs: Any) -> Path:
    Image.fromarray(array, mode=mode).save(path, **kwargs) if mode else Image.fromarray(array).save(path, **kwargs)
    return path


def test_decode_8bit_gray_is_exact(tmp_path: Path) -> None:
    gray = _gray()
    out = decode(_save(gray, tmp_path / "g.png"))
    assert out.dtype == np.float32 and out.shape == gray.shape
    np.testing.assert_array_equal(out, gray.astype(np.float32) / np.float32(255))


def test_decode_16bit_png_scales_by_65535(tmp_path: Path) -> None:
    values = np.array([[0, 1, 255, 256], [4095, 32768, 65534, 65535]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    out = decode(path)
    np.testing.assert_array_equal(out, values.astype(np.float32) / np.float32(65535))
    assert out.max() == 1.0 and out[1, 0] == np.float32(4095 / 65535)


def test_decode_rgb_with_equal_channels_is_one_channel(tmp_path: Path) -> None:
    gray = _gray()
    out = decode(_save(np.stack([gray] * 3, axis=-1), tmp_path / "rgb.png"))
    np.testing.assert_array_equal(out, gray.astype(np.float32) / np.float32(255))


def test_decode_rgb_with_colour_uses_bt709_luma(tmp_path: Path) -> None:
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 100, 0
    out = decode(_save(rgb, tmp_path / "colour.png"))
    np.testing.assert_allclose(out, (0.2125 * 255 + 0.7154 * 100) / 255, atol=1e-6)


def test_decode_rgba_drops_alpha(tmp_path: Path) -> None:
    # NIH's RGBA files hold R = G = B and alpha 255; alpha is ignored whatever it holds.
    gray = _gray()
    alpha = np.where(np.arange(gray.size).reshape(gray.shape) % 2 == 0, 255, 7).astype(np.uint8)
    out = decode(_save(np.stack([gray, gray, gray, alpha], axis=-1), tmp_path / "rgba.png"))
    np.testing.assert_array_equal(out, gray.astype(np.float32) / np.float32(255))


def test_decode_gray_with_alpha(tmp_path: Path) -> None:
    gray = _gray()
    path = tmp_path / "la.png"
    Image.fromarray(np.stack([gray, np.full_like(gray, 3)], axis=-1), mode="LA").save(path)
    np.testing.assert_array_equal(decode(path), gray.astype(np.float32) / np.float32(255))


def test_decode_palette_expands_entries(tmp_path: Path) -> None:
    indices = (np.arange(48 * 40).reshape(48, 40) % 4).astype(np.uint8)
    levels = [0, 60, 130, 255]
    image = Image.fromarray(indices, mode="P")
    image.putpalette([v for level in levels for v in (level, level, level)])
    path = tmp_path / "p.png"
    image.save(path)
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(decode(path), np.array(levels, dtype=np.float32)[indices] / np.float32(255))


def test_decode_bilevel(tmp_path: Path) -> None:
    bits = np.arange(64).reshape(8, 8) % 3 == 0
    path = tmp_path / "bits.png"
    Image.fromarray(bits).save(path)
    np.testing.assert_array_equal(decode(path), bits.astype(np.float32))


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_decode_jpeg_matches_pillow(tmp_path: Path, mode: str) -> None:
    gray = _gray(96, 80)
    array = gray if mode == "L" else np.stack([gray] * 3, axis=-1)
    path = _save(array, tmp_path / "x.jpg", quality=98)
    expected = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / np.float32(255)
    out = decode(path)
    assert out.shape == gray.shape
    # JPEG may leave the three channels a level apart; then BT.709 luma and Pillow's BT.601 differ slightly.
    np.testing.assert_allclose(out, expected, atol=1.5 / 255)
    assert np.abs(out * 255 - gray).mean() < 3  # and it is the image we wrote


def test_broken_files_raise_image_error_with_reason(tmp_path: Path) -> None:
    good = _save(_gray(200, 200), tmp_path / "good.png")
    truncated_png = tmp_path / "cut.png"
    truncated_png.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    jpeg = _save(_gray(200, 200), tmp_path / "good.jpg", quality=95)
    truncated_jpeg = tmp_path / "cut.jpg"
    truncated_jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    cases = {
        tmp_path / "absent.png": "missing file",
        empty: "empty file",
        text: "not a PNG or JPEG",
        truncated_png: "truncated or corrupt",
        truncated_jpeg: "truncated or corrupt",
    }
    for path, reason in cases.items():
        with pytest.raises(ImageError) as info:
            decode(path)
        assert reason in info.value.reason, (path.name, info.value.reason)
        assert info.value.path == str(path) and str(path) in str(info.value)


def test_other_formats_are_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "scan.tif"
    Image.fromarray(_gray()).save(path)
    with pytest.raises(ImageError, match="not a PNG or JPEG"):
        decode(path)


def test_decompression_bomb_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(_gray(64, 64), tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 4)  # 4x the limit: Pillow raises, not warns
    with pytest.raises(ImageError, match="decompression bomb"):
        decode(path)


@pytest.mark.parametrize(
    ("shape", "size"),
    [((1024, 1024), 224), ((390, 320), 299), ((320, 390), 224), ((448, 448), 224), ((150, 200), 224), ((30, 300), 64)],
)
def test_opencv_resize_equals_skimage(shape: tuple[int, int], size: int) -> None:
    image = np.random.default_rng(1).random(shape, dtype=np.float32)
    expected = resize(image, (size, size), order=1, anti_aliasing=True, mode="constant", cval=0)
    out = images.resize_opencv(image, size)
    assert out.dtype == np.float32 and out.shape == (size, size)
    assert np.abs(out - expected).max() < 1e-5


def test_opencv_resize_keeps_skimage_clip_of_offset_input() -> None:
    image = 0.25 + 0.5 * np.random.default_rng(2).random((300, 260), dtype=np.float32)
    expected = resize(image, (64, 64), order=1, anti_aliasing=True, mode="constant", cval=0)
    assert np.abs(images.resize_opencv(image, 64) - expected).max() < 1e-5


def test_skimage_engine_is_the_two_paper_calls(tmp_path: Path) -> None:
    path = _save(_gray(120, 100), tmp_path / "x.png")
    direct = resize(equalize_adapthist(decode(path)), (64, 64), order=1, anti_aliasing=True, mode="constant", cval=0)
    out = preprocess(path, 64, "skimage", clahe=True)
    assert out.dtype == np.uint8 and out.shape == (64, 64)
    np.testing.assert_array_equal(out, np.round(direct * 255).astype(np.uint8))
    plain = resize(decode(path), (64, 64), order=1, anti_aliasing=True, mode="constant", cval=0)
    np.testing.assert_array_equal(preprocess(path, 64, "skimage", clahe=False), np.round(plain * 255))


def test_opencv_engine_is_close_to_skimage(tmp_path: Path) -> None:
    path = _save(_gray(320, 280), tmp_path / "x.png")
    fast = preprocess(path, 64, "opencv").astype(float)
    paper = preprocess(path, 64, "skimage").astype(float)
    assert np.abs(fast - paper).mean() < 10  # CLAHE differs by design; within a few % of range
    # without CLAHE the two engines differ only by float rounding
    assert np.abs(preprocess(path, 64, "opencv", False).astype(int) - preprocess(path, 64, "skimage", False)).max() <= 1


def test_preprocess_rejects_unknown_engine(tmp_path: Path) -> None:
    path = _save(_gray(), tmp_path / "x.png")
    with pytest.raises(ValueError, match="unknown engine"):
        preprocess(path, 32, "pil")  # type: ignore[arg-type]


def test_to_uint8_rounds() -> None:
    values = np.array([0.0, 0.5 / 255, 1.49 / 255, 1.51 / 255, 1.0, 1.2, -0.1], dtype=np.float32)
    np.testing.assert_array_equal(images.to_uint8(values), [0, 0, 1, 2, 255, 255, 0])
