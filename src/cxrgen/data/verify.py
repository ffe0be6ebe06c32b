"""The verify stage: decode every image of the manifest once and list the ones that fail in ``excluded.csv``.

Training sets drop excluded images; test sets lose them too, but never silently: :func:`excluded_test_counts`
gives, per test set, how many images it had and how many were excluded, for the caller to print and record.
A pass that decodes the images anyway (the cache build) checks them on the way, into a :class:`Verified`, and
verify decodes only the rest: each image is decoded once per ``prepare``, not once to check and again to cache.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrgen.errors import CxrgenError
from cxrgen.images.decode import dicom_size, is_dicom
from cxrgen.images.preprocess import FORMATS, ImageError, check_pixel_count, decode
from cxrgen.study.config import VerifyConfig
from cxrgen.study.layout import EXCLUDED_FILE
from cxrgen.utils.fileio import write_csv
from cxrgen.utils.threads import worker_pool

log = logging.getLogger(__name__)

EXCLUDED_COLUMNS = ("dataset", "image_id", "path", "reason")
#: Images per task sent to a worker: large enough to amortize the inter-process hop, small enough to balance.
CHUNK = 256


#: Narrower than any radiograph (in pixels): such an image is a placeholder or a thumbnail, not a study.
MIN_SIDE = 32
#: The default of the study's ``verify.max_pixels``: about 6,300 x 6,300, well above 4k x 4k detectors.
DEFAULT_MAX_PIXELS: int = VerifyConfig.model_fields["max_pixels"].default


def file_reason(path: str) -> str | None:
    """What is wrong with the file itself, said as what it is: a directory, a FIFO, a file that cannot be read."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None  # decode names it "missing file"
    except OSError as exc:
        return f"cannot read file ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return "a directory, not an image file"
    if not stat.S_ISREG(mode):
        kind = "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
        return f"not a regular file (a {kind})"
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        return f"unreadable file ({exc.strerror})"
    return None


def degenerate_reason(gray: np.ndarray) -> str | None:
    """An image with no content to learn from: too small, or one gray value (cached white by one engine and
    black by the other, since CLAHE's min-max stretch of a constant is undefined).

    ``gray``: :func:`decode`'s float image, or :func:`cxrgen.images.preprocess.decode_pixels`' uint8 pixels,
    whose value is named as ``decode`` gives it (v / 255 in float32), so both word the reason alike.
    """
    height, width = gray.shape[:2]
    if min(height, width) < MIN_SIDE:
        return f"degenerate image: {width} x {height} pixels, fewer than {MIN_SIDE} on a side"
    if float(gray.max()) == float(gray.min()):
        value = np.float32(gray.min()) / np.float32(255) if gray.dtype == np.uint8 else gray.min()
        return f"degenerate image: every pixel has the value {float(value):.4g}"
    return None


def header_pixels(path: str) -> tuple[int, int] | None:
    """Width and height from the image header alone (Pillow opens lazily; pydicom stops before the pixels), or
    None when the header cannot tell."""
    try:
        if is_dicom(Path(path)):
            return dicom_size(path)
        with Image.open(path, formats=FORMATS) as image:
            return image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None  # decode gives the reason


def precheck(path: str, max_pixels: int) -> str | None:
    """Why one image must be excluded before decoding it: the file itself, or the pixel count its header declares."""
    reason = file_reason(path)
    if reason is not None:
        return reason
    size = header_pixels(path)
    try:
        if size is not None:
            check_pixel_count(size, path, max_pixels)
    except ImageError as exc:
        return exc.reason
    return None


def check_image(path: str, max_pixels: int, bits_stored: int | None = None) -> str | None:
    """Why one image must be excluded, or None when it is usable (``bits_stored``: the depth the dataset states)."""
    reason = precheck(path, max_pixels)
    if reason is not None:
        return reason
    try:
        return degenerate_reason(decode(path, bits_stored))
    except ImageError as exc:
        return exc.reason


def outside_root(path: str, real_root: str) -> bool:
    """Whether ``path`` resolves (through symbolic links) outside its dataset's real root."""
    return not os.path.realpath(path).startswith(real_root + os.sep)


@dataclass
class Verified:
    """Verify's findings on images a pass that decodes them anyway (the cache build) has checked, at the study's
    ``max_pixels``: :func:`verify_manifest` decodes only the images not in ``checked``.

    Attributes:
        max_pixels: the pixel cap the checks used.
        checked: dataset -> the image ids checked.
        reasons: image id -> why it must be excluded (only the excluded ones).
        outside: how many of the checked images resolve outside their dataset root.
    """

    max_pixels: int
    checked: dict[str, set[str]] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    outside: int = 0


#: One image to check: image id, absolute path, its dataset's real root, the bit depth its dataset states (or None).
Item = tuple[str, str, str, int | None]


def _check_chunk(items: Sequence[Item], max_pixels: int) -> tuple[list[tuple[str, str]], int]:
    """:data:`Item` s -> (image_id, reason) for those that must be excluded, and how many of the images resolve
    (through symbolic links) outside their dataset root."""
    failures = []
    outside = 0
    for image_id, path, root, bits in items:
        reason = check_image(path, max_pixels, bits)
        if reason is not None:
            failures.append((image_id, reason))
        outside += outside_root(path, root)
    return failures, outside


