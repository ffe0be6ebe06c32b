"""Images: decode (PNG, JPEG, 16-bit PNG, DICOM), CLAHE (exact and fast), resize, and the torch engine.

May import ``cxrgen.utils`` and ``cxrgen.errors``; knows no study file, dataset, model or report.
"""
