"""The device shortcut: do negatives with a device get called positive more often than negatives without?

If a pacemaker stands in for Cardiomegaly (the paper's own remark, Zech et al. 2018 for confounders in
general), a model's false-positive rate among true negatives rises when a device is present. Both rates come
from the same patient resamples, so their difference has a paired, patient-clustered interval; an interval
above 0 is a detected shortcut. With fewer than :data:`MIN_NEGATIVES` negatives on either side the rates are
still given but the verdict is "too few": a bootstrap of a handful of images gives
intervals that look certain and are not. Without a threshold (NaN: the validation set lacked a class) nothing
is computed: the rates are NaN and the status "no threshold", never a rate of 0 and "not detected".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from cxrgen.shift.operating_points import NO_THRESHOLD
from cxrgen.shift.ratios import bootstrap_ratios, percentile_interval

#: Negatives needed on each side (with a device, without) before a shortcut is called detected or not.
MIN_NEGATIVES = 10


@dataclass(frozen=True)
class ShortcutResult:
    """False-positive rates among negatives with and without a device at one threshold.

    Attributes:
        fpr_device, fpr_no_device, difference: ``(value, ci_low, ci_high)``; NaN when a group has no negative.
        n_neg_device, n_neg_no_device: Negative images in each group.
        threshold: The threshold applied; NaN when none could be chosen.
    """

    fpr_device: tuple[float, float, float]
    fpr_no_device: tuple[float, float, float]
    difference: tuple[float, float, float]
    n_neg_device: int
    n_neg_no_device: int
    threshold: float

    @property
    def status(self) -> str:
        """``ok``; ``no threshold`` when the threshold is NaN; ``too few`` when either group has fewer than
        :data:`MIN_NEGATIVES` negatives."""
        if math.isnan(self.threshold):
            return NO_THRESHOLD
        return "ok" if min(self.n_neg_device, self.n_neg_no_device) >= MIN_NEGATIVES else "too few"

    @property
    def detected(self) -> bool:
        """The interval of the difference lies above 0, with enough negatives on both sides."""
        low = self.difference[1]
        return self.status == "ok" and not math.isnan(low) and low > 0


def device_shortcut(
    y: ArrayLike,
    p: ArrayLike,
    device: ArrayLike,
    groups: ArrayLike,
    threshold: float,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> ShortcutResult:
    """FPR (``p >= threshold`` among ``y == 0``) with a device vs without, and their paired difference.

    Args:
        y: Truth [N] in {0, 1, NaN}.
        p: Probabilities [N].
        device: 1 device present, 0 absent, NaN unknown [N]; unknown images are left out.
        groups: Patient id per image [N].
        threshold: The operating threshold (chosen at home); NaN gives NaN rates and status "no threshold".
        n_boot: Patient-bootstrap resamples (>= 1).
        seed: Bootstrap seed.
        ci: Confidence level.
    """
    ya = np.asarray(y, dtype=np.float64)
    da = np.asarray(device, dtype=np.float64)
    keep = (ya == 0) & ~np.isnan(da)
    pred = (np.asarray(p, dtype=np.float64) >= threshold)[keep]
    with_device = da[keep] == 1
    if math.isnan(threshold):  # "p >= NaN" is False everywhere: a false-positive rate of 0 that nobody measured
        nan3 = (math.nan, math.nan, math.nan)
        return ShortcutResult(nan3, nan3, nan3, int(with_device.sum()), int((~with_device).sum()), threshold)
    boot = bootstrap_ratios(
        np.vstack([pred & with_device, pred & ~with_device]), np.vstack([with_device, ~with_device]),
        np.asarray(groups)[keep], n_boot=n_boot, seed=seed,
    )  # fmt: skip
    diff_samples = boot.samples[:, [0]] - boot.samples[:, [1]]
    lo, hi = boot.interval(ci)
    d_lo, d_hi = percentile_interval(diff_samples, ci)
    point = boot.point
    difference = (float(point[0] - point[1]), float(d_lo[0]), float(d_hi[0]))
    return ShortcutResult(
        (float(point[0]), float(lo[0]), float(hi[0])),
        (float(point[1]), float(lo[1]), float(hi[1])),
        difference,
        int(with_device.sum()),
        int((~with_device).sum()),
        float(threshold),
    )
