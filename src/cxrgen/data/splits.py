"""Patient-level splits: random (hash-seeded), official, and the leakage check.

A random split gives each patient a bucket in [0, 1) from a SHA-256 hash of its namespaced id and the seed,
never from global random state: the split is the same on every machine and library version, and adding
patients to a dataset does not move the patients already there.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from cxrgen.errors import CxrgenError
from cxrgen.study.config import SplitConfig, StudyConfig

SPLITS = ("train", "val", "test")


class LeakageError(CxrgenError, ValueError):
    """A patient sits in two splits."""


def patient_buckets(patient_ids: pd.Series | np.ndarray, seed: int) -> np.ndarray:
    """A number in [0, 1) per patient id, fixed by the id and the seed alone."""
    unique, inverse = np.unique(np.asarray(patient_ids, dtype=str), return_inverse=True)
    salt = f"cxrgen-split:{seed}:".encode()
    values = np.array(
        [int.from_bytes(hashlib.sha256(salt + pid.encode()).digest()[:8], "big") for pid in unique],
        dtype=np.float64,
    )
    return (values / 2.0**64)[inverse]


def assign(buckets: np.ndarray, fractions: dict[str, float]) -> np.ndarray:
    """Split names by cumulative fractions, in the order train, val, test."""
    edges = np.cumsum([fractions.get(name, 0.0) for name in SPLITS])
    edges[-1] = 1.0  # float sums may fall short of 1: the last bucket takes the rest
    return np.asarray(SPLITS, dtype=object)[np.searchsorted(edges, buckets, side="right")]


def random_split(frame: pd.DataFrame, spec: SplitConfig) -> np.ndarray:
    return assign(patient_buckets(frame["patient_id"], spec.seed), dict(spec.fractions))


def official_split(frame: pd.DataFrame, spec: SplitConfig, dataset: str) -> np.ndarray:
    """The dataset's own split; a ``train_val`` part (NIH) gives ``val_fraction`` of its patients to val."""
    official = frame["official_split"].fillna("").astype(str).to_numpy()
    unknown = ~np.isin(official, ["train", "val", "test", "train_val"])
    if unknown.any():
        raise ValueError(
            f"dataset {dataset!r}: {int(unknown.sum())} image(s) have no official split "
            f"(e.g. {frame['image_id'].iloc[int(np.flatnonzero(unknown)[0])]}); is the official list complete?"
        )
    out = official.astype(object)
    carve = official == "train_val"
    if carve.any():
        buckets = patient_buckets(frame.loc[carve, "patient_id"], spec.seed)
        out[carve] = np.where(buckets < spec.val_fraction, "val", "train")
    return out


def check_leakage(splits: pd.DataFrame, patient_ids: pd.Series) -> None:
    """Fail loudly when any patient has images in more than one split."""
    per_patient = pd.DataFrame({"patient": patient_ids.to_numpy(), "split": splits["split"].to_numpy()})
    counts = per_patient.drop_duplicates().groupby("patient").size()
    leaked = counts[counts > 1]
    if len(leaked):
        raise LeakageError(
            f"{len(leaked)} patient(s) sit in more than one split, e.g. {', '.join(leaked.index[:3])}"
        )


def make_splits(manifest: pd.DataFrame, config: StudyConfig) -> tuple[pd.DataFrame, dict[str, str]]:
    """The ``splits.parquet`` rows (``image_id, dataset, split``) and the per-dataset method as metadata."""
    parts = []
    methods: dict[str, dict[str, object]] = {}
    for dataset, frame in manifest.groupby("dataset", sort=False):
        name = str(dataset)
        spec = config.split_for(name)
        split = random_split(frame, spec) if spec.method == "random" else official_split(frame, spec, name)
        parts.append(pd.DataFrame({"image_id": frame["image_id"].to_numpy(), "dataset": name, "split": split}))
        methods[name] = spec.model_dump(mode="json")
    splits = pd.concat(parts, ignore_index=True)
    check_leakage(splits, manifest.set_index("image_id").loc[splits["image_id"], "patient_id"])
    return splits, {"cxrgen_splits": json.dumps(methods, sort_keys=True)}
