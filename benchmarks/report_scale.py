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
import importlib.util
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
#: Test images and patients of each hospital at scale 1 (PadChest and BRAX: 20 % of their published patients).
TEST_SIZES = {
    "chexpert": (44_282, 12_908), "nih": (22_424, 6_160), "mimic": (5_159, 1_700),
    "padchest": (32_174, 13_525), "vindr": (3_000, 3_000), "brax": (8_193, 3_870),
}  # fmt: skip
PAPER = ("chexpert", "nih", "mimic")
SITES = ("chexpert", "nih", "mimic", "padchest", "vindr", "brax")
PAPER_CONFIGURATIONS = (
    {"name": "chexpert", "train": ["chexpert"], "internal": ["chexpert"], "external": ["mimic"]},
    {"name": "nih", "train": ["nih"], "internal": ["nih"], "external": ["mimic"]},
    {"name": "both", "train": ["chexpert", "nih"], "internal": ["chexpert", "nih"], "external": ["mimic"]},
)
#: Leave-one-hospital-out over the six (``design: {leave_one_out: [...]}`` spelled out).
SITES_CONFIGURATIONS = tuple(
    {"name": f"loo-{out}", "train": others, "internal": others, "external": [out]}
    for out in SITES
    for others in [[d for d in SITES if d != out]]
)
#: The real tables in torchxrayvision's data folder, and NIH's spelling of the labels.
TXV_FILES = {"chexpert": "chexpert_train.csv.gz", "nih": "Data_Entry_2017_v2020.csv.gz"}
NIH_NAMES = {"Pleural Effusion": "Effusion"}
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


def _real_table(name: str, txv: Path) -> pd.DataFrame:
    """``patient_id, sex, age, view, frontal, raw_<label>..., device`` of every image of a real metadata table."""
    table = pd.read_csv(txv / TXV_FILES[name])
    if name == "chexpert":
        frontal = table["Frontal/Lateral"].eq("Frontal").to_numpy()
        out = pd.DataFrame({
            "patient_id": table["Path"].str.extract(r"(patient\d+)", expand=False).to_numpy(),
            "sex": table["Sex"].map({"Male": "M", "Female": "F"}).fillna("U").to_numpy(),
            "age": table["Age"].astype(float).to_numpy(),
            "view": np.where(frontal, table["AP/PA"].fillna("AP").astype(str), "LATERAL"),
            "frontal": frontal,
        })  # fmt: skip
        for label in LABELS:
            out[f"raw_{label}"] = table[label].astype(float).to_numpy()
        out["device"] = table["Support Devices"].eq(1.0).astype(float).to_numpy()
        return out
    findings = table["Finding Labels"].str.split("|")
    out = pd.DataFrame({
        "patient_id": table["Patient ID"].astype(str).to_numpy(),
        "sex": table["Patient Gender"].to_numpy(),
        "age": table["Patient Age"].astype(float).to_numpy(),
        "view": table["View Position"].to_numpy(),
        "frontal": True,
    })  # fmt: skip
    for label in LABELS:
        name = NIH_NAMES.get(label, label)
        out[f"raw_{label}"] = np.array([name in found for found in findings], dtype=float)
    out["device"] = np.nan  # ChestX-ray14 records no devices
    return out


