"""How a bootstrap p-value is shown: never "0", which B resamples cannot show.

A p estimated as a share of B bootstrap resamples is 0 whenever no resample fell on the other side; the truth is
only below the resolution 1/B, so it is shown as ``< 1/B`` (``< 0.001`` for B = 1000). Analytic p-values (Wald,
DeLong) are formatted elsewhere.
"""

from __future__ import annotations

import math

__all__ = ["bootstrap_p_text"]


def bootstrap_p_text(p: float, n_boot: int) -> str:
    """``p`` of ``n_boot`` resamples as text: "" when NaN, ``< 1/B`` when 0, else 3 decimals (1.2e-04 below 0.001)."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    if p <= 0.0:
        return f"< {1.0 / n_boot:g}"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"
