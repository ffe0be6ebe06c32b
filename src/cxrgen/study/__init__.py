"""The study: the study file as typed models, the study folder's layout, and the ``Study`` object that carries both.

May import ``cxrgen.utils``, ``cxrgen.errors``, ``cxrgen.sources`` (readers' option models) and the model
registry's static facts; imports no torch, so a study opens before torch is imported.
"""
