"""Learning: the Lightning module, the run driver (train, resume, DDP), prediction, checkpoints, embeddings and
linear probes.

May import every wing before it in the flow (utils, sources, images, models, study, data, metrics); knows no report
and no runner.
"""
