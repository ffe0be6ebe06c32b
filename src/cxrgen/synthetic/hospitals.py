"""Three synthetic hospitals: who their patients are, what their reports say, how their films look.

Each hospital differs from the others the ways real sites do: label prevalence and co-occurrence, how often
reports hedge (uncertain labels) or stay silent (blank labels), acquisition (contrast curve, noise, blur,
detector resolution, laterality markers, collimation) and one shortcut: at the NIH-like hospital a pacemaker
accompanies most cardiomegaly cases and the heart sign is weaker, so a model trained there learns to look at
the device, which stops paying at the other hospitals. Everything here is metadata; pixels come from
:mod:`cxrgen.synthetic.phantom`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from cxrgen.synthetic.phantom import DRAWN_FINDINGS, Acquisition

#: CheXpert's 14 observations in the column order of its CSV (MIMIC orders the same names alphabetically).
CHEXPERT_OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

# Findings that are labelled but not drawn, with their prevalence; they make the label files look real.
_UNDRAWN = {"Lung Lesion": 0.04, "Pneumothorax": 0.05, "Pleural Other": 0.015, "Fracture": 0.03}


@dataclass(frozen=True)
class Hospital:
    """One site's population, reporting habits and equipment.

    Attributes:
        name: dataset key (``chexpert``, ``nih``, ``mimic``); also seeds its images.
        code: a small integer mixed into every seed of this hospital.
        prevalence: drawn finding -> P(present) per study.
        uncertain: drawn finding -> P(report hedges | present); 0 everywhere for a binary labeler.
        negated: drawn finding -> P(report explicitly denies | absent); the rest stay blank.
        cluster: correlation of the heart-failure findings (Cardiomegaly, Edema, Pleural Effusion).
        sign: drawn finding -> multiplier of the sign strength of a positive case.
        missed: P(a positive label whose image shows no sign): labeler and reader noise.
        device_rate: P(pacemaker) for studies without cardiomegaly.
        device_with_cardiomegaly: P(pacemaker | cardiomegaly); equal to ``device_rate`` except at the
            shortcut hospital.
        meniscus: how far effusions climb the lateral wall (low where supine AP films dominate).
        ap_rate: P(frontal view is AP) rather than PA.
        lateral_rate: P(a study also has a lateral view).
        binary: the labeler says only yes or no (NIH): no hedges, no blanks.
        acquisition: the equipment.
    """

    name: str
    code: int
    prevalence: dict[str, float]
    uncertain: dict[str, float]
    negated: dict[str, float]
    cluster: float
    acquisition: Acquisition
    sign: dict[str, float] = field(default_factory=dict)
    missed: float = 0.05
    device_rate: float = 0.05
    device_with_cardiomegaly: float = 0.05
    meniscus: float = 0.25
    ap_rate: float = 0.5
    lateral_rate: float = 0.3
    binary: bool = False


def _per_label(*values: float) -> dict[str, float]:
    return dict(zip(DRAWN_FINDINGS, values, strict=True))


HOSPITALS: dict[str, Hospital] = {
    "chexpert": Hospital(
        name="chexpert",
        code=1,
        prevalence=_per_label(0.24, 0.16, 0.12, 0.24, 0.32),
        uncertain=_per_label(0.45, 0.2, 0.4, 0.2, 0.15),
        negated=_per_label(0.03, 0.12, 0.12, 0.1, 0.18),
        cluster=0.35,
        acquisition=Acquisition(
            gamma=1.3, window=(-0.05, 1.75), noise=0.045, blur=0.4, resolution=1.0,
            marker="L", marker_corner="tr", collimation=0.05, collimation_value=0.0,
        ),
        missed=0.06,
        device_rate=0.06,
        device_with_cardiomegaly=0.06,
        meniscus=0.3,
        ap_rate=0.65,
        lateral_rate=0.35,
    ),
    "nih": Hospital(
        name="nih",
        code=2,
        prevalence=_per_label(0.16, 0.14, 0.1, 0.1, 0.2),
        uncertain=_per_label(0.0, 0.0, 0.0, 0.0, 0.0),
        negated=_per_label(1.0, 1.0, 1.0, 1.0, 1.0),
        cluster=0.15,
        acquisition=Acquisition(
            gamma=0.75, window=(0.0, 1.6), noise=0.008, blur=1.6, resolution=0.6,
            marker="R", marker_corner="tl", collimation=0.08, collimation_value=1.0,
        ),
        sign={"Cardiomegaly": 0.7},
        missed=0.04,
        device_rate=0.02,
        device_with_cardiomegaly=0.8,
        meniscus=0.35,
        ap_rate=0.4,
        lateral_rate=0.0,
        binary=True,
    ),
    "mimic": Hospital(
        name="mimic",
        code=3,
        prevalence=_per_label(0.2, 0.15, 0.07, 0.18, 0.24),
        uncertain=_per_label(0.3, 0.15, 0.3, 0.3, 0.1),
        negated=_per_label(0.1, 0.25, 0.2, 0.2, 0.3),
        cluster=0.5,
        acquisition=Acquisition(
            gamma=1.0, window=(-0.1, 1.9), noise=0.035, blur=1.3, resolution=0.75,
            marker="L", marker_corner="tl", collimation=0.06, collimation_value=0.85,
        ),
        missed=0.06,
        device_rate=0.08,
        device_with_cardiomegaly=0.08,
        meniscus=0.1,
        ap_rate=0.55,
        lateral_rate=0.6,
    ),
}

#: The MIMIC-like test split is enriched for findings, as the real one is (26-33 % positives).
MIMIC_TEST_PREVALENCE: dict[str, float] = _per_label(0.26, 0.25, 0.1, 0.27, 0.33)


@dataclass(frozen=True)
class ImageSpec:
    """One image to render. ``index`` numbers the hospital's images and seeds this one's pixels."""

    index: int
    view: str  # PA, AP, LATERAL or LL

    @property
    def frontal(self) -> bool:
        return self.view in ("PA", "AP")


@dataclass(frozen=True)
class StudySpec:
    """One study: its report's labels and the signs its images show.

    Attributes:
        number: 1-based position among the patient's studies (chronological).
        age: years at the study.
        raw: each of CheXpert's 14 observations -> 1.0, 0.0, -1.0 or NaN (not mentioned).
        signs: drawn finding -> sign strength in [0, 1] (see :mod:`cxrgen.synthetic.phantom`).
        truth: drawn finding -> 1 if a radiologist would call it present, for consensus labels.
        device: a pacemaker is in the images.
        images: the study's views.
    """

    number: int
    age: int
    raw: dict[str, float]
    signs: dict[str, float]
    truth: dict[str, int]
    device: bool
    images: tuple[ImageSpec, ...]


@dataclass(frozen=True)
class PatientSpec:
    """One patient: ``number`` is unique within the hospital; ``sex`` is Male, Female or Unknown."""

    number: int
    sex: str
    split: str
    studies: tuple[StudySpec, ...]


def _label_states(
    hospital: Hospital, prevalence: dict[str, float], rng: np.random.Generator
) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """Raw labels, sign strengths and truth of the drawn findings for one study (Gaussian copula)."""
    heart_failure = float(rng.standard_normal())
    shared = float(rng.standard_normal())
    raw: dict[str, float] = {}
    signs: dict[str, float] = {}
    truth: dict[str, int] = {}
    for label in DRAWN_FINDINGS:
        in_cluster = label in ("Cardiomegaly", "Edema", "Pleural Effusion")
        weight, factor = (hospital.cluster, heart_failure) if in_cluster else (0.2, shared)
        latent = math.sqrt(weight) * factor + math.sqrt(1.0 - weight) * float(rng.standard_normal())
        present = latent > NormalDist().inv_cdf(1.0 - prevalence[label])
        strength = 0.0
        if present and rng.random() < hospital.uncertain[label]:
            raw[label], strength = -1.0, float(rng.uniform(0.2, 0.45))
        elif present:
            raw[label] = 1.0
            strength = float(rng.uniform(0.6, 1.0)) * hospital.sign.get(label, 1.0)
            if rng.random() < hospital.missed:
                strength = 0.0
        else:
            raw[label] = 0.0 if rng.random() < hospital.negated[label] else math.nan
        signs[label] = strength
        truth[label] = int(strength >= 0.35)
    return raw, signs, truth


def _observations(
    drawn: dict[str, float], device: bool, rng: np.random.Generator, binary: bool
) -> dict[str, float]:
    """All 14 CheXpert observations from the drawn ones, with plausible companions (opacity, devices)."""
    raw = dict(drawn)
    card = drawn["Cardiomegaly"]
    raw["Enlarged Cardiomediastinum"] = (
        (-1.0 if rng.random() < 0.5 else 1.0) if card == 1.0 and rng.random() < 0.4 else math.nan
    )
    opacity = any(drawn[k] == 1.0 for k in ("Consolidation", "Edema", "Atelectasis"))
    raw["Lung Opacity"] = 1.0 if opacity and rng.random() < 0.6 else math.nan
    raw["Pneumonia"] = -1.0 if drawn["Consolidation"] != 0.0 and rng.random() < 0.4 else math.nan
    for label, rate in _UNDRAWN.items():
        raw[label] = 1.0 if rng.random() < rate else math.nan
    raw["Support Devices"] = 1.0 if device or rng.random() < 0.15 else math.nan
    if binary:
        raw = {k: 0.0 if math.isnan(v) else float(abs(v)) for k, v in raw.items()}
    abnormal = any(v in (1.0, -1.0) for k, v in raw.items() if k not in ("No Finding", "Support Devices"))
    raw["No Finding"] = (0.0 if binary else math.nan) if abnormal else 1.0
    return {name: raw[name] for name in CHEXPERT_OBSERVATIONS}


def sample_patients(
    hospital: Hospital,
    rng: np.random.Generator,
    n_patients: int,
    *,
    first_number: int = 1,
    first_image: int = 0,
    split: str = "",
    studies_mean: float = 2.0,
    prevalence: dict[str, float] | None = None,
    consensus: bool = False,
) -> list[PatientSpec]:
    """Patients with their studies, labels and views.

    Args:
        hospital: the site.
        rng: the hospital's metadata generator (images get their own seeds from ``ImageSpec.index``).
        n_patients: how many.
        first_number: number of the first patient; the rest follow.
        first_image: index of the first image; keeps image seeds unique across calls for one hospital.
        split: stored on each patient (the official split where the dataset ships one).
        studies_mean: mean studies per patient (1 + Poisson).
        prevalence: overrides the hospital's (an enriched test set).
        consensus: labels are a radiologists' 0/1 consensus (CheXpert ``valid.csv``): no blanks or hedges.
    """
    prevalence = prevalence or hospital.prevalence
    patients: list[PatientSpec] = []
    image = first_image
    for number in range(first_number, first_number + n_patients):
        sex = "Male" if rng.random() < 0.56 else "Female"
        if hospital.name == "chexpert" and rng.random() < 0.003:
            sex = "Unknown"
        age = int(18 + 72 * rng.beta(2.4, 1.5))
        studies: list[StudySpec] = []
        for study in range(1, 2 + int(rng.poisson(studies_mean - 1.0))):
            drawn, signs, truth = _label_states(hospital, prevalence, rng)
            device_rate = hospital.device_with_cardiomegaly if truth["Cardiomegaly"] else hospital.device_rate
            device = bool(rng.random() < device_rate)
            if consensus:
                drawn = {k: float(truth[k]) for k in DRAWN_FINDINGS}
            raw = _observations(drawn, device, rng, binary=consensus or hospital.binary)
            views = ["AP" if rng.random() < hospital.ap_rate else "PA"]
            if rng.random() < hospital.lateral_rate:
                views.append("LL" if rng.random() < 0.03 else "LATERAL")
            images = tuple(ImageSpec(image + i, view) for i, view in enumerate(views))
            image += len(images)
            studies.append(StudySpec(study, min(95, age), raw, signs, truth, device, images))
            age += int(rng.integers(0, 3))
        patients.append(PatientSpec(number, sex, split, tuple(studies)))
    return patients
