"""Seeded, patient-level training subsamples of size-matched and learning-curve configurations (issue 25).

A configuration with a :class:`cxrgen.study.config.Subsample` trains on exactly ``n`` images of its training
split, ``n / k`` from each of its ``k`` datasets (the first ``n % k`` datasets, in ``train`` order, take one more).
Within a dataset the images are taken patient by patient in an order fixed by a SHA-256 hash of the namespaced
patient id, the design's seed and the replicate (and, inside a patient, of the image id), never by global random
state: the draw is identical on every machine, a smaller ``n`` is the start of a larger one's draw, and only the
last patient of a dataset may contribute part of its images. Images come only from the ``train`` split (the
validation subsample only from ``val``), so no patient crosses splits. Excluded images (``excluded.csv``) are
never drawn.

``match_prevalence`` takes, in the same order, only images that keep every label's positives and negatives within
the counts the pooled prevalence of the design's sources allows, so each dataset's subsample has the pooled
prevalence per label within one percentage point (or the draw fails, naming the dataset and label).

The validation subsample has ``ceil(n / 8)`` images in equal shares (capped by what the smallest dataset's
validation split holds), about the train:val ratio of the default 0.72 / 0.08 split; it is not prevalence-matched.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrgen.errors import CxrgenError
from cxrgen.study.config import Configuration, StudyConfig, Subsample
from cxrgen.study.layout import StudyDir
from cxrgen.utils.fileio import parquet_metadata, write_parquet

COLUMNS = ["image_id", "dataset", "patient_id", "split"]
#: One validation image per this many training images.
VAL_RATIO = 8
#: The largest allowed distance between a matched subsample's prevalence and the pooled one.
PREVALENCE_TOLERANCE = 0.01


def equal_shares(n: int, datasets: Sequence[str]) -> dict[str, int]:
    """``n`` images split over ``datasets`` as evenly as integers allow; earlier datasets take the remainder."""
    k = len(datasets)
    return {name: n // k + (1 if i < n % k else 0) for i, name in enumerate(datasets)}


def _hash01(values: Sequence[str], salt: str) -> np.ndarray:
    key = salt.encode()
    return (
        np.array(
            [int.from_bytes(hashlib.sha256(key + str(v).encode()).digest()[:8], "big") for v in values],
            dtype=np.float64,
        )
        / 2.0**64
    )


def draw_order(rows: pd.DataFrame, seed: int, replicate: int) -> pd.DataFrame:
    """``rows`` in drawing order: patients by a hash of (seed, replicate, patient id), images by one of the image id.

    The order depends on nothing else (not on ``n``, ``k`` or the other datasets), so it is the same on reruns.
    """
    salt = f"cxrgen-subsample:{seed}:{replicate}:"
    patients = rows["patient_id"].astype(str)
    unique, inverse = np.unique(patients.to_numpy(), return_inverse=True)
    patient_key = _hash01(unique.tolist(), salt)[inverse]
    image_key = _hash01(rows["image_id"].astype(str).tolist(), salt + "image:")
    order = np.lexsort((rows["image_id"].astype(str).to_numpy(), image_key, patients.to_numpy(), patient_key))
    return rows.iloc[order]


def pooled_prevalence(pool: pd.DataFrame, labels: Sequence[str]) -> dict[str, float]:
    """Per label, the share of positives among the recorded (non-NaN) labels of ``pool``; NaN when none."""
    return {label: float(pool[label].mean()) if pool[label].notna().any() else float("nan") for label in labels}


def _matched(
    ordered: pd.DataFrame, count: int, labels: Sequence[str], target: dict[str, float], name: str
) -> np.ndarray:
    """Positions (in ``ordered``) of the first ``count`` images that keep each label at its target prevalence."""
    recorded = [label for label in labels if ordered[label].notna().any() and not math.isnan(target[label])]
    y = ordered[recorded].to_numpy(dtype=np.float64)
    # Positives in [lo, hi] with lo/count and hi/count within the tolerance of the target: at most hi positives and
    # at most count - lo negatives, so a full subsample (no NaN) lands inside; the slack keeps the greedy from
    # needing one rare label combination for its last images.
    slack = PREVALENCE_TOLERANCE * count
    max_pos = [min(count, math.floor(target[label] * count + slack + 1e-9)) for label in recorded]
    max_neg = [count - max(0, math.ceil(target[label] * count - slack - 1e-9)) for label in recorded]
    pos, neg = [0] * len(recorded), [0] * len(recorded)
    taken: list[int] = []
    for i, row in enumerate(y.tolist()):
        fits = True
        for j, value in enumerate(row):
            if (value == 1.0 and pos[j] >= max_pos[j]) or (value == 0.0 and neg[j] >= max_neg[j]):
                fits = False
                break
        if not fits:
            continue
        for j, value in enumerate(row):
            if value == 1.0:
                pos[j] += 1
            elif value == 0.0:
                neg[j] += 1
        taken.append(i)
        if len(taken) == count:
            return np.asarray(taken)
    short = [recorded[j] for j in range(len(recorded)) if pos[j] < max_pos[j]]
    raise CxrgenError(
        f"match_prevalence: dataset {name!r} cannot give {count} training images at the pooled prevalence "
        f"(only {len(taken)} fit; too few positives for {', '.join(short) or 'some label'}); lower n or drop "
        "match_prevalence"
    )


def draw_subsample(
    pool: pd.DataFrame, conf: Configuration, labels: Sequence[str], prevalence: dict[str, float] | None = None
) -> pd.DataFrame:
    """The training and validation subsample of one configuration.

    Args:
        pool: usable rows (``image_id, dataset, patient_id, split`` and the label columns) of the configuration's
            training datasets; only ``split`` train and val are drawn.
        conf: a configuration with a ``subsample``.
        labels: the study's labels (for prevalence matching).
        prevalence: the pooled prevalence per label to match (required with ``match_prevalence``).

    Returns:
        ``image_id, dataset, patient_id, split`` rows, training images first, in drawing order.
    """
    spec = conf.subsample
    if spec is None:
        raise CxrgenError(f"configuration {conf.name!r} has no subsample")
    parts = []
    for split in ("train", "val"):
        rows = {name: pool[(pool["dataset"] == name) & (pool["split"] == split)] for name in conf.train}
        if spec.n is None:
            shares = {name: len(frame) for name, frame in rows.items()}
        elif split == "train":
            shares = equal_shares(spec.n, conf.train)
        else:
            per_dataset = min(len(frame) for frame in rows.values())
            shares = equal_shares(min(math.ceil(spec.n / VAL_RATIO), per_dataset * len(conf.train)), conf.train)
        for name in conf.train:
            count, available = shares[name], rows[name]
            if count > len(available):
                raise CxrgenError(
                    f"configuration {conf.name!r}: dataset {name!r} has {len(available)} usable {split} images, "
                    f"fewer than its share {count} of n = {spec.n}"
                )
            ordered = draw_order(available, spec.seed, spec.replicate)
            if spec.match_prevalence and split == "train" and spec.n is not None:
                if prevalence is None:
                    raise CxrgenError("match_prevalence: the pooled prevalence is needed")
                chosen = ordered.iloc[_matched(ordered, count, labels, prevalence, name)]
            else:
                chosen = ordered.iloc[:count]
            parts.append(chosen.assign(split=split)[COLUMNS])
    return pd.concat(parts, ignore_index=True)


def usable_rows(layout: StudyDir, config: StudyConfig) -> pd.DataFrame:
    """Manifest rows with their split, excluded images (``excluded.csv``, when verify has run) left out."""
    manifest = pd.read_parquet(layout.manifest)
    splits = pd.read_parquet(layout.splits, columns=["image_id", "split"])
    frame = manifest.merge(splits, on="image_id", how="left", validate="one_to_one")
    if layout.excluded.is_file():
        excluded = set(pd.read_csv(layout.excluded, dtype=str, keep_default_na=False)["image_id"])
        frame = frame[~frame["image_id"].isin(excluded)]
    keep = ["image_id", "dataset", "patient_id", "split", *[lb for lb in config.labels if lb in frame.columns]]
    out = frame[keep].copy()
    out["patient_id"] = out["patient_id"].astype(str)
    return out


def subsample_for(config: StudyConfig, conf: Configuration, rows: pd.DataFrame) -> pd.DataFrame:
    """:func:`draw_subsample` over ``rows`` (from :func:`usable_rows`), the pooled prevalence taken over the
    training images of the design's sources (``subsample.pool``)."""
    spec = conf.subsample
    if spec is None:
        raise CxrgenError(f"configuration {conf.name!r} has no subsample")
    prevalence = None
    if spec.match_prevalence:
        pool_rows = rows[rows["dataset"].isin(spec.pool) & (rows["split"] == "train")]
        prevalence = pooled_prevalence(pool_rows, config.labels)
    mine = rows[rows["dataset"].isin(conf.train)]
    return draw_subsample(mine, conf, config.labels, prevalence)


