"""Time ``cxrgen report`` on a study folder of the paper's size: CPU time, CPU per image-row, peak memory.

The folder has the paper's shape (DESIGN.md section 2): CheXpert, ChestX-ray14 and MIMIC-CXR, three training
configurations (each hospital, both), two architectures, internal test sets and the MIMIC official test split;
12 predictions files with one seed, 36 with three. Test-set sizes at ``--scale 1`` are the paper's
(CheXpert 44,282 images of 12,908 patients; NIH 22,424 of 6,160; MIMIC 5,159 of 1,700: about 298k image-rows
per seed), with 1-8 images per patient, raw labels in {1, 0, -1, NaN}, a Support Devices column and validation
predictions (so every shift-aware analysis runs). Scores carry a signal shared by the images of one patient, so
the patient clustering matters as it does in real predictions. Everything comes from one seeded generator.

    python benchmarks/report_scale.py --scale 0.1 --seeds 1 3        # a few minutes on 2 cores
    python benchmarks/report_scale.py --scale 1 --seeds 1 3          # the paper's size

Each report runs in a fresh interpreter (``python -m cxrgen report``); CPU time (user + sys of the child) and
its peak resident memory come from ``resource.getrusage(RUSAGE_CHILDREN)``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

LABELS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
#: Test images and patients of each hospital at scale 1.
TEST_SIZES = {"chexpert": (44_282, 12_908), "nih": (22_424, 6_160), "mimic": (5_159, 1_700)}
CONFIGURATIONS = (
    {"name": "chexpert", "train": ["chexpert"], "internal": ["chexpert"], "external": ["mimic"]},
    {"name": "nih", "train": ["nih"], "internal": ["nih"], "external": ["mimic"]},
    {"name": "both", "train": ["chexpert", "nih"], "internal": ["chexpert", "nih"], "external": ["mimic"]},
)
ARCHS = ("densenet121", "inception_resnet_v2")
PREVALENCE = (0.15, 0.12, 0.05, 0.2, 0.3)


def hospital(rng: np.random.Generator, name: str, images: int, patients: int) -> pd.DataFrame:
    """Manifest rows of one hospital's test split plus a validation part (10 % more patients)."""
    n_val = max(patients // 10, 20)
    counts = 1 + rng.multinomial(max(images - patients, 0), np.full(patients, 1.0 / patients))
    pid = np.repeat(np.arange(patients + n_val), np.r_[counts, np.full(n_val, 2)])
    n = pid.size
    frame = pd.DataFrame({
        "dataset": name,
        "image_id": [f"{name}:{i:07d}" for i in range(n)],
        "path": [f"images/{i:07d}.png" for i in range(n)],
        "patient_id": [f"{name}:p{p:06d}" for p in pid],
        "study_id": [f"{name}:s{p:06d}" for p in pid],
        "view": rng.choice(["PA", "AP", "LL"], size=n, p=[0.5, 0.4, 0.1]),
        "frontal": True,
        "sex": rng.choice(["M", "F", "U"], size=n, p=[0.52, 0.46, 0.02]),
        "age": rng.integers(18, 95, size=n).astype(float),
        "official_split": "",
        "split": np.where(pid < patients, "test", "val"),
    })  # fmt: skip
    for k, label in enumerate(LABELS):
        y = (rng.random(n) < PREVALENCE[k]).astype(float)
        raw = y.copy()
        raw[rng.random(n) < 0.05] = -1.0
        raw[rng.random(n) < 0.1] = np.nan
        frame[f"raw_{label}"] = raw
        frame[label] = np.where(np.isnan(raw), 0.0, np.where(raw == -1, 1.0, raw))
    frame["device"] = (rng.random(n) < 0.2).astype(float)
    return frame


def predictions(rows: pd.DataFrame, strength: float, rng: np.random.Generator) -> pd.DataFrame:
    """``image_id, patient_id, y_<label>, p_<label>``; a patient effect makes the images of one patient alike."""
    _, codes = np.unique(rows["patient_id"].to_numpy(), return_inverse=True)
    out = pd.DataFrame({"image_id": rows["image_id"].to_numpy(), "patient_id": rows["patient_id"].to_numpy()})
    for label in LABELS:
        y = rows[label].to_numpy(dtype=np.float64)
        effect = rng.normal(size=codes.max() + 1)[codes]
        logit = strength * (2.0 * y - 1.0) + 0.7 * effect + rng.normal(size=y.size)
        out[f"y_{label}"] = y
        out[f"p_{label}"] = np.round(1.0 / (1.0 + np.exp(-logit)), 6).astype(np.float32)
    return out


def build(folder: Path, scale: float, seeds: int, bootstrap: int) -> int:
    """Write the study folder; returns the image-rows of all predictions files."""
    rng = np.random.default_rng(0)
    frames = []
    for name, (images, patients) in TEST_SIZES.items():
        n_pat = max(int(patients * scale), 30)
        frames.append(hospital(rng, name, max(int(images * scale), n_pat), n_pat))
    table = pd.concat(frames, ignore_index=True)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "name": "paper-size",
        "out": str(folder),
        "datasets": {d: {"reader": "nih", "root": str(folder / "data" / d)} for d in TEST_SIZES},
        "labels": list(LABELS),
        "architectures": list(ARCHS),
        "configurations": list(CONFIGURATIONS),
        "evaluation": {"bootstrap": bootstrap, "ci": 0.95, "seed": 0},
        "preprocess": {"clahe": False, "engine": "opencv"},
        "train": {"seeds": list(range(seeds))},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    table.drop(columns="split").to_parquet(folder / "manifest.parquet", index=False)
    table[["image_id", "dataset", "split"]].to_parquet(folder / "splits.parquet", index=False)
    pd.DataFrame(columns=["dataset", "image_id", "path", "reason"]).to_csv(folder / "excluded.csv", index=False)
    test, val = table.loc[table["split"] == "test"], table.loc[table["split"] == "val"]
    rows = 0
    for conf in CONFIGURATIONS:
        for arch in ARCHS:
            for seed in range(seeds):
                run = folder / "runs" / str(conf["name"]) / arch / (f"seed-{seed}" if seeds > 1 else "")
                (run / "predictions").mkdir(parents=True, exist_ok=True)
                (run / "done.json").write_text(json.dumps({"seed": seed}))
                predictions(val.loc[val["dataset"].isin(conf["train"])], 1.4, rng).to_parquet(
                    run / "validation.parquet", index=False
                )
                internal = predictions(test.loc[test["dataset"].isin(conf["internal"])], 1.4, rng)
                external = predictions(test.loc[test["dataset"] == "mimic"], 0.9, rng)
                internal.to_parquet(run / "predictions" / "internal.parquet", index=False)
                external.to_parquet(run / "predictions" / "mimic.parquet", index=False)
                rows += len(internal) + len(external)
    return rows


def time_report(folder: Path, extra: list[str]) -> dict[str, float]:
    """Run ``cxrgen report`` in a child interpreter; its wall and CPU seconds and peak memory."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cxrgen", "report", str(folder), *extra], check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "peak_mib": after.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.1, help="fraction of the paper's test-set sizes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 3], help="training seeds per study")
    parser.add_argument("--bootstrap", type=int, default=1000, help="evaluation.bootstrap")
    parser.add_argument("--dir", type=Path, default=Path("runs/report-scale"), help="where the folders go")
    parser.add_argument("--build-only", action="store_true", help="write the folders, time nothing")
    parser.add_argument("report_args", nargs="*", help="extra arguments of cxrgen report (after --)")
    args = parser.parse_args()
    for seeds in args.seeds:
        folder = args.dir / f"scale{args.scale:g}-seeds{seeds}"
        rows = build(folder, args.scale, seeds, args.bootstrap)
        if args.build_only:
            print(f"{folder}: {rows} image-rows")
            continue
        result = time_report(folder, args.report_args)
        per_row = 1000 * result["cpu_s"] / rows
        print(
            f"seeds={seeds} scale={args.scale:g}: {rows} image-rows, wall {result['wall_s']:.1f} s, "
            f"CPU {result['cpu_s']:.1f} s ({per_row:.3f} ms per image-row), peak {result['peak_mib']:.0f} MiB"
        )


if __name__ == "__main__":
    main()
