"""The patient-clustered bootstrap of the AUC: one resample of patients, intervals by percentile or logit."""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from cxrgen.metrics._arrays import FloatArray, IntArray, _masked, _one_class
from cxrgen.metrics.auc import labelled_auc, patient_blocks

#: Resamples processed together by :func:`clustered_bootstrap_auc`. Fixed (not a parameter) so that the
#: random stream, hence the result for a given seed, never depends on a tuning knob.
_BOOT_CHUNK = 64
#: Patient counts kept for reuse (a test set's resample, its subgroups'); each is at most n_boot x P bytes.
_RESAMPLES_KEPT = 32
#: Resampled AUCs kept for reuse by content (n_boot x 8 bytes each): the report's sections score the same file
#: and label on the same resample several times (AUC table, overview, seeds, comparisons, protocols).
_AUCS_KEPT = 4096
_known_aucs: OrderedDict[bytes, FloatArray] = OrderedDict()


def _drawn_counts(n_patients: int, n_boot: int, seed: int) -> NDArray[np.integer]:
    """Multiplicity of every patient in every resample [n_boot, P], read-only; drawn once per (P, n_boot, seed).

    The draws depend on nothing else: resample ``r`` draws ``P`` patient indices with replacement from the
    generator of ``seed``, in chunks of :data:`_BOOT_CHUNK` resamples. Kept as the smallest unsigned integer type
    that holds them (a patient drawn more than 255 times in one resample is vanishingly rare but handled).
    """
    return _drawn(n_patients, n_boot, seed)[0]


def generator_after_draws(n_patients: int, n_boot: int, seed: int) -> np.random.Generator:
    """The generator of ``seed`` as it stands after :func:`_drawn_counts` drew its resamples (for draws that follow
    them in the same stream, as the seed draws of :func:`cxrgen.metrics.clustered.resampled_aucs`)."""
    rng = np.random.default_rng(seed)
    rng.bit_generator.state = _drawn(n_patients, n_boot, seed)[1]
    return rng


@functools.lru_cache(maxsize=_RESAMPLES_KEPT)
def _drawn(n_patients: int, n_boot: int, seed: int) -> tuple[NDArray[np.integer], Mapping[str, Any]]:
    counts: NDArray[np.integer] = np.empty((n_boot, n_patients), dtype=np.uint16 if n_patients > 255 else np.uint8)
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, _BOOT_CHUNK):
        b = min(_BOOT_CHUNK, n_boot - start)
        draws = rng.integers(0, n_patients, size=(b, n_patients))  # [b, P] patient indices drawn
        offsets = (np.arange(b, dtype=np.int64) * n_patients)[:, None]
        block = np.bincount((draws + offsets).ravel(), minlength=b * n_patients).reshape(b, n_patients)
        if block.max(initial=0) > np.iinfo(counts.dtype).max:
            counts = counts.astype(np.int64)
        counts[start : start + b] = block
    counts.flags.writeable = False
    return counts, rng.bit_generator.state


