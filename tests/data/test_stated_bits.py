"""Issue 27: the bit depth a dataset's table states (PadChest's ``BitsStored_DICOM``) reaches the 16-bit PNG decoder,
through the manifest's optional ``bits_stored`` column, verify and the cache."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrgen.data import cache
from cxrgen.data.verify import verify_manifest
from cxrgen.sources import get_reader
from cxrgen.sources.common import stated_bits

LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
PADCHEST_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
HEADER = [
    "", "ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
    "Projection", "BitsStored_DICOM", "MethodLabel", "Labels",
]  # fmt: skip
SIDE = 64


def _twelve_bit_phantom(seed: int) -> np.ndarray:
    """A smooth 12-bit image (mean about 2000 of 4095) with one hot pixel at 65535, as a damaged detector gives."""
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    noise = np.random.default_rng(seed).integers(0, 200, (SIDE, SIDE))
    image = (1200 + 18 * x + 8 * y + noise).clip(0, 4095).astype(np.int64)
    image[3, 5] = 65535
    return image


def _padchest(root: Path, bits: list[str]) -> list[np.ndarray]:
    """PadChest's table (BitsStored_DICOM per row) over 16-bit PNGs without an ``sBIT`` chunk."""
    images = []
    rows = []
    for i, stated in enumerate(bits):
        pixels = _twelve_bit_phantom(i)
        (root / "0").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.astype(np.uint16)).save(root / "0" / f"img{i}.png")  # Pillow writes no sBIT
        images.append(pixels)
        rows.append({"": str(i), "ImageID": f"img{i}.png", "ImageDir": "0", "StudyDate_DICOM": "20150412",
                     "StudyID": f"s{i}", "PatientID": f"p{i}", "PatientBirth": "1950.0", "PatientSex_DICOM": "M",
                     "Projection": "PA", "BitsStored_DICOM": stated, "MethodLabel": "Physician",
                     "Labels": "['normal']"})  # fmt: skip
    with open(root / PADCHEST_CSV, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return images


def test_a_12_bit_padchest_png_keeps_its_mean_through_verify_and_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "padchest"
    images = _padchest(root, ["12", "nan"])  # the second row states no depth (the real table writes "nan")
    rows = get_reader("padchest")(root, name="padchest", labels=LABELS)
    assert rows["bits_stored"].tolist()[0] == 12.0 and np.isnan(rows["bits_stored"].iloc[1])

    study = tmp_path / "study"
    study.mkdir()
    assert verify_manifest(rows, {"padchest": root}, study, workers=1).empty
    cache.build_cache(rows, root, study, "padchest", SIDE, "opencv", clahe=False, workers=1)
    cached, index = cache.open_cache(study, "padchest", SIDE, "opencv", False)
    by_id = dict(zip(index["image_id"], index["row"], strict=True))

    stated = cached[by_id["padchest:img0.png"]].astype(float)
    expected = np.clip(images[0] / 4095.0, 0, 1) * 255  # by the depth the table states; the hot pixel clipped
    assert abs(stated.mean() - expected.mean()) < 1.0, (stated.mean(), expected.mean())
    # Without a stated depth (and no sBIT) the container's scale stays: 65535, the image 16 times darker.
    unstated = cached[by_id["padchest:img1.png"]].astype(float)
    assert abs(unstated.mean() - (images[1] / 65535.0 * 255).clip(0, 255).mean()) < 1.0
    assert unstated.mean() < stated.mean() / 8


def test_the_stated_depth_enters_the_cache_fingerprint_only_where_stated(tmp_path: Path) -> None:
    params = cache.parameters("padchest", SIDE, "opencv", False)
    unstated = cache.fingerprint(["a", "b"], ["0/a.png", "0/b.png"], tmp_path, params)
    assert cache.fingerprint(["a", "b"], ["0/a.png", "0/b.png"], tmp_path, params, [None, None]) == unstated
    assert cache.fingerprint(["a", "b"], ["0/a.png", "0/b.png"], tmp_path, params, [12, None]) != unstated


def test_stated_bits_keeps_only_depths_a_16_bit_container_can_hold() -> None:
    cells = pd.Series(["12", "12.0", " 16", "nan", "", "0", "17", "12.5", "twelve", None], dtype=object)
    out = stated_bits(cells)
    assert out.iloc[:3].tolist() == [12.0, 12.0, 16.0] and out.iloc[3:].isna().all()
