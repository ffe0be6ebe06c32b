"""Image-level vs patient-clustered paired comparison on real published NIH predictions.

Reads the published DenseNet121 probabilities of jrzech/reproduce-chexnet on 22,433 NIH ChestX-ray14 test images
(``../shared/realdata/nih/model_outputs_reproduce_chexnet/preds.csv``), their labels and patient ids from
``Data_Entry_2017_v2020.csv.gz``, and compares the model with a noisy copy of itself: on the logit scale, a
per-patient shift N(0, patient_noise²) (a second model errs alike on a patient's images) plus per-image noise
N(0, noise²), seeded. Per finding, paired DeLong (images independent) beside the patient-clustered paired
bootstrap (:func:`cxrgen.metrics.clustered.clustered_paired_bootstrap`), and the single-model SE of model a both ways
(DeLong vs :func:`cxrgen.metrics.clustered_bootstrap_auc`). Prints a markdown table.
Run: ``.venv/bin/python benchmarks/nih_paired_se.py [--noise 0.3] [--patient-noise 0.3] [--n-boot 1000]``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from cxrgen.metrics import clustered_bootstrap_auc, delong, delong_paired_test
from cxrgen.metrics.clustered import clustered_paired_bootstrap

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "nih"


def load(root: Path) -> tuple[pd.DataFrame, list[str]]:
    preds = pd.read_csv(root / "model_outputs_reproduce_chexnet" / "preds.csv")
    meta = pd.read_csv(root / "metadata" / "Data_Entry_2017_v2020.csv.gz", usecols=["Image Index", "Finding Labels",
                                                                                     "Patient ID"])
    frame = preds.merge(meta, on="Image Index", validate="one_to_one")
    if len(frame) != len(preds):
        raise SystemExit(f"{len(preds) - len(frame)} predicted images have no Data_Entry row")
    findings = [c.removeprefix("prob_") for c in preds.columns if c.startswith("prob_")]
    labels = frame["Finding Labels"].str.split("|")
    for f in findings:
        frame[f"y_{f}"] = labels.apply(lambda names, f=f: f in names).astype(float)
    return frame, findings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REALDATA)
    parser.add_argument("--noise", type=float, default=0.3, help="SD of the noise added on the logit scale")
    parser.add_argument("--patient-noise", type=float, default=0.3, help="SD of a per-patient logit shift")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (args.root / "model_outputs_reproduce_chexnet" / "preds.csv").is_file():
        raise SystemExit(f"{args.root}: the published NIH predictions are not there (see ../shared/realdata)")
    frame, findings = load(args.root)
    rng = np.random.default_rng(args.seed)
    groups = frame["Patient ID"].astype(str).to_numpy()
    _, codes = np.unique(groups, return_inverse=True)
    print(f"{len(frame)} images, {len(set(groups))} patients; b = expit(logit(a) + patient N(0, "
          f"{args.patient_noise}²) + image N(0, {args.noise}²)); {args.n_boot} patient resamples")
    print("| finding | n pos | AUC a | AUC b | diff | SE diff DeLong (images) | SE diff clustered | ratio | "
          "p DeLong (images) | p clustered | SE AUC a DeLong / clustered |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    start = time.perf_counter()
    for f in findings:
        y = frame[f"y_{f}"].to_numpy()
        p_a = np.clip(frame[f"prob_{f}"].to_numpy(dtype=np.float64), 1e-7, 1 - 1e-7)
        shift = rng.normal(scale=args.patient_noise, size=codes.max() + 1)[codes]
        p_b = expit(logit(p_a) + shift + rng.normal(scale=args.noise, size=p_a.size))
        dl = delong_paired_test(y, p_a, p_b, name=f)
        boot = clustered_paired_bootstrap(y, p_a, p_b, groups, n_boot=args.n_boot, seed=args.seed, name=f)
        se_dl = math.sqrt(dl.variance)
        single = clustered_bootstrap_auc(y, p_a, groups, n_boot=args.n_boot, seed=args.seed).se[0]
        single_dl = delong(y, p_a).se
        print(f"| {f} | {int(y.sum())} | {dl.auc_a:.4f} | {dl.auc_b:.4f} | {dl.difference:+.4f} | {se_dl:.5f} | "
              f"{boot.se:.5f} | {boot.se / se_dl:.2f} | {dl.p:.2g} | {boot.p:.2g} | "
              f"{single_dl:.4f} / {single:.4f} ({single / single_dl:.2f}x) |")
    print(f"\n{time.perf_counter() - start:.1f} s for {len(findings)} findings")


if __name__ == "__main__":
    main()
