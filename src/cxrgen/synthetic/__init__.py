"""Synthetic hospitals: three small chest X-ray datasets in the native layouts of CheXpert, NIH and MIMIC.

Nobody can download the real datasets in a test or a demo, so :func:`write_synthetic` writes look-alikes whose
images carry label-dependent radiographic signs on a procedural phantom (:mod:`.phantom`), whose sites differ in
population, reporting and equipment, with a device shortcut at one site (:mod:`.hospitals`), and whose files
follow the shipped formats byte for byte (:mod:`.paper_sites`, :mod:`.more_sites`; both render through
:mod:`.render`, and :mod:`.write` puts any set of the six together). Named worlds (:mod:`.worlds`) plant one
change each (a prevalence shift, an acquisition shift, the shortcut removed or reversed) for checking estimators.
DESIGN.md sections 3 and 6 describe the contract.

Imports nothing else of cxrgen but :mod:`cxrgen.utils` (its files are written by the one atomic writer,
:func:`cxrgen.utils.fileio.write_bytes`): the synthetic world stays independent of the code it tests, and
imports no reader, no study code and no model.
"""

from cxrgen.synthetic.hospitals import HOSPITALS, Hospital
from cxrgen.synthetic.phantom import (
    DRAWN_FINDINGS,
    Acquisition,
    FrontalGeometry,
    cardiothoracic_ratio,
    frontal_geometry,
    frontal_masks,
)
from cxrgen.synthetic.write import write_synthetic

__all__ = [
    "DRAWN_FINDINGS",
    "HOSPITALS",
    "Acquisition",
    "FrontalGeometry",
    "Hospital",
    "cardiothoracic_ratio",
    "frontal_geometry",
    "frontal_masks",
    "write_synthetic",
]
