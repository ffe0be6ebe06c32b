from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrgen.sources.labels import PAPER_UNCERTAINTY, apply_policies, apply_policy

RAW = np.array([1.0, 0.0, -1.0, np.nan])


@pytest.mark.parametrize(
    ("policy", "blank", "expected"),
    [
        ("ones", "zeros", [1, 0, 1, 0]),
        ("zeros", "zeros", [1, 0, 0, 0]),
        ("ignore", "zeros", [1, 0, np.nan, 0]),
        ("ones", "ignore", [1, 0, 1, np.nan]),
        ("zeros", "ignore", [1, 0, 0, np.nan]),
        ("ignore", "ignore", [1, 0, np.nan, np.nan]),
    ],
)
def test_every_policy(policy: str, blank: str, expected: list[float]) -> None:
    np.testing.assert_array_equal(apply_policy(RAW, policy, blank), expected)  # type: ignore[arg-type]


def test_paper_policies_per_label() -> None:
    frame = pd.DataFrame({f"raw_{label}": RAW for label in PAPER_UNCERTAINTY})
    out = apply_policies(frame, list(PAPER_UNCERTAINTY), PAPER_UNCERTAINTY, "zeros")
    np.testing.assert_array_equal(out["Atelectasis"], [1, 0, 1, 0])  # U-Ones
    np.testing.assert_array_equal(out["Cardiomegaly"], [1, 0, 0, 0])  # U-Zeroes
    np.testing.assert_array_equal(out["raw_Edema"], RAW)  # raw values kept


def test_each_reader_registers_its_own_spellings() -> None:
    from cxrgen.sources import get_reader

    assert get_reader("nih").spelling("Pleural Effusion") == "Effusion"
    assert get_reader("vindr").spelling("Pleural Effusion") == "Pleural effusion"
    assert get_reader("chexpert").spelling("Pleural Effusion") == "Pleural Effusion"


def test_label_vocabulary_gives_the_study_spelling() -> None:
    from cxrgen.sources.labels import canonical_label

    assert canonical_label("Effusion") == canonical_label("pleural_effusion") == "Pleural Effusion"
    assert canonical_label("Pleural_Thickening") == "Pleural Thickening"
    assert canonical_label(" Cardiomegaly ") == "Cardiomegaly" and canonical_label("Lung Scar") == "Lung Scar"
