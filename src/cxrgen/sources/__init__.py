"""Dataset readers: one module per dataset, each registering its reader in :mod:`cxrgen.sources.registry`.

A reader returns the manifest rows of DESIGN.md section 4 with raw labels (``raw_<label>`` in {1, 0, -1, NaN});
label policies and view filters are applied by :mod:`cxrgen.data.manifest`. Adding a dataset is one module that
calls :func:`register` with its options model, plus its name in the import line below.
"""

from __future__ import annotations

from cxrgen.sources import brax, chexpert, dicom_folder, mimic, nih, padchest, table, vindr
from cxrgen.sources.common import SourceError
from cxrgen.sources.registry import READERS, ReaderOptions, ReaderSpec, get_reader, register

__all__ = [
    "READERS", "ReaderOptions", "ReaderSpec", "SourceError", "brax", "chexpert", "dicom_folder", "get_reader", "mimic",
    "nih", "padchest", "register", "table", "vindr",
]