def _digest(sample: pd.DataFrame) -> str:
    text = "\n".join(sample["split"] + "/" + sample["image_id"].astype(str))
    return hashlib.sha256(text.encode()).hexdigest()


def ensure_subsample(
    layout: StudyDir, config: StudyConfig, conf: Configuration, rows: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Draw a configuration's subsample and record it in ``runs/<configuration>/subsample.parquet``.

    The draw is a pure function of the study's rows and the configuration, so a recorded file that differs (the
    data or the design changed) is rewritten, and an identical one is left untouched.
    """
    sample = subsample_for(config, conf, usable_rows(layout, config) if rows is None else rows)
    path = layout.subsample(conf.name)
    digest = _digest(sample)
    if not path.is_file() or parquet_metadata(path).get("subsample_sha256") != digest:
        spec = conf.subsample
        assert spec is not None
        write_parquet(sample, path, metadata={"subsample_sha256": digest, "subsample": spec.model_dump_json()})
    return sample


def planned_steps(config: StudyConfig, spec: Subsample, rows: pd.DataFrame) -> int:
    """The optimizer steps of every fine-tuned run of ``spec``'s design: ``spec.steps``, else
    ``train.max_epochs x ceil(n_max / train.batch_size)`` (``n_max`` None: every training image of the pool)."""
    if spec.steps is not None:
        return spec.steps
    n_max = spec.n_max
    if n_max is None:
        n_max = int(((rows["split"] == "train") & rows["dataset"].isin(spec.pool)).sum())
    return config.train.max_epochs * math.ceil(n_max / config.train.batch_size)


def read_subsample(path: Path) -> pd.DataFrame:
    """A recorded ``subsample.parquet``."""
    if not path.is_file():
        raise CxrgenError(f"{path}: missing; the configuration's subsample has not been drawn")
    return pd.read_parquet(path)