def _chunks(items: Sequence[Item], size: int) -> Iterator[Sequence[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def default_workers() -> int:
    """All cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def verify_manifest(
    manifest: pd.DataFrame,
    roots: Mapping[str, Path],
    study_dir: Path,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    verified: Verified | None = None,
) -> pd.DataFrame:
    """Decode every manifest image once, in parallel, and write ``<study_dir>/excluded.csv`` atomically.

    Excluded, each with its reason: files that are missing, empty, not images, truncated or corrupt, directories
    or other non-files, unreadable, declaring more than ``max_pixels`` pixels (checked from the header, before
    decoding), and degenerate images (a side under :data:`MIN_SIDE` pixels, or a single gray value). Images that
    are symbolic links resolving outside their dataset root are followed (datasets on another disk) and counted
    in one warning.

    Args:
        manifest: rows with at least ``dataset, image_id, path`` (path relative to its dataset's root); an optional
            ``bits_stored`` column gives the bit depth by which a 16-bit PNG is scaled (NaN: unknown).
        roots: dataset name -> dataset root folder.
        study_dir: where ``excluded.csv`` goes.
        workers: processes; None = all cores, 1 = in this process.
        progress: called with (images checked, images in all) after each chunk, for a progress bar.
        verified: images already checked at the same ``max_pixels`` (by the cache build), not decoded again.

    Returns:
        The excluded images: ``dataset, image_id, path, reason``, in manifest order (empty when all decode).
    """
    missing = sorted(set(manifest["dataset"].unique()) - set(roots))
    if missing:
        raise CxrgenError(f"verify: no root folder given for dataset(s) {', '.join(missing)}")
    real_roots = {name: os.path.realpath(root) for name, root in roots.items()}
    bits = stated_bits_list(manifest)
    if verified is not None and verified.max_pixels != max_pixels:
        verified = None  # checked at another cap: its verdicts do not hold here
    checked = verified.checked if verified is not None else {}
    items: list[Item] = [
        (image_id, str(Path(roots[dataset]) / path), real_roots[dataset], depth)
        for dataset, image_id, path, depth in zip(
            manifest["dataset"], manifest["image_id"], manifest["path"], bits, strict=True
        )
        if image_id not in checked.get(dataset, ())
    ]
    workers = workers or default_workers()
    total, done = len(manifest), len(manifest) - len(items)
    reasons: dict[str, str] = dict(verified.reasons) if verified is not None else {}
    outside = verified.outside if verified is not None else 0
    chunks = list(_chunks(items, CHUNK))
    check = functools.partial(_check_chunk, max_pixels=max_pixels)
    if progress is not None and done:
        progress(done, total)
    with contextlib.ExitStack() as stack:
        if workers == 1 or len(chunks) <= 1:
            results: Iterator[tuple[list[tuple[str, str]], int]] = map(check, chunks)
        else:
            results = stack.enter_context(worker_pool(workers)).imap(check, chunks)
        for chunk, (failures, linked_out) in zip(chunks, results, strict=True):
            reasons.update(failures)
            outside += linked_out
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    bad = manifest["image_id"].isin(list(reasons))
    excluded = manifest.loc[bad, ["dataset", "image_id", "path"]].reset_index(drop=True)
    excluded["reason"] = excluded["image_id"].map(reasons).astype(str)
    write_csv(excluded, Path(study_dir) / EXCLUDED_FILE)
    if len(excluded):
        log.warning("verify: %d of %d image(s) failed to decode; listed in %s", len(excluded), total, EXCLUDED_FILE)
    if outside:
        log.warning(
            "verify: %d of %d image path(s) are symbolic links to files outside their dataset root; followed",
            outside, total,
        )  # fmt: skip
    return excluded


def stated_bits_list(rows: pd.DataFrame) -> list[int | None]:
    """The manifest's optional ``bits_stored`` column per row as int, None where NaN or where the column is absent
    (a manifest written before it existed)."""
    if "bits_stored" not in rows:
        return [None] * len(rows)
    return [None if pd.isna(value) else int(value) for value in rows["bits_stored"]]


def read_excluded(study_dir: Path) -> pd.DataFrame:
    """``excluded.csv`` of a study; raises when the verify stage has not run."""
    path = Path(study_dir) / EXCLUDED_FILE
    if not path.is_file():
        raise CxrgenError(f"{path}: missing; run `cxrgen prepare --until verify` first")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in EXCLUDED_COLUMNS if c not in frame.columns]
    if missing:
        raise CxrgenError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def excluded_test_counts(excluded: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, its test split's image count and how many of them were excluded.

    Args:
        excluded: ``excluded.csv`` rows (``image_id`` is enough).
        splits: ``splits.parquet`` rows (``image_id, dataset, split``).

    Returns:
        ``dataset, images, excluded, kept``, one row per dataset that has a test split.
    """
    test = splits.loc[splits["split"] == "test", ["image_id", "dataset"]]
    lost = test["image_id"].isin(set(excluded["image_id"]))
    counts = (
        test.assign(excluded=lost.astype(int))
        .groupby("dataset", sort=True)
        .agg(images=("image_id", "size"), excluded=("excluded", "sum"))
        .reset_index()
    )
    counts["kept"] = counts["images"] - counts["excluded"]
    return counts
