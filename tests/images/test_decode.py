"""DICOM and 16-bit PNG decoding, checked on pixel values of real files written with pydicom and Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from cxrgen.images.preprocess import ImageError, decode

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid  # noqa: E402


def _phantom(bits: int = 12, shape: tuple[int, int] = (40, 48)) -> np.ndarray:
    """A smooth gradient with a bright blob, using the full range of ``bits``."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    field = 0.2 + 0.6 * x / shape[1] + 0.2 * np.exp(-((x - 24) ** 2 + (y - 20) ** 2) / 60.0)
    return np.round(field / field.max() * (2**bits - 1)).astype(np.uint16)


def _dicom(path: Path, pixels: np.ndarray, *, bits: int = 12, photometric: str = "MONOCHROME2",
           syntax: str = ExplicitVRLittleEndian, **elements: object) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for key, value in elements.items():
        setattr(ds, key, value)
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_monochrome2_dicom_scaled_by_bits_stored(tmp_path: Path) -> None:
    pixels = _phantom(12)
    out = decode(_dicom(tmp_path / "a.dcm", pixels))
    np.testing.assert_allclose(out, pixels / 4095.0, atol=1e-6)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    pixels = _phantom(12)
    normal = decode(_dicom(tmp_path / "m2.dcm", pixels))
    inverted = decode(_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1"))
    np.testing.assert_allclose(inverted, 1.0 - normal, atol=1e-6)
    assert inverted[20, 24] < inverted[0, 0]  # the dense blob is dark in the stored MONOCHROME1 data's terms


def test_window_is_applied(tmp_path: Path) -> None:
    pixels = _phantom(12)
    out = decode(_dicom(tmp_path / "w.dcm", pixels, WindowCenter=2048, WindowWidth=1024))
    # DICOM LINEAR window: below c - 0.5 - (w-1)/2 -> 0, above c - 0.5 + (w-1)/2 -> 1, linear between.
    expected = np.clip(((pixels - (2048 - 0.5)) / (1024 - 1) + 0.5), 0.0, 1.0)
    np.testing.assert_allclose(out, expected, atol=1e-3)
    assert (out == 0).sum() > 0 and (out == 1).sum() > 0


def test_rescale_slope_intercept_applied_before_window(tmp_path: Path) -> None:
    pixels = _phantom(12)
    plain = decode(_dicom(tmp_path / "p.dcm", pixels, WindowCenter=2048, WindowWidth=1024))
    # Stored = (value - 100) / 2; rescale brings it back, so the same window gives the same picture.
    stored = np.round((pixels.astype(float) - 100) / 2).clip(0).astype(np.uint16)
    rescaled = decode(_dicom(tmp_path / "r.dcm", stored, RescaleSlope=2, RescaleIntercept=100,
                             WindowCenter=2048, WindowWidth=1024))
    np.testing.assert_allclose(rescaled, plain, atol=3e-3)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "jpeg2000"])
def test_compressed_dicom_decodes_to_same_pixels(tmp_path: Path, syntax: str) -> None:
    pixels = _phantom(12)
    try:
        path = _dicom(tmp_path / "c.dcm", pixels, syntax=syntax)
    except (RuntimeError, NotImplementedError) as exc:
        pytest.skip(f"no pydicom encoder for {syntax}: {exc}")
    assert str(pydicom.dcmread(path).file_meta.TransferSyntaxUID) == str(syntax)
    np.testing.assert_allclose(decode(path), pixels / 4095.0, atol=1e-6)


def test_dicom_without_pixel_data_is_an_image_error(tmp_path: Path) -> None:
    path = _dicom(tmp_path / "n.dcm", _phantom(12))
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(ImageError, match="no pixel data"):
        decode(path)


def test_undecodable_transfer_syntax_is_named(tmp_path: Path) -> None:
    path = _dicom(tmp_path / "j.dcm", _phantom(12))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no pixel-data handler can decode it
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=False)
    with pytest.raises(ImageError, match="transfer syntax"):
        decode(path)


def _png16(path: Path, pixels: np.ndarray, sbit: int | None) -> Path:
    """A 16-bit grayscale PNG, with an ``sBIT`` chunk stating ``sbit`` significant bits when given."""
    info = PngInfo()
    if sbit is not None:
        info.add(b"sBIT", bytes([sbit]))
    Image.fromarray(pixels.astype(np.uint16)).save(path, pnginfo=info)
    return path


def test_twelve_bit_png_scaled_by_its_sbit_not_darkened(tmp_path: Path) -> None:
    phantom12 = _phantom(12)
    out16 = decode(_png16(tmp_path / "p16.png", phantom12, sbit=12))
    eight = np.round(phantom12 / 4095.0 * 255).astype(np.uint8)
    Image.fromarray(eight).save(tmp_path / "p8.png")
    out8 = decode(tmp_path / "p8.png")
    assert abs(out16.mean() - out8.mean()) / out8.mean() < 0.05
    np.testing.assert_allclose(out16, phantom12 / 4095.0, atol=1e-6)


