"""AUC and ROC: per label, weighted by bootstrap counts, and the group matrices a resample reuses."""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import auc as area_under
from sklearn.metrics import roc_auc_score, roc_curve

from cxrgen.metrics._arrays import FloatArray, IntArray, _as_1d, _masked, _one_class

#: Point AUCs kept for reuse by content: the report scores one file's label in several sections.
_POINTS_KEPT = 4096
_known_points: OrderedDict[bytes, float] = OrderedDict()


def _sorted_auc(y: FloatArray, p: FloatArray) -> float:
    """``roc_auc_score`` of labelled images already sorted by descending score, by scikit-learn's own steps.

    The counts at the last image of each distinct score, ``drop_intermediate`` (collinear points), the prepended
    (0, 0) point, the rates and the trapezoid are those of ``roc_curve`` and ``auc``, so the number is the same to
    the bit. The order of tied images does not matter: only the counts at a tie's last image are read.
    """
    ends = np.r_[np.flatnonzero(np.diff(p)), y.size - 1]
    tps = np.cumsum(y, dtype=np.float64)[ends]
    fps = 1 + ends.astype(np.float64) - tps
    if fps.shape[0] > 2:
        corner = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps = fps[corner], tps[corner]
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    return float(area_under(fps / fps[-1], tps / tps[-1]))


class SortedScores:
    """One label's scores sorted once, descending, as scikit-learn sorts them; the AUC of any subset reads them.

    A subset taken in this order is the order scikit-learn gives the subset alone (a stable sort restricted to a
    subsequence keeps the ties' relative order), so subgroups and protocols need no sort of their own.
    """

    def __init__(self, p: ArrayLike) -> None:
        self.p = _as_1d(p, "p")
        self.order = np.argsort(self.p, kind="mergesort")[::-1]
        self.sorted_p = self.p[self.order]

    def auc(self, y: ArrayLike, subset: ArrayLike | None = None, *, name: str = "label") -> float:
        """:func:`roc_auc` of ``y`` [N] (0, 1 or NaN) on the images ``subset`` (bool mask [N] or indices; all if None).

        Same checks, errors and :class:`OneClassWarning` as :func:`roc_auc`, without sorting the subset.
        """
        ya = _as_1d(y, "y")
        if ya.shape != self.p.shape:
            raise ValueError(f"{name}: y and p differ in length ({ya.size} vs {self.p.size})")
        take = ~np.isnan(ya)
        if subset is not None:
            chosen = np.asarray(subset)
            inside = chosen
            if chosen.dtype != np.bool_:
                inside = np.zeros(ya.size, dtype=bool)
                inside[chosen] = True
            take &= inside
        _masked(ya[take], self.p[take], name)  # the checks and errors of roc_auc
        ys = ya[self.order][take[self.order]]
        if _one_class(ys, name):
            return math.nan
        return _sorted_auc(ys, self.sorted_p[take[self.order]])


def labelled_auc(y: FloatArray, p: FloatArray) -> float:
    """``roc_auc_score`` of labelled images (``y`` in {0, 1}, both classes), remembered by the images' content.

    Computed by scikit-learn's binary steps (:func:`_sorted_auc`, the same number) without the multiclass target
    checks that cost more than the AUC on a subgroup's few thousand images.
    """
    digest = hashlib.blake2b(str(y.size).encode(), digest_size=20)
    for array in (y, p):
        digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    key = digest.digest()
    if key not in _known_points:
        order = np.argsort(p, kind="mergesort")[::-1]
        _known_points[key] = _sorted_auc(np.asarray(y, dtype=np.float64)[order], np.asarray(p, np.float64)[order])
        if len(_known_points) > _POINTS_KEPT:
            _known_points.popitem(last=False)
    _known_points.move_to_end(key)
    return _known_points[key]


def roc_auc(y: ArrayLike, p: ArrayLike, *, name: str = "label") -> float:
    """Area under the ROC curve of one label, NaN labels masked.

    Args:
        y: Ground truth, shape [N], values 0, 1 or NaN (NaN = not labelled, excluded).
        p: Scores, shape [N]; finite where ``y`` is not NaN.
        name: Label name used in warnings and errors.

    Returns:
        The AUC in [0, 1] (scikit-learn's ``roc_auc_score``, ties counted one half), or NaN with a
        :class:`OneClassWarning` when the labelled images hold a single class.
    """
    ya, pa = _masked(y, p, name)
    if _one_class(ya, name):
        return math.nan
    return labelled_auc(ya, pa)