def real_hospital(rng: np.random.Generator, name: str, table: pd.DataFrame, patients: int) -> pd.DataFrame:
    """:func:`hospital`'s rows from real patients: ``patients`` drawn for the test split, 10 % more for validation,
    each with all its real images and metadata."""
    ids = table["patient_id"].unique()
    n_val = max(patients // 10, 20)
    drawn = rng.choice(ids, size=min(patients + n_val, ids.size), replace=False)
    role = pd.Series(np.where(np.arange(drawn.size) < patients, "test", "val"), index=drawn)
    rows = table.loc[table["patient_id"].isin(drawn)].reset_index(drop=True)
    n = len(rows)
    frame = pd.DataFrame({
        "dataset": name,
        "image_id": [f"{name}:{i:07d}" for i in range(n)],
        "path": [f"images/{i:07d}.png" for i in range(n)],
        "patient_id": f"{name}:" + rows["patient_id"],
        "study_id": f"{name}:" + rows["patient_id"],
        "view": rows["view"], "frontal": rows["frontal"], "sex": rows["sex"], "age": rows["age"],
        "official_split": "",
        "split": role.loc[rows["patient_id"]].to_numpy(),
    })  # fmt: skip
    for label in LABELS:
        raw = rows[f"raw_{label}"].to_numpy()
        frame[f"raw_{label}"] = raw
        frame[label] = np.where(np.isnan(raw), 0.0, np.where(raw == -1, 1.0, raw))
    frame["device"] = rows["device"].to_numpy()
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


def build(folder: Path, scale: float, seeds: int, bootstrap: int, shape: str, txv: Path | None) -> int:
    """Write the study folder; returns the image-rows of all predictions files."""
    rng = np.random.default_rng(0)
    hospitals = PAPER if shape == "paper" else SITES
    configurations = PAPER_CONFIGURATIONS if shape == "paper" else SITES_CONFIGURATIONS
    frames = []
    for name in hospitals:
        images, patients = TEST_SIZES[name]
        n_pat = max(int(patients * scale), 30)
        if txv is not None and name in TXV_FILES:
            frames.append(real_hospital(rng, name, _real_table(name, txv), n_pat))
        else:
            frames.append(hospital(rng, name, max(int(images * scale), n_pat), n_pat))
    table = pd.concat(frames, ignore_index=True)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "name": f"{shape}-size",
        "out": str(folder),
        "datasets": {d: {"reader": "nih", "root": str(folder / "data" / d)} for d in hospitals},
        "labels": list(LABELS),
        "architectures": list(ARCHS),
        "configurations": list(configurations),
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
    for conf in configurations:
        for arch in ARCHS:
            for seed in range(seeds):
                run = folder / "runs" / str(conf["name"]) / arch / (f"seed-{seed}" if seeds > 1 else "")
                (run / "predictions").mkdir(parents=True, exist_ok=True)
                (run / "done.json").write_text(json.dumps({"seed": seed}))
                predictions(val.loc[val["dataset"].isin(conf["train"])], 1.4, rng).to_parquet(
                    run / "validation.parquet", index=False
                )
                internal = predictions(test.loc[test["dataset"].isin(conf["internal"])], 1.4, rng)
                internal.to_parquet(run / "predictions" / "internal.parquet", index=False)
                rows += len(internal)
                for name in conf["external"]:
                    external = predictions(test.loc[test["dataset"] == name], 0.9, rng)
                    external.to_parquet(run / "predictions" / f"{name}.parquet", index=False)
                    rows += len(external)
    return rows


def time_report(folder: Path, extra: list[str]) -> dict[str, float]:
    """Run ``cxrgen report`` in a child interpreter; its wall and CPU seconds and peak memory."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    command = [sys.executable, "-m", "cxrgen", "report", str(folder), *extra]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"cxrgen report {folder} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "peak_mib": after.ru_maxrss / 1024}


def txv_folder(given: Path | None) -> Path | None:
    """``--txv-data``, else the data folder of an importable torchxrayvision, else None (generated tables)."""
    if given is not None:
        missing = [f for f in TXV_FILES.values() if not (given / f).is_file()]
        if missing:
            raise SystemExit(f"--txv-data {given}: no {', '.join(missing)}")
        return given
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        return None
    found = Path(spec.origin).parent / "data"
    return found if all((found / f).is_file() for f in TXV_FILES.values()) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.1, help="fraction of the paper's test-set sizes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 3], help="training seeds per study")
    parser.add_argument("--bootstrap", type=int, default=1000, help="evaluation.bootstrap")
    parser.add_argument("--shape", choices=["paper", "sites"], default="paper", help="paper: 3 hospitals, 12 files "
                        "per seed; sites: six-hospital leave-one-out, 24 files per seed")
    parser.add_argument("--txv-data", type=Path, default=None, help="torchxrayvision's data folder: real CheXpert "
                        "and NIH patients (default: an importable torchxrayvision's, else generated)")
    parser.add_argument("--dir", type=Path, default=Path("runs/report-scale"), help="where the folders go")
    parser.add_argument("--build-only", action="store_true", help="write the folders, time nothing")
    parser.add_argument("--reuse", action="store_true", help="time the folders already built (same options)")
    parser.add_argument("report_args", nargs="*", help="extra arguments of cxrgen report (after --)")
    args = parser.parse_args()
    txv = txv_folder(args.txv_data)
    source = "real CheXpert/NIH" if txv is not None else "generated"
    for seeds in args.seeds:
        folder = args.dir / (f"{args.shape}-scale{args.scale:g}-seeds{seeds}" + ("-txv" if txv is not None else ""))
        rows_file = folder / "image_rows.txt"
        if args.reuse and rows_file.is_file():
            rows = int(rows_file.read_text())
        else:
            rows = build(folder, args.scale, seeds, args.bootstrap, args.shape, txv)
            rows_file.write_text(str(rows))
        if args.build_only:
            print(f"{folder}: {rows} image-rows ({source} metadata)")
            continue
        result = time_report(folder, args.report_args)
        per_row = 1000 * result["cpu_s"] / rows
        print(
            f"{args.shape} seeds={seeds} scale={args.scale:g} ({source}): {rows} image-rows, "
            f"wall {result['wall_s']:.1f} s, CPU {result['cpu_s']:.1f} s ({per_row:.3f} ms per image-row), "
            f"peak {result['peak_mib']:.0f} MiB"
        )


if __name__ == "__main__":
    main()
