"""Label vocabulary and the uncertainty policies of the paper (each reader owns its dataset's spellings).

Raw labels follow the CheXpert convention: 1 positive, 0 negative, -1 uncertain, NaN blank (not mentioned).
A policy turns them into training targets in {0, 1, NaN}, where NaN means "masked out of loss and metrics".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd

Policy = Literal["ones", "zeros", "ignore"]
BlankPolicy = Literal["zeros", "ignore"]

#: The five findings of the paper, in the order of its label list.
PAPER_LABELS: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")

#: The paper's U-Ones / U-Zeroes assignment.
PAPER_UNCERTAINTY: dict[str, Policy] = {
    "Atelectasis": "ones",
    "Cardiomegaly": "zeros",
    "Consolidation": "zeros",
    "Edema": "ones",
    "Pleural Effusion": "ones",
}

RAW_VALUES = frozenset({1.0, 0.0, -1.0})

#: The 14 observations of the CheXpert labeler (Irvin et al. 2019), the label columns of CheXpert, MIMIC-CXR-JPG
#: and BRAX. A study label outside them is not recorded by those datasets (NaN), never a missing column.
CHEXPERT_OBSERVATIONS: frozenset[str] = frozenset({
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
})  # fmt: skip


def raw_column(label: str) -> str:
    """Manifest column holding the raw {1, 0, -1, NaN} value of ``label``."""
    return f"raw_{label}"


def apply_policy(raw: np.ndarray | pd.Series, policy: Policy, blank: BlankPolicy) -> np.ndarray:
    """Map raw values {1, 0, -1, NaN} to targets {1, 0, NaN}.

    Args:
        raw: raw labels; NaN means the report did not mention the finding.
        policy: what an uncertain (-1) label becomes: 1, 0 or NaN (``ignore``).
        blank: what a blank (NaN) label becomes: 0 or NaN (``ignore``).
    """
    values = np.asarray(raw, dtype=np.float64)
    out = values.copy()
    out[values == -1.0] = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[policy]
    out[np.isnan(values)] = 0.0 if blank == "zeros" else np.nan
    return out


def apply_policies(
    frame: pd.DataFrame, labels: list[str], uncertainty: Mapping[str, Policy], blank: BlankPolicy
) -> pd.DataFrame:
    """Add one target column per label (named as the label) computed from its ``raw_<label>`` column."""
    out = frame.copy()
    for label in labels:
        out[label] = apply_policy(out[raw_column(label)], uncertainty.get(label, "zeros"), blank)
    return out


#: Findings that public datasets label beyond the CheXpert observations (NIH ChestX-ray14's, in study spelling).
OTHER_FINDINGS: frozenset[str] = frozenset({
    "Infiltration", "Mass", "Nodule", "Emphysema", "Fibrosis", "Hernia", "Pleural Thickening",
})  # fmt: skip

#: Other names of a study label, as datasets and published models write them (compared as :func:`label_key`).
LABEL_SYNONYMS: dict[str, str] = {
    "Effusion": "Pleural Effusion",  # NIH ChestX-ray14, and the models trained on it (``prob_Effusion``)
}


def label_key(name: str) -> str:
    """The comparison form of a label name: case, underscores and repeated spaces do not matter."""
    return " ".join(str(name).replace("_", " ").split()).casefold()


_CANONICAL: dict[str, str] = {
    **{label_key(name): name for name in (*CHEXPERT_OBSERVATIONS, *OTHER_FINDINGS, *PAPER_LABELS)},
    **{label_key(name): label for name, label in LABEL_SYNONYMS.items()},
}


def canonical_label(name: str) -> str:
    """The study's spelling of a label name from any file: ``Effusion``, ``pleural_effusion`` and ``Pleural
    Effusion`` are all ``Pleural Effusion``; ``Pleural_Thickening`` is ``Pleural Thickening``. A name the vocabulary
    does not know is returned stripped, as written."""
    return _CANONICAL.get(label_key(name), str(name).strip())
