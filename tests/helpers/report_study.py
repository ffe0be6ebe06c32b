"""A small fake study directory for the report tests: config, manifest, splits, predictions with known signal.

Three hospitals: ``alpha`` and ``beta`` train, ``gamma`` is external. Two configurations (``alpha`` trained on one
dataset, ``both`` on two), each with an internal and an external predictions file per architecture. Other shapes
(datasets, configurations, labels, views) are parameters of :func:`make_study`. Predictions
carry a strong signal internally and a weaker one externally, so the generalization gap is positive by
construction. Everything comes from one seeded generator: same seed, same files.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from cxrgen.study.config import StudyConfig, dump_resolved

LABELS = ["Cardiomegaly", "Edema"]
DATASETS = ("alpha", "beta", "gamma")
CONFIGURATIONS = (
    {"name": "alpha", "train": ["alpha"], "internal": ["alpha"], "external": ["gamma"]},
    {"name": "both", "train": ["alpha", "beta"], "internal": ["alpha", "beta"], "external": ["gamma"]},
)
#: Separation of positives and negatives on the logit scale, internal vs external test sets.
SIGNAL = {"internal": 1.6, "external": 0.8}


def external_only(configurations: Sequence[Mapping[str, Any]]) -> list[str]:
    """Datasets only ever tested externally (``gamma`` by default), in order of first mention."""
    trained = {str(d) for conf in configurations for d in conf["train"]}
    named = [str(d) for conf in configurations for d in conf["external"]]
    return [d for d in dict.fromkeys(named) if d not in trained]


def manifest_and_splits(
    rng: np.random.Generator,
    patients: int,
    datasets: Sequence[str] = DATASETS,
    labels: Sequence[str] = LABELS,
    views: Sequence[str] = ("PA",),
    external: Sequence[str] = ("gamma",),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """1-3 images per patient; about 30 % of the training hospitals' patients in test, all of an external-only
    hospital's (``external``); a few NaN labels. With several ``views``, each image draws one."""
    rows = []
    for dataset in datasets:
        for i in range(patients):
            test = dataset in external or rng.random() < 0.3
            for j in range(int(rng.integers(1, 4))):
                row: dict[str, object] = {
                    "dataset": dataset,
                    "image_id": f"{dataset}:{i:04d}_{j}",
                    "path": f"images/{i:04d}_{j}.png",
                    "patient_id": f"{dataset}:{i:04d}",
                    "study_id": f"{dataset}:{i:04d}",
                    "view": str(rng.choice(list(views))) if len(views) > 1 else views[0],
                    "frontal": True,
                    "sex": str(rng.choice(["M", "F", "U"], p=[0.5, 0.45, 0.05])),
                    "age": float(rng.integers(18, 95)),
                    "official_split": "test" if dataset in external else "",
                    "split": "test" if test else str(rng.choice(["train", "val"], p=[0.9, 0.1])),
                }
                for k, label in enumerate(labels):
                    y = float(rng.random() < 0.3 + 0.1 * k)
                    row[f"raw_{label}"] = y
                    row[label] = np.nan if rng.random() < 0.03 else y
                rows.append(row)
    frame = pd.DataFrame(rows)
    splits = frame[["image_id", "dataset", "split"]].copy()
    return frame.drop(columns="split"), splits


def predictions(
    test: pd.DataFrame, strength: float, rng: np.random.Generator, labels: Sequence[str] = LABELS
) -> pd.DataFrame:
    """``image_id, patient_id, y_<label>, p_<label>`` with ``p = sigmoid(strength (2y - 1) + noise)``."""
    out = pd.DataFrame({"image_id": test["image_id"].to_numpy(), "patient_id": test["patient_id"].to_numpy()})
    for label in labels:
        y = test[label].to_numpy(dtype=np.float64)
        logit = strength * (2.0 * np.nan_to_num(y) - 1.0) + rng.normal(size=len(y))
        out[f"y_{label}"] = y
        out[f"p_{label}"] = 1.0 / (1.0 + np.exp(-logit))
    return out


