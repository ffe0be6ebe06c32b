"""How far a target hospital's images sit from the home validation images, from embeddings alone (issue 24).

The distance is a domain classifier's cross-validated AUC: a logistic regression on standardized features learns
to tell target images from home images, and its out-of-fold scores are ranked (0.5: the two sets cannot be told
apart; 1: every target image is recognizable). It needs no label and has the AUC's scale, so one threshold means
the same for any backbone and feature width. Folds keep a patient's images together (scikit-learn's
``StratifiedGroupKFold``), so a patient seen in training cannot be recognized in its own fold.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

#: Folds of the domain classifier; each side needs at least this many patients.
FOLDS = 5
#: Images drawn from each side at most (seeded): the classifier's cost stays bounded on large hospitals.
MAX_PER_SIDE = 2000
#: Inverse regularization: strong, because features are many and images few; separable sets still separate.
C = 0.1


def domain_auc(
    home: ArrayLike,
    target: ArrayLike,
    home_groups: ArrayLike | None = None,
    target_groups: ArrayLike | None = None,
    *,
    seed: int = 0,
) -> tuple[float, str]:
    """Cross-validated AUC of telling ``target`` from ``home`` features; ``(NaN, reason)`` when undefined.

    Args:
        home: Home validation embeddings [M, D].
        target: Target embeddings [N, D].
        home_groups: Patient id per home image [M] (None: each image its own patient).
        target_groups: Patient id per target image [N].
        seed: Draws the subsample and shuffles the folds.

    Returns:
        (AUC, "") or (NaN, why).
    """
    h, t = np.asarray(home, dtype=np.float64), np.asarray(target, dtype=np.float64)
    hg = np.arange(len(h)) if home_groups is None else np.asarray(home_groups)
    tg = np.arange(len(t)) if target_groups is None else np.asarray(target_groups)
    rng = np.random.default_rng(seed)
    keep_h = np.sort(rng.permutation(len(h))[:MAX_PER_SIDE])
    keep_t = np.sort(rng.permutation(len(t))[:MAX_PER_SIDE])
    h, hg, t, tg = h[keep_h], hg[keep_h], t[keep_t], tg[keep_t]
    patients = min(len(np.unique(hg)), len(np.unique(tg)))
    if patients < FOLDS:
        return math.nan, f"too few patients for {FOLDS} folds ({len(np.unique(hg))} home, {len(np.unique(tg))} target)"
    x = np.vstack([h, t])
    y = np.r_[np.zeros(len(h)), np.ones(len(t))]
    groups = np.r_[[f"h:{g}" for g in hg], [f"t:{g}" for g in tg]]  # a home and a target id never merge
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))
    cv = StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, x, y, groups=groups, cv=cv, method="decision_function")
    return float(roc_auc_score(y, scores)), ""


__all__ = ["FOLDS", "domain_auc"]
