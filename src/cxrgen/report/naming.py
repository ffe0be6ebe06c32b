"""How the report names a model: linear probes say so, and probes on random weights say "random weights".

A probe fitted on a randomly initialized backbone (``pretrained: false``, as in tests and CI without downloadable
weights) measures what random features carry, not what a foundation model learned; every table and figure names
it that way so it is never mistaken for the foundation model's result.
"""

from __future__ import annotations

from cxrgen.study.config import ArchitectureSpec, StudyConfig

RANDOM_WEIGHTS = "random weights"


def is_random_probe(config: StudyConfig, arch: str) -> bool:
    """Whether ``arch`` is a linear probe on a backbone without pretrained weights."""
    entry = config.architecture_specs.get(arch)
    if not isinstance(entry, ArchitectureSpec) or entry.mode != "linear_probe":
        return False
    return not (config.train.pretrained if entry.pretrained is None else entry.pretrained)


def model_label(config: StudyConfig, arch: str) -> str:
    """``arch`` as printed: ``name (linear probe on <timm>, random weights)`` for probes, the bare name otherwise."""
    entry = config.architecture_specs.get(arch)
    if not isinstance(entry, ArchitectureSpec) or entry.mode != "linear_probe":
        return arch
    weights = f", {RANDOM_WEIGHTS}" if is_random_probe(config, arch) else ""
    return f"{arch} (linear probe on {entry.timm}{weights})"


def random_weights_note(config: StudyConfig) -> str:
    """A sentence for the report naming every random-weights probe, or "" when there is none.

    The tables that print ``auc.csv`` and ``comparisons.csv`` as they are show bare architecture names; this note
    says which of those names are random-weights probes.
    """
    names = [arch for arch in config.architectures if is_random_probe(config, arch)]
    if not names:
        return ""
    listed = ", ".join(names)
    return (
        f"{listed}: linear probe(s) on randomly initialized backbones ({RANDOM_WEIGHTS}, no pretrained features). "
        "Their AUCs measure what random features carry, not what a foundation model learned; every table below "
        "that names architectures by their bare name includes them under these names."
    )