def make_study(
    root: Path,
    *,
    archs: Sequence[str] = ("densenet121", "inception_resnet_v2"),
    reference: bool = True,
    patients: int = 60,
    seed: int = 0,
    images: bool = False,
    image_size: int | None = None,
    seeds: Sequence[int] | None = None,
    unlabelled_external: bool = False,
    datasets: Sequence[str] = DATASETS,
    configurations: Sequence[Mapping[str, Any]] = CONFIGURATIONS,
    labels: Sequence[str] = LABELS,
    views: Sequence[str] = ("PA",),
) -> Path:
    """Write a study directory under ``root / "study"`` and return it.

    Args:
        root: A temporary folder (``tmp_path``).
        archs: Architecture names (folder names under ``runs/<configuration>/``).
        reference: Carry paper values for the ``alpha`` internal and external rows of the first architecture.
        patients: Patients per dataset.
        seed: Seed of the one generator behind every file.
        images: Also write a small PNG per image under each dataset root (for the error review).
        image_size: ``preprocess.size`` of the config (model input side when ``images``).
        seeds: ``train.seeds``; with several, one predictions folder per seed (``<arch>/seed-<N>/``).
        unlabelled_external: ``gamma`` has no labels (an unlabelled external hospital): NaN in the manifest's label
            columns and in every ``y_`` column of its predictions.
        datasets: Dataset (hospital) names, each with ``patients`` patients.
        configurations: ``name``, ``train``, ``internal``, ``external`` per configuration; a dataset only ever
            named under ``external`` is tested whole (``gamma`` in the default two).
        labels: The study's labels (their prevalences rise from 0.3 in steps of 0.1).
        views: View names each image draws from (only ``PA`` by default, drawing nothing).
    """
    rng = np.random.default_rng(seed)
    study = root / "study"
    external_sets = external_only(configurations)
    manifest, splits = manifest_and_splits(rng, patients, datasets, labels, views, external_sets)
    data: dict[str, object] = {
        "name": "fake",
        "out": str(study),
        "datasets": {d: {"reader": "nih", "root": str(root / "data" / d)} for d in datasets},
        "labels": list(labels),
        "architectures": list(archs),
        "configurations": [dict(conf) for conf in configurations],
        "evaluation": {"bootstrap": 100, "ci": 0.95, "seed": 0},
        "review": {"label": "Cardiomegaly", "per_kind": 2},
        "preprocess": {"clahe": False, "engine": "opencv", "size": image_size},
    }
    if seeds is not None:
        data["train"] = {"seeds": list(seeds)}
    if reference:
        data["reference"] = {
            "source": "made up for the tests",
            "table1": [
                {"arch": archs[0], "configuration": "alpha", "kind": "internal", "auc": {"Cardiomegaly": 0.9}},
                {"arch": archs[0], "configuration": "alpha", "kind": "external", "auc": {"Cardiomegaly": 0.7}},
            ],
        }
    if unlabelled_external:
        gamma = manifest["dataset"] == "gamma"
        manifest.loc[gamma, [*labels, *(f"raw_{label}" for label in labels)]] = np.nan
    config = StudyConfig.model_validate(data)
    study.mkdir(parents=True)
    (study / "config.yaml").write_text(dump_resolved(config), encoding="utf-8")
    manifest.to_parquet(study / "manifest.parquet", index=False)
    splits.to_parquet(study / "splits.parquet", index=False)
    bad = manifest.loc[manifest["dataset"] == (external_sets[0] if external_sets else "gamma")].head(2)
    bad.assign(reason="truncated")[["dataset", "image_id", "path", "reason"]].to_csv(
        study / "excluded.csv", index=False
    )
    tested = manifest.merge(splits, on=["image_id", "dataset"])
    tested = tested.loc[(tested["split"] == "test") & ~tested["image_id"].isin(bad["image_id"])]
    seed_dirs = [f"seed-{s}" for s in seeds] if seeds is not None and len(seeds) > 1 else [""]
    for conf, arch, seed_dir in itertools.product(configurations, archs, seed_dirs):
        folder = study / "runs" / str(conf["name"]) / arch / seed_dir / "predictions"
        folder.mkdir(parents=True)
        internal = tested.loc[tested["dataset"].isin(conf["internal"])]
        predictions(internal, SIGNAL["internal"], rng, labels).to_parquet(folder / "internal.parquet", index=False)
        for dataset in conf["external"]:
            external = tested.loc[tested["dataset"] == dataset]
            strength = SIGNAL["external"] * (1.3 if conf["name"] == "both" else 1.0)
            predictions(external, strength, rng, labels).to_parquet(folder / f"{dataset}.parquet", index=False)
    if images:
        for row in manifest.itertuples(index=False):
            path = root / "data" / row.dataset / row.path
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, size=(48, 48), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
    return study


def read_config(study: Path) -> StudyConfig:
    return StudyConfig.model_validate(yaml.safe_load((study / "config.yaml").read_text(encoding="utf-8")))
