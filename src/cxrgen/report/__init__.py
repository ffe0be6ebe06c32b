"""The study report: Table 1, comparisons, figures, error review and a self-contained ``report.html``.

``build_report(study_dir)`` reads a study directory (config, manifest, splits, every predictions file under
``runs/``) and writes ``study_dir/results/``. Statistics come from :mod:`cxrgen.metrics` and
:mod:`cxrgen.metrics.evaluate`; this package arranges, tests and draws them.
"""

from cxrgen.report.build import build_report

__all__ = ["build_report"]
