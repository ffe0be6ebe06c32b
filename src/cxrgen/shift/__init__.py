"""Shift-aware evaluation: what AUC cannot see at a new hospital (issue 11).

Pure functions on numpy arrays and pandas frames (no torch, no I/O): operating points chosen at home and
applied away (:mod:`.operating_points`), calibration and prevalence shift (:mod:`.calibration_shift`),
subgroups (:mod:`.subgroups`), the device shortcut (:mod:`.shortcut`), label protocols (:mod:`.protocols`)
and borderline errors against synthetic truth (:mod:`.borderline`). Every interval is patient-clustered and
drawn by :func:`cxrgen.metrics.patient_bootstrap_weights`. The one exception to "no I/O" is
:mod:`.label_files`, which re-reads MIMIC's other label files through the MIMIC reader.
"""
