"""Time the patient-clustered bootstrap of AUC against a naive per-resample scikit-learn loop.

The problem size is that of a CheXpert-sized test set: 44,282 images of about 12,908 patients, 5 labels,
1,000 resamples. Scores are continuous (every image a distinct value, the worst case for the rank-based
method) and 3% of labels are NaN. The naive baseline draws the same kind of resample (patients with
replacement, all their images) and calls ``roc_auc_score`` per label; it runs on fewer resamples and is
extrapolated linearly. Run: ``.venv/bin/python benchmarks/bootstrap.py [--n-boot 1000] [--naive-boot 20]``.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from cxrgen.metrics import clustered_bootstrap_auc

N_IMAGES = 44_282
N_PATIENTS = 12_908
N_LABELS = 5


def synthetic(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels [N, L] with NaN, continuous scores [N, L], patient id per image [N] (every patient present)."""
    rng = np.random.default_rng(seed)
    patients = np.concatenate([np.arange(N_PATIENTS), rng.integers(0, N_PATIENTS, N_IMAGES - N_PATIENTS)])
    patients = np.sort(patients)
    prevalence = np.array([0.15, 0.12, 0.07, 0.24, 0.38])
    y = (rng.random((N_IMAGES, N_LABELS)) < prevalence).astype(float)
    p = 1.0 / (1.0 + np.exp(-(rng.normal(size=y.shape) + 1.5 * y - 1.0)))
    y[rng.random(y.shape) < 0.03] = np.nan
    return y, p, patients


def naive(y: np.ndarray, p: np.ndarray, patients: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """Reference loop: per resample, gather the images of the drawn patients and call sklearn per label."""
    rng = np.random.default_rng(seed)
    order = np.argsort(patients, kind="stable")
    _, starts, counts = np.unique(patients[order], return_index=True, return_counts=True)
    out = np.full((n_boot, y.shape[1]), np.nan)
    for b in range(n_boot):
        drawn = rng.integers(0, starts.size, size=starts.size)
        idx = order[np.concatenate([np.arange(s, s + c) for s, c in zip(starts[drawn], counts[drawn], strict=True)])]
        for j in range(y.shape[1]):
            yj, pj = y[idx, j], p[idx, j]
            keep = ~np.isnan(yj)
            out[b, j] = roc_auc_score(yj[keep], pj[keep])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--naive-boot", type=int, default=20)
    args = parser.parse_args()

    y, p, patients = synthetic()
    clustered_bootstrap_auc(y[:2000], p[:2000], patients[:2000], n_boot=10)  # warm-up (imports, caches)

    t0 = time.perf_counter()
    res = clustered_bootstrap_auc(y, p, patients, n_boot=args.n_boot, seed=0)
    t_vec = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref = naive(y, p, patients, args.naive_boot)
    t_naive = (time.perf_counter() - t0) / args.naive_boot * args.n_boot

    # Sanity: both estimate the same sampling distribution (not the same draws).
    print(f"machine: {platform.processor() or platform.machine()}, numpy {np.__version__}")
    print(f"images {y.shape[0]:,}, patients {np.unique(patients).size:,}, labels {y.shape[1]}, "
          f"resamples {args.n_boot:,}")
    print(f"bootstrap SE per label, vectorized: {np.round(res.se, 4).tolist()}")
    print(f"bootstrap SE per label, naive ({args.naive_boot} resamples): "
          f"{np.round(ref.std(axis=0, ddof=1), 4).tolist()}")
    print()
    print(f"| method | resamples timed | seconds for {args.n_boot:,} resamples | ratio |")
    print("|---|---|---|---|")
    print(f"| vectorized weighted Mann-Whitney (cxrgen.metrics) | {args.n_boot:,} | {t_vec:.2f} | 1.0 |")
    print(f"| naive loop, roc_auc_score per resample and label | {args.naive_boot:,} (extrapolated) "
          f"| {t_naive:.1f} | {t_naive / t_vec:.0f}x |")


if __name__ == "__main__":
    main()
