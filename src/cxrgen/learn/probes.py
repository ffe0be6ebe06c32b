"""Linear probes on frozen embeddings: per label a scikit-learn logistic regression, C chosen on validation AUC.

Pure functions on numpy arrays (no torch): features are standardized with the training rows' mean and scale
(``StandardScaler``) so one grid of C means the same for every backbone, then ``LogisticRegression`` (L2, lbfgs)
is fitted on the training rows for each C of the grid; the C with the highest validation AUC wins (the smallest
such C on ties: the strongest regularization that does as well), like early stopping on validation AUC picks a
CNN's checkpoint. Rows whose target is NaN (masked by the label policy) are left out of that label's fit and
its validation AUC.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

log = logging.getLogger(__name__)


@dataclass
class LabelProbe:
    """The probe of one label.

    Attributes:
        label: The label name.
        C: The chosen inverse regularization strength (NaN when no model could be fitted).
        val_auc: C -> validation AUC (NaN when the validation rows hold one class).
        model: The fitted scaler + logistic regression, or None when the training rows hold one class.
        prevalence: Share of positives among the training rows: the constant prediction when ``model`` is None.
    """

    label: str
    C: float
    val_auc: dict[float, float] = field(default_factory=dict)
    model: Pipeline | None = None
    prevalence: float = float("nan")

    def predict(self, features: np.ndarray) -> np.ndarray:
        """P(label) float64 [N] for float features [N, D]."""
        if self.model is None:
            return np.full(len(features), self.prevalence, dtype=np.float64)
        return np.asarray(self.model.predict_proba(np.asarray(features, dtype=np.float32))[:, 1], dtype=np.float64)


def make_probe(C: float, class_weight: str | None, max_iter: int, seed: int) -> Pipeline:
    """The unfitted estimator of one label and one C."""
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, class_weight=class_weight, max_iter=max_iter, random_state=seed),
    )


def fit_label_probe(
    label: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    Cs: Sequence[float],
    *,
    class_weight: str | None = None,
    max_iter: int = 1000,
    seed: int = 0,
) -> LabelProbe:
    """Fit one label's probe for every C and keep the one with the best validation AUC.

    Args:
        label: Its name (for messages).
        x_train, x_val: Features [n, D] (any float dtype; fitted in float32).
        y_train, y_val: Targets [n] in {0, 1, NaN}; NaN rows are left out.
        Cs: The grid of inverse regularization strengths.
        class_weight: ``"balanced"`` or None, passed to ``LogisticRegression``.
        max_iter: lbfgs iterations.
        seed: ``random_state`` of the regression.

    Returns:
        The probe. With one class among the training rows it predicts the training prevalence, with a warning;
        with one class among the validation rows the middle C of the grid is used, with a warning.
    """
    keep = ~np.isnan(y_train)
    xt, yt = np.asarray(x_train[keep], dtype=np.float32), y_train[keep].astype(int)
    prevalence = float(yt.mean()) if len(yt) else float("nan")
    if len(np.unique(yt)) < 2:
        warnings.warn(
            f"probe {label}: training rows hold one class ({len(yt)} rows); predicting the prevalence",
            RuntimeWarning,
            stacklevel=2,
        )
        return LabelProbe(label, float("nan"), model=None, prevalence=prevalence if len(yt) else 0.0)
    keep_val = ~np.isnan(y_val)
    xv, yv = np.asarray(x_val[keep_val], dtype=np.float32), y_val[keep_val].astype(int)
    grid = sorted(float(c) for c in Cs)
    scores: dict[float, float] = {}
    models: dict[float, Pipeline] = {}
    for C in grid:
        models[C] = make_probe(C, class_weight, max_iter, seed).fit(xt, yt)
        scores[C] = float(roc_auc_score(yv, models[C].predict_proba(xv)[:, 1])) if len(np.unique(yv)) == 2 else np.nan
    if all(np.isnan(v) for v in scores.values()):
        chosen = grid[len(grid) // 2]
        warnings.warn(
            f"probe {label}: validation rows hold one class; C = {chosen} (middle of the grid) without selection",
            RuntimeWarning,
            stacklevel=2,
        )
    else:
        best = max(v for v in scores.values() if not np.isnan(v))
        chosen = next(C for C in grid if scores[C] == best)
    return LabelProbe(label, chosen, scores, models[chosen], prevalence)


def fit_probes(
    labels: Sequence[str],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    Cs: Sequence[float],
    *,
    class_weight: str | None = None,
    max_iter: int = 1000,
    seed: int = 0,
) -> list[LabelProbe]:
    """One probe per label; ``y_*`` are [n, L] in {0, 1, NaN} with columns in ``labels`` order."""
    return [
        fit_label_probe(
            label, x_train, y_train[:, j], x_val, y_val[:, j], Cs,
            class_weight=class_weight, max_iter=max_iter, seed=seed,
        )
        for j, label in enumerate(labels)
    ]


def predict_probes(probes: Sequence[LabelProbe], features: np.ndarray) -> np.ndarray:
    """Probabilities float64 [N, L] in [0, 1], one column per probe."""
    return np.stack([probe.predict(features) for probe in probes], axis=1)
