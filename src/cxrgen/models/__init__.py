"""Models: the architecture registry (static facts; timm imported only to build), the model's input
normalization, and saliency (Grad-CAM).

May import ``cxrgen.utils``, ``cxrgen.errors`` and ``cxrgen.sources.labels``; knows no study file.
"""