def test_twelve_bit_png_with_one_hot_pixel_keeps_its_mean(tmp_path: Path) -> None:
    """One 65535 pixel in a 12-bit image must not divide the image by 65535 (it used to: the image's own maximum
    set the scale); the stated depth does, and the hot pixel is clipped to 1."""
    phantom12 = _phantom(12)
    hot = phantom12.copy()
    hot[0, 0] = 65535
    out = decode(_png16(tmp_path / "hot.png", hot, sbit=12))
    expected = phantom12 / 4095.0
    expected[0, 0] = 1.0
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out[1:, :].mean() == pytest.approx((phantom12[1:, :] / 4095.0).mean(), abs=1e-6)


def test_sixteen_bit_png_without_sbit_scaled_by_the_container(tmp_path: Path) -> None:
    """Without a stated depth, 16-bit is the depth: the image's own maximum never sets the scale."""
    phantom12 = _phantom(12)
    np.testing.assert_allclose(decode(_png16(tmp_path / "p.png", phantom12, sbit=None)), phantom12 / 65535.0,
                               atol=1e-7)  # fmt: skip


def test_dicom_bits_stored_sets_the_scale_not_a_hot_pixel(tmp_path: Path) -> None:
    phantom12 = _phantom(12)
    hot = phantom12.copy()
    hot[0, 0] = 65535
    out = decode(_dicom(tmp_path / "hot.dcm", hot, bits=12))
    assert out[1:, :].mean() == pytest.approx((phantom12[1:, :] / 4095.0).mean(), abs=1e-6)


def test_dicom_with_window_width_0_is_an_image_error_naming_why(tmp_path: Path) -> None:
    path = _dicom(tmp_path / "w.dcm", _phantom(12), WindowCenter=2048, WindowWidth=0)
    with pytest.raises(ImageError, match=r"w\.dcm: DICOM WindowWidth 0(\.0)? is not positive"):
        decode(path)


def test_dicom_with_a_text_window_center_is_an_image_error(tmp_path: Path) -> None:
    path = _dicom(tmp_path / "t.dcm", _phantom(12), WindowCenter=2048, WindowWidth=4096)
    raw = path.read_bytes()
    # WindowCenter is DS (a decimal string): overwrite its value with text of the same length.
    at = raw.index(b"2048")
    path.write_bytes(raw[:at] + b"abcd" + raw[at + 4 :])
    with pytest.raises(ImageError, match=r"t\.dcm: .*(cannot be decoded|not a readable DICOM)"):
        decode(path)


def test_corrupt_deflated_dicom_is_an_image_error(tmp_path: Path) -> None:
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    path = tmp_path / "d.dcm"
    ds = pydicom.dcmread(_dicom(tmp_path / "plain.dcm", _phantom(12)))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    raw = bytearray(path.read_bytes())
    start = raw.index(b"1.2.840.10008.1.2.1.99") + 40  # past the file meta, inside the deflated stream
    raw[start : start + 64] = bytes(range(64))
    path.write_bytes(bytes(raw))
    with pytest.raises(ImageError, match=r"d\.dcm: "):
        decode(path)


def test_dicom_preamble_recognized_without_suffix(tmp_path: Path) -> None:
    path = _dicom(tmp_path / "noext", _phantom(12))
    np.testing.assert_allclose(decode(path), _phantom(12) / 4095.0, atol=1e-6)


def test_undecodable_dicoms_go_to_excluded_csv_with_the_reason(tmp_path: Path) -> None:
    import pandas as pd

    from cxrgen.data.verify import verify_manifest

    root = tmp_path / "site"
    root.mkdir()
    _dicom(root / "good.dicom", _phantom(12))
    bad = _dicom(root / "mpeg.dicom", _phantom(12))
    ds = pydicom.dcmread(bad)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
    ds.save_as(bad, enforce_file_format=False)
    empty = _dicom(root / "empty.dicom", _phantom(12))
    ds = pydicom.dcmread(empty)
    del ds.PixelData
    ds.save_as(empty)
    manifest = pd.DataFrame({"dataset": "site", "image_id": ["site:good", "site:mpeg", "site:empty"],
                             "path": ["good.dicom", "mpeg.dicom", "empty.dicom"]})
    excluded = verify_manifest(manifest, {"site": root}, tmp_path, workers=1)
    assert list(excluded["image_id"]) == ["site:mpeg", "site:empty"]
    assert "MPEG2" in excluded["reason"].iloc[0] and "1.2.840.10008.1.2.4.100" in excluded["reason"].iloc[0]
    assert excluded["reason"].iloc[1] == "DICOM file has no pixel data"
    assert pd.read_csv(tmp_path / "excluded.csv")["image_id"].tolist() == ["site:mpeg", "site:empty"]


def test_dicom_declaring_too_many_pixels_is_refused_before_its_pixels_are_read(tmp_path: Path) -> None:
    from cxrgen.data.verify import check_image

    path = _dicom(tmp_path / "bomb.dicom", _phantom(12))
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 12_000, 12_000  # the header lies; 144 M pixels would be decompressed
    ds.save_as(path)
    reason = check_image(str(path), 40_000_000)
    assert reason == "too many pixels: 12000 x 12000 = 144,000,000 declared, the limit is 40,000,000"
    with pytest.raises(ImageError, match="too many pixels: 12000 x 12000"):
        decode(path)
    assert check_image(str(_dicom(tmp_path / "fine.dicom", _phantom(12))), 40_000_000) is None
