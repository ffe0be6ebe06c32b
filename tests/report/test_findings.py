"""The claims' verdicts: "architectures perform alike" decided by equivalence (TOST) before significance (issue 27)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pandas as pd
import pytest
from scipy.stats import norm

from cxrgen.report.findings import EQUIVALENCE_MARGIN, findings


def tost_p(diff: float, se: float, margin: float = EQUIVALENCE_MARGIN) -> float:
    """Schuirmann's two one-sided z tests of H0: diff <= -margin and H0: diff >= margin; the larger p decides."""
    return max(float(norm.sf((diff + margin) / se)), float(norm.cdf((diff - margin) / se)))


def _architectures(rows: list[tuple[float, float]]) -> pd.DataFrame:
    out = []
    for i, (diff, se) in enumerate(rows):
        p = float(2 * norm.sf(abs(diff) / se))  # the comparison's Wald p (one test per label here: Holm = p)
        out.append({"family": "architectures", "configuration_a": "both", "configuration_b": "both",
                    "arch_a": "densenet121", "arch_b": "inception_resnet_v2", "test_set_a": "gamma",
                    "test_set_b": "gamma", "label": f"L{i}", "difference": diff, "se": se,
                    "ci_low": diff - 1.96 * se, "ci_high": diff + 1.96 * se, "p_holm": p})
    return pd.DataFrame(out)


@pytest.mark.parametrize(
    ("diff", "se", "verdict"),
    [
        (0.008, 0.003, "supported"),  # significant (p = 0.008) but the 90 % interval is inside +-0.02: equivalent
        (0.008, 0.0065, "supported"),  # the 95 % interval reaches 0.0207, the 90 % one stops at 0.0187
        (0.030, 0.005, "contradicted"),  # outside the margin and significant
        (0.005, 0.020, "inconclusive"),  # neither
    ],
)
def test_equivalence_is_decided_on_the_90_percent_interval_before_significance(
    diff: float, se: float, verdict: str
) -> None:
    config = cast(Any, SimpleNamespace(reference=None))
    table = findings(config, _architectures([(diff, se)]), pd.DataFrame(columns=["note"]))
    row = table.iloc[0]
    p_two_sided = 2 * norm.sf(abs(diff) / se)
    expected = ("supported" if tost_p(diff, se) <= 0.05
                else "contradicted" if p_two_sided <= 0.05 else "inconclusive")  # fmt: skip
    assert expected == verdict  # the case is what its comment says, by the reference tests
    assert row["claim"] == "architectures_alike" and row["verdict"] == verdict
