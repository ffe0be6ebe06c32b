"""Named synthetic worlds: the shipped hospitals, or the same hospitals with one planted change (issue 24).

A label-free performance estimate is only worth as much as the worlds it was checked in, so each world plants
one change that some estimator is known to miss (Flühmann et al. 2025):

* ``shipped`` -- the hospitals as :mod:`.hospitals` and :mod:`.more_sites` define them (the default; its bytes
  never change).
* ``control`` -- ``shipped`` without the device shortcut: pacemakers as frequent with Cardiomegaly as without
  (``write_synthetic(shortcut=False)``, ``--no-shortcut``).
* ``reversed`` -- the shortcut turned round: at the NIH-like site the two pacemaker rates swap, so pacemakers
  come with the *absence* of Cardiomegaly (2 % of Cardiomegaly studies, 80 % of the rest). A model trained in
  ``shipped`` and tested here fails while looking confident: the hardest world.
* ``prevalence`` -- a pure label shift: every drawn finding at :data:`HOME_PREVALENCE` (10 %) at every hospital
  but :data:`AWAY` (MIMIC-like, 40 %, its test split too), with one equipment, one reporting habit and no
  shortcut everywhere, so only the labels' frequencies move.
* ``acquisition`` -- a pure image shift: the same hospitals as ``prevalence`` with 10 % everywhere, but the
  :data:`AWAY` hospital's equipment changed sharply (:data:`CHANGED_EQUIPMENT`: contrast curve, window, noise,
  blur, resolution, marker, collimation).

In both planted-shift worlds the home hospitals are identical (same seed, same bytes), so one model trained at
home tests in both. :data:`AWAY` is MIMIC-like in every layout: in the six-hospital leave-one-out study the fold
that holds MIMIC out carries the shift, and the five others are folds without it (MIMIC then sits in training).
Only :class:`~.hospitals.Hospital` parameters change: seeds, file layouts and counts stay each hospital's.
"""

from __future__ import annotations

import dataclasses

from cxrgen.synthetic.hospitals import Hospital
from cxrgen.synthetic.phantom import DRAWN_FINDINGS, Acquisition

WORLDS: tuple[str, ...] = ("shipped", "control", "prevalence", "acquisition", "reversed")
#: The worlds where every hospital shares one population and reporting habit, and one thing is planted.
PLANTED: tuple[str, ...] = ("prevalence", "acquisition")
#: The away (external) hospital of the planted worlds, in every layout.
AWAY = "mimic"
HOME_PREVALENCE = 0.10
AWAY_PREVALENCE = 0.40
#: Every hospital's equipment in ``prevalence``, and the home hospitals' in ``acquisition``: middle of the sites'.
REFERENCE_EQUIPMENT = Acquisition(
    gamma=1.0, window=(-0.05, 1.8), noise=0.03, blur=1.0, resolution=0.8,
    marker="L", marker_corner="tl", collimation=0.05, collimation_value=0.0,
)  # fmt: skip
#: The away hospital's equipment in ``acquisition``: brighter lungs, narrower window, triple noise, more than
#: double blur, about half the detector resolution, another marker and white collimation.
CHANGED_EQUIPMENT = Acquisition(
    gamma=0.5, window=(0.15, 1.45), noise=0.09, blur=2.6, resolution=0.45,
    marker="R", marker_corner="br", collimation=0.12, collimation_value=1.0,
)  # fmt: skip


def _everywhere(value: float) -> dict[str, float]:
    return dict.fromkeys(DRAWN_FINDINGS, value)


def _common(hospital: Hospital, prevalence: float, equipment: Acquisition) -> Hospital:
    """The hospital with the planted worlds' shared population, reporting and (given) equipment.

    Kept: its name and seeds, its file layout, a binary labeler's yes/no and how often absent findings are
    written as 0 rather than left blank. Shared: no hedged labels, no laterals (the NIH layout has none), one
    co-occurrence, sign strength, miss rate, effusion shape, AP share and pacemaker rate (no shortcut).
    """
    return dataclasses.replace(
        hospital, prevalence=_everywhere(prevalence), uncertain=_everywhere(0.0), cluster=0.3, acquisition=equipment,
        sign={}, missed=0.05, device_rate=0.05, device_with_cardiomegaly=0.05, meniscus=0.25, ap_rate=0.5,
        lateral_rate=0.0,
    )  # fmt: skip


def check_world(world: str) -> str:
    """``world`` if it is one of :data:`WORLDS`, else a ValueError naming them."""
    if world not in WORLDS:
        raise ValueError(f"unknown synthetic world {world!r}; use one of {', '.join(WORLDS)}")
    return world


def in_world(hospital: Hospital, world: str) -> Hospital:
    """The hospital as it is in ``world`` (the module docstring says what each world changes)."""
    if check_world(world) == "shipped":
        return hospital
    if world == "control":
        return dataclasses.replace(hospital, device_with_cardiomegaly=hospital.device_rate)
    if world == "reversed":
        return dataclasses.replace(
            hospital, device_rate=hospital.device_with_cardiomegaly, device_with_cardiomegaly=hospital.device_rate
        )
    away = hospital.name == AWAY
    if world == "prevalence":
        return _common(hospital, AWAY_PREVALENCE if away else HOME_PREVALENCE, REFERENCE_EQUIPMENT)
    return _common(hospital, HOME_PREVALENCE, CHANGED_EQUIPMENT if away else REFERENCE_EQUIPMENT)


def enriched_prevalence(hospital: Hospital, world: str, shipped: dict[str, float]) -> dict[str, float]:
    """An enriched test split's prevalence (MIMIC-like): ``shipped``'s, but the hospital's own in a planted world."""
    return dict(in_world(hospital, world).prevalence) if world in PLANTED else shipped
