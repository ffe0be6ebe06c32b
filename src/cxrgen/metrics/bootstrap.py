"""The patient-clustered bootstrap of the AUC: one resample of patients, intervals by percentile or logit."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score

from cxrgen.metrics._arrays import FloatArray, IntArray, _masked, _one_class
from cxrgen.metrics.auc import _auc_from_group_weights, _group_matrices

#: Resamples processed together by :func:`clustered_bootstrap_auc`. Fixed (not a parameter) so that the
#: random stream, hence the result for a given seed, never depends on a tuning knob.
_BOOT_CHUNK = 64


@dataclass(frozen=True)
class BootstrapResult:
    """Patient-clustered bootstrap of per-label AUCs; every array has one entry per label.

    Attributes:
        auc: AUC on the full data (scikit-learn), NaN if the label has one class.
        ci_low: Lower percentile bound of the ``ci`` interval over non-degenerate resamples (NaN if none).
        ci_high: Upper percentile bound.
        se: Standard deviation of the resampled AUCs (bootstrap standard error), NaN if < 2 resamples.
        n_degenerate: Resamples in which the label held one class (AUC undefined, left out of the CI).
        samples: Resampled AUCs, shape [n_boot, L], NaN for degenerate resamples.
        n_boot: Number of resamples drawn.
        ci: Confidence level, e.g. 0.95.
        seed: Seed of the numpy Generator that drew the patients.
        n_patients: Distinct patients (clusters) in the data.
    """

    auc: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray
    se: FloatArray
    n_degenerate: IntArray
    samples: FloatArray
    n_boot: int
    ci: float
    seed: int
    n_patients: int


def clustered_bootstrap_auc(
    y: ArrayLike,
    p: ArrayLike,
    groups: ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    labels: Sequence[str] | None = None,
) -> BootstrapResult:
    """Percentile bootstrap CIs of AUC that resample patients, not images.

    Each resample draws as many patients as there are, with replacement, and keeps all images of every
    drawn patient. Equivalently, image ``i`` gets weight ``c[patient(i)]``, the number of times its patient
    was drawn, and the resample's AUC is the weighted AUC; this is how it is computed, for all labels and a
    chunk of resamples at once. All labels share the same resamples. With one image per patient this is the
    ordinary image-level bootstrap.

    Args:
        y: Ground truth [N] or [N, L] in {0, 1, NaN}; NaN images are left out of that label only.
        p: Scores, same shape as ``y``.
        groups: Patient id per image [N] (any hashable dtype numpy can sort).
        n_boot: Number of resamples (>= 1).
        seed: Seed of the :class:`numpy.random.Generator`; same seed, same intervals.
        ci: Confidence level of the percentile interval.
        labels: Label names for warnings (default ``label 0``, ``label 1``...).

    Returns:
        A :class:`BootstrapResult`. Labels with one class get NaN everywhere, ``n_degenerate == n_boot``
        and a :class:`OneClassWarning`.
    """
    ya = np.asarray(y, dtype=np.float64)
    pa = np.asarray(p, dtype=np.float64)
    if ya.ndim == 1:
        ya, pa = ya[:, None], pa[:, None]
    if ya.ndim != 2 or ya.shape != pa.shape:
        raise ValueError(f"y and p must both be [N] or [N, L], got {np.shape(y)} and {np.shape(p)}")
    g = np.asarray(groups)
    if g.shape != (ya.shape[0],):
        raise ValueError(f"groups must be [N] with N = {ya.shape[0]}, got {g.shape}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    n_labels = ya.shape[1]
    names = list(labels) if labels is not None else [f"label {j}" for j in range(n_labels)]
    if len(names) != n_labels:
        raise ValueError(f"{len(names)} label names for {n_labels} columns")

    _, codes = np.unique(g, return_inverse=True)
    codes = codes.astype(np.int64).ravel()
    n_pat = int(codes.max()) + 1 if codes.size else 0

    point = np.full(n_labels, np.nan)
    mats: list[tuple[sp.csr_matrix, sp.csr_matrix] | None] = []
    for j in range(n_labels):
        keep = ~np.isnan(ya[:, j])
        ym, pm = _masked(ya[:, j], pa[:, j], names[j])
        if _one_class(ym, names[j]):
            mats.append(None)
            continue
        point[j] = float(roc_auc_score(ym, pm))
        mats.append(_group_matrices(ym, pm, codes[keep], n_pat))

    samples = np.full((n_boot, n_labels), np.nan)
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot if any(m is not None for m in mats) else 0, _BOOT_CHUNK):
        b = min(_BOOT_CHUNK, n_boot - start)
        draws = rng.integers(0, n_pat, size=(b, n_pat))  # [b, P] patient indices drawn with replacement
        offsets = (np.arange(b, dtype=np.int64) * n_pat)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=b * n_pat).reshape(b, n_pat)
        counts_f = counts.astype(np.float64)  # [b, P] multiplicity of each patient
        for j, m in enumerate(mats):
            if m is None:
                continue
            g_pos = np.asarray(counts_f @ m[0])  # [b, G] weighted positives per score
            g_neg = np.asarray(counts_f @ m[1])
            samples[start : start + b, j] = _auc_from_group_weights(g_pos, g_neg)

    valid = ~np.isnan(samples)
    n_valid = valid.sum(axis=0)
    alpha = 1.0 - ci
    lo = np.full(n_labels, np.nan)
    hi = np.full(n_labels, np.nan)
    se = np.full(n_labels, np.nan)
    for j in range(n_labels):
        s = samples[valid[:, j], j]
        if s.size:
            lo[j], hi[j] = np.quantile(s, [alpha / 2.0, 1.0 - alpha / 2.0])
        if s.size > 1:
            se[j] = float(np.std(s, ddof=1))
    return BootstrapResult(
        auc=point,
        ci_low=lo,
        ci_high=hi,
        se=se,
        n_degenerate=(n_boot - n_valid).astype(np.int64),
        samples=samples,
        n_boot=n_boot,
        ci=ci,
        seed=seed,
        n_patients=n_pat,
    )


def patient_bootstrap_weights(groups: ArrayLike, *, n_boot: int = 1000, seed: int = 0) -> Iterator[FloatArray]:
    """The resamples of :func:`clustered_bootstrap_auc` as image weights, in chunks of [b, N].

    Image ``i`` weighs the number of times its patient was drawn. The draws are those of
    :func:`clustered_bootstrap_auc` with the same ``seed`` (same generator, same chunks), so any statistic
    computed from these weights (sensitivity, a false-positive rate, a difference of two) shares its
    resamples with the AUC intervals: one patient bootstrap for the whole evaluation, not a second one.
    """
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    codes = codes.astype(np.int64).ravel()
    n_pat = int(codes.max()) + 1 if codes.size else 0
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, _BOOT_CHUNK):
        b = min(_BOOT_CHUNK, n_boot - start)
        draws = rng.integers(0, n_pat, size=(b, n_pat))
        offsets = (np.arange(b, dtype=np.int64) * n_pat)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=b * n_pat).reshape(b, n_pat)
        yield counts.astype(np.float64)[:, codes]
