"""cxrgen: how far a chest X-ray classifier can be trusted outside the hospital that trained it.

The public Python API, for notebooks and scripts: the names in :data:`__all__`, imported from here
(``from cxrgen import clustered_bootstrap_auc``). They are loaded on first use, so ``import cxrgen`` stays light
(no pandas, no torch) for the commands that only read metadata. Every other module is internal and may move.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_PUBLIC = {
    "read_predictions": "cxrgen.metrics.evaluate",
    "auc_table": "cxrgen.metrics.evaluate",
    "compare_predictions": "cxrgen.metrics.evaluate",
    "roc_auc": "cxrgen.metrics.auc",
    "clustered_bootstrap_auc": "cxrgen.metrics.bootstrap",
    "delong": "cxrgen.metrics.delong",
    "holm": "cxrgen.metrics.delong",
    "pair_on_images": "cxrgen.metrics.pairing",
    "paired_clustered": "cxrgen.metrics.pairing",
    "choose_threshold": "cxrgen.shift.operating_points",
    "operating_point": "cxrgen.shift.operating_points",
    "random_effects": "cxrgen.metrics.meta_analysis",
    "next_hospital_table": "cxrgen.metrics.meta_analysis",
    "load_results": "cxrgen.report.results",
}
__all__ = [
    "auc_table",
    "choose_threshold",
    "clustered_bootstrap_auc",
    "compare_predictions",
    "delong",
    "holm",
    "load_results",
    "next_hospital_table",
    "operating_point",
    "pair_on_images",
    "paired_clustered",
    "random_effects",
    "read_predictions",
    "roc_auc",
]

if TYPE_CHECKING:
    from cxrgen.metrics.auc import roc_auc
    from cxrgen.metrics.bootstrap import clustered_bootstrap_auc
    from cxrgen.metrics.delong import delong, holm
    from cxrgen.metrics.evaluate import auc_table, compare_predictions, read_predictions
    from cxrgen.metrics.meta_analysis import next_hospital_table, random_effects
    from cxrgen.metrics.pairing import pair_on_images, paired_clustered
    from cxrgen.report.results import load_results
    from cxrgen.shift.operating_points import choose_threshold, operating_point


def __getattr__(name: str) -> Any:
    """PEP 562: a public name is imported from its module on first use."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'cxrgen' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]