def auc_per_label(y: ArrayLike, p: ArrayLike, labels: Sequence[str] | None = None) -> FloatArray:
    """AUC of every column of ``y`` [N, L] against the same column of ``p`` [N, L]; NaN where undefined."""
    ya = np.asarray(y, dtype=np.float64)
    pa = np.asarray(p, dtype=np.float64)
    if ya.ndim != 2 or ya.shape != pa.shape:
        raise ValueError(f"y and p must both be [N, L], got {ya.shape} and {pa.shape}")
    names = list(labels) if labels is not None else [f"label {j}" for j in range(ya.shape[1])]
    if len(names) != ya.shape[1]:
        raise ValueError(f"{len(names)} label names for {ya.shape[1]} columns")
    return np.array([roc_auc(ya[:, j], pa[:, j], name=names[j]) for j in range(ya.shape[1])])


@dataclass(frozen=True)
class RocCurve:
    """Points of an ROC curve, from the strictest threshold to the loosest.

    Attributes:
        fpr: False positive rate (1 - specificity) at each threshold, in [0, 1].
        tpr: True positive rate (sensitivity) at each threshold, in [0, 1].
        thresholds: Score thresholds (predict positive when ``p >= threshold``); the first is ``inf``.
        auc: Area under these points; NaN when undefined.
    """

    fpr: FloatArray
    tpr: FloatArray
    thresholds: FloatArray
    auc: float


def roc_curve_points(
    y: ArrayLike, p: ArrayLike, *, name: str = "label", drop_intermediate: bool = True
) -> RocCurve:
    """ROC curve points of one label with NaN labels masked.

    With a single class the curve is undefined: the arrays are empty, ``auc`` is NaN and a
    :class:`OneClassWarning` is issued.
    """
    ya, pa = _masked(y, p, name)
    if _one_class(ya, name, "ROC curve"):
        empty = np.empty(0, dtype=np.float64)
        return RocCurve(empty, empty.copy(), empty.copy(), math.nan)
    fpr, tpr, thr = roc_curve(ya, pa, drop_intermediate=drop_intermediate)
    return RocCurve(
        np.asarray(fpr, dtype=np.float64),
        np.asarray(tpr, dtype=np.float64),
        np.asarray(thr, dtype=np.float64),
        float(roc_auc_score(ya, pa)),
    )


def _score_blocks(y: FloatArray, p: FloatArray) -> tuple[IntArray, int]:
    """Block of each image along the ascending scores, and the number of blocks (see :func:`_group_matrices`)."""
    pos = y == 1
    _, value_idx = np.unique(p, return_inverse=True)  # dense ascending code of each distinct score
    value_idx = value_idx.ravel()
    n_distinct = int(value_idx.max()) + 1 if p.size else 0
    has_pos = np.bincount(value_idx[pos], minlength=n_distinct) > 0
    has_neg = np.bincount(value_idx[~pos], minlength=n_distinct) > 0
    kind = has_pos.astype(np.int8) + 2 * has_neg.astype(np.int8)  # 1 positive only, 2 negative only, 3 both
    new_block = np.r_[True, (kind[1:] != kind[:-1]) | (kind[1:] == 3)] if n_distinct else np.empty(0, bool)
    block_of_value = np.cumsum(new_block) - 1
    n_blocks = int(block_of_value[-1]) + 1 if n_distinct else 0
    return block_of_value[value_idx].astype(np.int64), n_blocks


