"""Data: the manifest, the patient-level splits, cohort tables, checks, verify, the preprocess-once cache and the
torch loaders over it.

May import ``cxrgen.utils``, ``cxrgen.sources``, ``cxrgen.images``, ``cxrgen.study`` and the model's input
normalization; knows no model, training or report.
"""