@dataclass(frozen=True)
class PatientResample:
    """One patient bootstrap of a test set, held per patient (never as dense per-image weights).

    Every analysis of the same patients with the same ``n_boot`` and ``seed`` gets the same draws (the counts
    are drawn once and shared): AUC intervals, paired comparisons, operating points, protocols, shortcut. A
    statistic that is a sum over images becomes, in resample ``r``, ``counts[r] @ per_patient_sums``.

    Attributes:
        codes: Patient index of each image [N] (0..P-1, in the order of the sorted patient ids).
        counts: Multiplicity of each patient in each resample [n_boot, P] (read-only, integer).
        seed: Seed of the generator that drew them.
    """

    codes: IntArray
    counts: NDArray[np.integer]
    seed: int

    @property
    def n_boot(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_patients(self) -> int:
        return int(self.counts.shape[1])

    def chunks(self, dtype: type[np.floating[Any]] = np.float64) -> Iterator[NDArray[np.floating[Any]]]:
        """The counts as float blocks [b, P] of at most :data:`_BOOT_CHUNK` resamples, in order."""
        for start in range(0, self.n_boot, _BOOT_CHUNK):
            yield self.counts[start : start + _BOOT_CHUNK].astype(dtype)

    def per_patient(self, values: ArrayLike) -> FloatArray:
        """Sums of per-image ``values`` [K, N] (or [N]) over each patient's images: [K, P] (or [P])."""
        v = np.asarray(values, dtype=np.float64)
        rows = np.atleast_2d(v)
        if rows.shape[1] != self.codes.size:
            raise ValueError(f"values must have N = {self.codes.size} columns, got shape {v.shape}")
        sums = [np.bincount(self.codes, weights=row, minlength=self.n_patients) for row in rows]
        out: FloatArray = np.vstack(sums).astype(np.float64, copy=False)
        return out if v.ndim == 2 else out[0]

    def image_weights(self) -> Iterator[FloatArray]:
        """The resamples as image weights [b, N] (weight = the image's patient's multiplicity), in chunks."""
        for chunk in self.chunks():
            yield np.asarray(chunk[:, self.codes], dtype=np.float64)


@functools.lru_cache(maxsize=_RESAMPLES_KEPT)
def _columns(n_patients: int, n_boot: int, seed: int) -> tuple[NDArray[np.integer], ...]:
    """:func:`_drawn_counts` as C-contiguous blocks [P, b] of at most :data:`_BOOT_CHUNK` resamples, in order: the
    operand of :meth:`cxrgen.metrics.auc.PatientBlocks.aucs`, transposed once per resample, not once per use."""
    counts = _drawn_counts(n_patients, n_boot, seed)
    blocks = tuple(np.ascontiguousarray(counts[s : s + _BOOT_CHUNK].T) for s in range(0, n_boot, _BOOT_CHUNK))
    for block in blocks:
        block.flags.writeable = False
    return blocks


def resampled_aucs_of(
    scored: Sequence[tuple[FloatArray, FloatArray, IntArray]], n_patients: int, n_boot: int, seed: int
) -> list[FloatArray]:
    """AUC [n_boot] of each ``(y, p, patients)`` on the patient resample of ``(n_patients, n_boot, seed)``.

    Each item is labelled images only (``y`` in {0, 1} with both classes, ``p`` their scores, ``patients`` their
    patient index in 0..n_patients-1). Results are remembered by the content of the item and the resample, so an
    analysis that scores the same images again gets the same array (read-only) without a second pass; those not
    known are computed together, in one pass over the resample's chunks.
    """
    keys = [_aucs_key(y, p, patients, n_patients, n_boot, seed) for y, p, patients in scored]
    todo = list(dict.fromkeys(key for key in keys if key not in _known_aucs))
    if todo:
        first = {key: keys.index(key) for key in todo}
        blocks = [patient_blocks(*scored[first[key]], n_patients) for key in todo]
        out = np.empty((len(todo), n_boot))
        start = 0
        for columns in _columns(n_patients, n_boot, seed):
            b = columns.shape[1]
            for r, block in enumerate(blocks):
                out[r, start : start + b] = block.aucs(columns)
            start += b
        out.flags.writeable = False
        for r, key in enumerate(todo):
            _known_aucs[key] = out[r]
    for key in keys:
        _known_aucs.move_to_end(key)
    while len(_known_aucs) > _AUCS_KEPT:
        _known_aucs.popitem(last=False)
    return [_known_aucs[key] for key in keys]


def _aucs_key(y: FloatArray, p: FloatArray, patients: IntArray, n_patients: int, n_boot: int, seed: int) -> bytes:
    digest = hashlib.blake2b(f"{n_patients},{n_boot},{seed},{y.size}".encode(), digest_size=20)
    for array, dtype in ((y, np.float64), (p, np.float64), (patients, np.int64)):
        digest.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
    return digest.digest()


def patient_codes(groups: ArrayLike) -> tuple[IntArray, int]:
    """Patient index of each image (sorted unique ids, as ``np.unique``) and the number of patients.

    By hashing (``pandas.factorize``) and sorting only the distinct ids: string ids sorted image by image cost
    more than the bootstrap they feed. ``np.unique`` where factorize cannot give its codes (missing ids).
    """
    g = np.asarray(groups)
    codes, _ = pd.factorize(g.ravel(), sort=True)
    if codes.size and codes.min() < 0:
        codes = np.unique(g, return_inverse=True)[1]
    codes = codes.astype(np.int64).ravel()
    return codes, int(codes.max()) + 1 if codes.size else 0


def patient_resample(groups: ArrayLike, *, n_boot: int = 1000, seed: int = 0) -> PatientResample:
    """The patient bootstrap of the images of ``groups`` [N]: the draws of :func:`clustered_bootstrap_auc`.

    Raises:
        ValueError: ``n_boot < 1``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    codes, n_pat = patient_codes(groups)
    counts = _drawn_counts(n_pat, n_boot, seed) if n_pat else np.zeros((n_boot, 0), dtype=np.uint8)
    return PatientResample(codes=codes, counts=counts, seed=seed)


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
    points: Sequence[float] | None = None,
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
        points: The labels' AUCs on these images when the caller has them (from a
            :class:`cxrgen.metrics.auc.SortedScores` of a whole file, for a subgroup): spares sorting the subset again.

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
    if points is not None and len(points) != n_labels:
        raise ValueError(f"{len(points)} point AUCs for {n_labels} columns")

    codes, n_pat = patient_codes(g)

    point = np.full(n_labels, np.nan)
    scored: dict[int, tuple[FloatArray, FloatArray, IntArray]] = {}
    for j in range(n_labels):
        keep = ~np.isnan(ya[:, j])
        ym, pm = _masked(ya[:, j], pa[:, j], names[j])
        if _one_class(ym, names[j]):
            continue
        point[j] = labelled_auc(ym, pm) if points is None else float(points[j])
        scored[j] = (ym, pm, codes[keep])

    samples = np.full((n_boot, n_labels), np.nan)
    # The test set's one resample, shared with its other analyses (and their AUCs with this one's).
    for j, aucs in zip(scored, resampled_aucs_of(list(scored.values()), n_pat, n_boot, seed), strict=True):
        samples[:, j] = aucs

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
    yield from patient_resample(groups, n_boot=n_boot, seed=seed).image_weights()