def _group_matrices(
    y: FloatArray, p: FloatArray, rows: IntArray, n_rows: int
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Count matrices [n_rows, G] of positive and negative images per (row, block of scores).

    Blocks partition the ascending scores: a score shared by both classes is a block of its own (its ties
    count one half); consecutive scores held by one class only merge into one block, since no comparison
    happens inside it. This keeps ``G`` near the number of class changes along the sorted scores rather
    than the number of images (about 4 times fewer columns at 15% prevalence). ``rows`` maps each image to
    a row (the image itself for :func:`weighted_auc`, its patient for the bootstrap). Multiplying a weight
    vector over rows by these matrices gives the weighted positives / negatives in each block.
    """
    pos = y == 1
    block, n_blocks = _score_blocks(y, p)

    def count(mask: NDArray[np.bool_]) -> sp.csr_matrix:
        data = np.ones(int(mask.sum()), dtype=np.float64)
        return sp.coo_matrix((data, (rows[mask], block[mask])), shape=(n_rows, n_blocks)).tocsr()

    return count(pos), count(~pos)


@dataclass(frozen=True)
class PatientBlocks:
    """Positive and negative images per (block of sorted scores, patient), [G, P] integer matrices.

    A patient resample's AUC is two sparse products of these with its patient multiplicities, one prefix sum
    and one dot product, all in integers (:meth:`aucs`): the images are sorted once, when this is built, and
    never expanded into per-image weights. Build with :func:`patient_blocks`.
    """

    pos: sp.csr_matrix
    neg: sp.csr_matrix

    def aucs(self, counts_t: NDArray[np.integer]) -> FloatArray:
        """AUCs [b] of ``b`` resamples given as patient multiplicities ``counts_t`` [P, b] (C-contiguous unsigned
        8 or 16-bit integers, or int32).

        The same numbers as :func:`_auc_from_group_weights` on float weights: every count, prefix sum and product
        is an integer (twice the numerator, so ties' halves stay whole), exact in int32 / int64, and the AUC is one
        correctly rounded division of the same two exact numbers. NaN where a resample has no positive or no
        negative.
        """
        g_pos = self.pos @ counts_t  # [G, b] weighted positives per block
        g_neg = self.neg @ counts_t
        twice_below = 2 * np.cumsum(g_neg, axis=0, dtype=np.int32) - g_neg  # 2 x (negatives below) + ties
        num2 = np.einsum("gb,gb->b", g_pos, twice_below, dtype=np.int64, casting="safe")
        den2 = 2 * g_pos.sum(axis=0, dtype=np.int64) * g_neg.sum(axis=0, dtype=np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = num2.astype(np.float64) / den2.astype(np.float64)
        auc[den2 <= 0] = np.nan
        return np.asarray(auc, dtype=np.float64)


def patient_blocks(y: FloatArray, p: FloatArray, patients: IntArray, n_patients: int) -> PatientBlocks:
    """:class:`PatientBlocks` of labelled images (``y`` in {0, 1}, no NaN) with patient index ``patients``."""
    pos = y == 1
    block, n_blocks = _score_blocks(y, p)

    def count(mask: NDArray[np.bool_]) -> sp.csr_matrix:
        data = np.ones(int(mask.sum()), dtype=np.int32)
        shape = (n_blocks, n_patients)
        return sp.coo_matrix((data, (block[mask], patients[mask])), shape=shape).tocsr()

    return PatientBlocks(count(pos), count(~pos))


def _auc_from_group_weights(g_pos: FloatArray, g_neg: FloatArray) -> FloatArray:
    """Weighted Mann-Whitney AUC from weights at each distinct score, shapes [B, G] -> [B].

    AUC = sum_g W+_g * (W-_{<g} + W-_g / 2) / (W+ * W-): each positive beats the negatives with lower scores
    and ties half of those with the same score. NaN where a resample has no positive or no negative weight.
    """
    below = np.cumsum(g_neg, axis=1) - g_neg
    num = np.einsum("bg,bg->b", g_pos, below + 0.5 * g_neg)
    den = g_pos.sum(axis=1) * g_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = num / den
    auc[den <= 0] = np.nan
    return np.asarray(auc, dtype=np.float64)


def weighted_auc(y: ArrayLike, p: ArrayLike, weights: ArrayLike) -> FloatArray:
    """AUC with non-negative weights per image, for one weight vector [N] or many at once [B, N].

    Equals ``roc_auc_score(y, p, sample_weight=w)``; with integer weights it equals the AUC of the data
    with each image repeated ``w`` times. Images with NaN ``y`` are ignored. Returns an array of shape [B]
    (shape [1] for a single vector); NaN where the weighted data hold a single class (no warning: this is
    the building block of the bootstrap, which counts such resamples instead).
    """
    ya, pa = _as_1d(y, "y"), _as_1d(p, "p")
    w = np.asarray(weights, dtype=np.float64)
    w = w[None, :] if w.ndim == 1 else w
    if w.ndim != 2 or w.shape[1] != ya.size or pa.size != ya.size:
        raise ValueError(f"weights must be [N] or [B, N] with N = {ya.size}, got {np.shape(weights)}")
    if (w < 0).any():
        raise ValueError("weights must be non-negative")
    keep = ~np.isnan(ya)
    ym, pm = _masked(ya, pa, "weighted_auc")
    idx = np.arange(ym.size, dtype=np.int64)
    m_pos, m_neg = _group_matrices(ym, pm, idx, ym.size)
    wk = w[:, keep]
    return _auc_from_group_weights(np.asarray(wk @ m_pos), np.asarray(wk @ m_neg))
