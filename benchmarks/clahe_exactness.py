"""How far the ``exact`` engine is from the ``skimage`` reference, on every real image and on synthetic JPEGs.

Every PNG in ../shared/realdata (110 NIH 1024 px incl. 3 RGBA, 243 Hannover, 2 NIH 512 px; skipped when absent)
and two synthetic JPEGs of CheXpert shapes (small 320x390, full-size 2320x2828) go through ``preprocess`` with
both engines at 224 px. Printed per group: image count, the largest uint8 difference, the share of output pixels
that differ at all, and the largest difference of the float CLAHE outputs before the resize (0 = bit-equal).
Run: ``.venv/bin/python benchmarks/clahe_exactness.py [--size 224]`` (about 2 minutes on one loaded core).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from cxrgen.images import clahe
from cxrgen.images import preprocess as images
from cxrgen.utils.threads import pin_one_thread

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def _synthetic(folder: Path) -> list[tuple[str, list[Path]]]:
    """Two JPEGs of CheXpert shapes from a chest-like phantom (smooth lungs, noise, a burnt-in label)."""
    groups = []
    for name, (width, height) in {"CheXpert-small 320x390": (320, 390), "full-size 2320x2828": (2320, 2828)}.items():
        rng = np.random.default_rng(width)
        y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
        lungs = np.exp(-(((x - 0.32) / 0.14) ** 2 + ((y - 0.5) / 0.3) ** 2)) + np.exp(
            -(((x - 0.68) / 0.14) ** 2 + ((y - 0.5) / 0.3) ** 2)
        )
        body = 200 - 120 * lungs + rng.normal(0, 6, (height, width))
        body[: height // 12, : width // 6] = 255
        path = folder / f"{width}x{height}.jpg"
        Image.fromarray(np.clip(body, 0, 255).astype(np.uint8)).save(path, quality=90)
        groups.append((f"synthetic JPEG {name}", [path]))
    return groups


def _real() -> list[tuple[str, list[Path]]]:
    if not REALDATA.is_dir():
        print(f"{REALDATA} is absent: real images skipped")
        return []
    return [
        ("NIH 1024 px PNG (3 RGBA)", sorted((REALDATA / "nih" / "images_1024").glob("*.png"))),
        ("Hannover PNG", sorted((REALDATA / "hannover" / "png").rglob("*.png"))),
        ("NIH 512 px PNG", sorted((REALDATA / "nih" / "images_512").glob("*.png"))),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    size = parser.parse_args().size
    pin_one_thread()
    print(f"exact vs skimage engine, uint8 {size}x{size} outputs\n")
    print("| images | count | max uint8 diff | pixels that differ | max CLAHE float diff (before resize) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, paths in _real() + _synthetic(Path(tmp)):
            worst, differing, pixels, clahe_worst = 0, 0, 0, 0.0
            for path in paths:
                decoded = images.decode(path)
                reference_clahe = images.clahe_skimage(decoded)
                exact_clahe = clahe.equalize_adapthist(decoded)
                clahe_worst = max(clahe_worst, float(np.abs(reference_clahe - exact_clahe).max()))
                reference = images.to_uint8(images.resize_skimage(reference_clahe, size)).astype(np.int16)
                exact = images.preprocess_array(decoded, size, "exact").astype(np.int16)
                diff = np.abs(exact - reference)
                worst = max(worst, int(diff.max()))
                differing, pixels = differing + int((diff > 0).sum()), pixels + diff.size
            print(f"| {name} | {len(paths)} | {worst} | {100 * differing / pixels:.4f} % | {clahe_worst:.1e} |")


if __name__ == "__main__":
    main()
