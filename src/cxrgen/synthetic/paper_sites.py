"""The three paper sites in the native layouts of CheXpert, NIH ChestX-ray14 and MIMIC-CXR-JPG: their files and
image tasks.

The layouts are written by hand here, never by the project's readers, so reading them back tests the readers.
Each ``plan_*`` returns the site's metadata files (relative path -> bytes) and its :class:`~.render.RenderTask`
list; :func:`cxrgen.synthetic.write.write_synthetic` renders and writes them.
"""

from __future__ import annotations

import math

import numpy as np

from cxrgen.synthetic.hospitals import (
    CHEXPERT_OBSERVATIONS,
    HOSPITALS,
    MIMIC_TEST_PREVALENCE,
    PatientSpec,
    StudySpec,
    sample_patients,
)
from cxrgen.synthetic.phantom import DRAWN_FINDINGS
from cxrgen.synthetic.render import RenderTask, csv_text, gzip_bytes
from cxrgen.synthetic.worlds import enriched_prevalence, in_world

CHEXPERT_FOLDER = "CheXpert-v1.0-small"
CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_OBSERVATIONS]
NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Sex,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
MIMIC_PREFIX = "mimic-cxr-2.0.0"
MIMIC_LABEL_HEADER = ["subject_id", "study_id", *sorted(CHEXPERT_OBSERVATIONS)]
MIMIC_METADATA_HEADER = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]
MIMIC_SPLIT_HEADER = ["dicom_id", "study_id", "subject_id", "split"]
#: MIMIC-CXR-JPG 2.1.0's radiologist labels of the test-split studies: keyed by study only.
MIMIC_RADIOLOGIST_FILE = "mimic-cxr-2.1.0-test-set-labeled.csv"
MIMIC_RADIOLOGIST_HEADER = ["study_id", *sorted(CHEXPERT_OBSERVATIONS)]

# NIH spellings of the CheXpert observations it also labels; the rest have no NIH token.
_NIH_TOKENS = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Pleural Effusion": "Effusion",
    "Pneumothorax": "Pneumothorax",
    "Lung Lesion": "Nodule",
    "Pleural Other": "Pleural_Thickening",
}
# NIH findings the phantom does not draw, with their prevalence (labels only, for realistic label strings).
_NIH_EXTRA = {"Infiltration": 0.12, "Mass": 0.03, "Emphysema": 0.02, "Fibrosis": 0.015, "Hernia": 0.003}
# (width, height, pixel spacing as NIH writes it): the commonest original detector formats of the v2020 file.
_NIH_ORIGINALS = (
    (2500, 2048, "0.168"),
    (2992, 2991, "0.14300000000000002"),
    (3056, 2544, "0.139"),
    (2048, 2500, "0.171"),
    (2021, 2021, "0.19431099999999998"),
)
_NIH_PER_FOLDER = 500
_VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral", "LL": "left lateral"}


def _fmt(value: float) -> str:
    """CheXpert/MIMIC label spelling: ``1.0``, ``0.0``, ``-1.0`` or blank for NaN."""
    return "" if math.isnan(value) else f"{value:.1f}"


def _metadata_rng(seed: int, hospital: str) -> np.random.Generator:
    # Stream 0 of each hospital holds its metadata; images use (seed, code, index + 1).
    return np.random.default_rng(np.random.SeedSequence([seed, HOSPITALS[hospital].code, 0]))


def _count(base: int, scale: float) -> int:
    return max(3, round(base * scale))


def _task(path: str, hospital: str, index: int, view: str, patient: PatientSpec, study: int,
          shape: tuple[int, int], world: str, png: bool = False) -> RenderTask:
    spec = patient.studies[study]
    signs = tuple((k, spec.signs[k]) for k in DRAWN_FINDINGS if spec.signs[k] > 0)
    return RenderTask(path, hospital, index, view, signs, spec.device, shape, png, world)


def plan_chexpert(
    seed: int, scale: float, size: int, world: str = "shipped"
) -> tuple[dict[str, bytes], list[RenderTask]]:
    """``chexpert/CheXpert-v1.0-small/{train,valid}.csv`` and their images; valid patients follow train."""
    rng = _metadata_rng(seed, "chexpert")
    hospital = in_world(HOSPITALS["chexpert"], world)
    shape = (size, round(size * 1.2))  # CheXpert-small is landscape, about 390 x 320
    train = sample_patients(hospital, rng, _count(500, scale), studies_mean=2.2)
    valid = sample_patients(
        hospital, rng, _count(40, scale), first_number=len(train) + 1,
        first_image=sum(len(s.images) for p in train for s in p.studies), studies_mean=1.0, consensus=True,
    )
    files: dict[str, bytes] = {}
    tasks: list[RenderTask] = []
    for part, patients in (("train", train), ("valid", valid)):
        rows = []
        for patient in patients:
            for k, study in enumerate(patient.studies):
                for j, image in enumerate(study.images, start=1):
                    kind = "frontal" if image.frontal else "lateral"
                    folder = f"{CHEXPERT_FOLDER}/{part}/patient{patient.number:05d}/study{study.number}"
                    path = f"{folder}/view{j}_{kind}.jpg"
                    rows.append([
                        path, patient.sex, study.age, kind.capitalize(), image.view if image.frontal else "",
                        *(_fmt(study.raw[name]) for name in CHEXPERT_OBSERVATIONS),
                    ])
                    tasks.append(_task(f"chexpert/{path}", "chexpert", image.index, image.view, patient, k, shape,
                                       world))
        files[f"chexpert/{CHEXPERT_FOLDER}/{part}.csv"] = csv_text(CHEXPERT_HEADER, rows)
    return files, tasks


def plan_nih(seed: int, scale: float, size: int, world: str = "shipped") -> tuple[dict[str, bytes], list[RenderTask]]:
    """``nih/Data_Entry_2017_v2020.csv`` (official layout, every line ending in a comma), images, split lists.

    ``world="control"`` (or ``"reversed"``) changes only the pacemaker draws' rates (:mod:`.worlds`): every
    other draw is unchanged.
    """
    rng = _metadata_rng(seed, "nih")
    site = in_world(HOSPITALS["nih"], world)
    patients = sample_patients(site, rng, _count(400, scale), studies_mean=3.0)
    test = set(rng.permutation([p.number for p in patients])[: max(1, round(0.23 * len(patients)))].tolist())
    entries = []
    for patient in patients:
        for k, study in enumerate(patient.studies):
            tokens = [_NIH_TOKENS[name] for name in _NIH_TOKENS if study.raw[name] == 1.0]
            tokens += [name for name, rate in _NIH_EXTRA.items() if rng.random() < rate]
            width, height, spacing = _NIH_ORIGINALS[int(rng.integers(len(_NIH_ORIGINALS)))]
            name = f"{patient.number:08d}_{k:03d}.png"
            image = study.images[0]
            entries.append((name, patient, k, study, image, "|".join(sorted(tokens)) or "No Finding",
                            f"{width},{height},{spacing},{spacing}"))
    entries.sort(key=lambda e: e[0])
    lines = [NIH_HEADER]
    tasks: list[RenderTask] = []
    for position, (name, patient, k, study, image, labels, original) in enumerate(entries):
        sex = "M" if patient.sex == "Male" else "F"
        lines.append(f"{name},{labels},{k},{patient.number},{study.age},{sex},{image.view},{original},")
        folder = f"images_{1 + position // _NIH_PER_FOLDER:03d}/images"
        tasks.append(_task(f"nih/{folder}/{name}", "nih", image.index, image.view, patient, k, (size, size), world,
                           True))
    files = {"nih/Data_Entry_2017_v2020.csv": ("\n".join(lines) + "\n").encode("utf-8")}
    for list_name, in_test in (("train_val_list.txt", False), ("test_list.txt", True)):
        names = [e[0] for e in entries if (e[1].number in test) == in_test]
        files[f"nih/{list_name}"] = "\n".join(names).encode("utf-8")
    return files, tasks


def _unique_ids(rng: np.random.Generator, low: int, high: int, count: int) -> list[int]:
    chosen: list[int] = []
    seen: set[int] = set()
    while len(chosen) < count:
        value = int(rng.integers(low, high))
        if value not in seen:
            seen.add(value)
            chosen.append(value)
    return chosen


def _negbio(raw: float, rng: np.random.Generator) -> float:
    """NegBio disagrees with the CheXpert labeler on a few mentions: more negations, fewer hedges."""
    if raw == -1.0 and rng.random() < 0.25:
        return 1.0
    if math.isnan(raw) and rng.random() < 0.05:
        return 0.0
    return raw


def _radiologist(study: StudySpec, name: str) -> float:
    """A radiologist reading the images: a drawn finding is what its sign shows, the rest yes or no, no hedges."""
    if name in study.truth:
        return float(study.truth[name])
    return 0.0 if math.isnan(study.raw[name]) else abs(study.raw[name])


def plan_mimic(seed: int, scale: float, size: int, world: str = "shipped") -> tuple[dict[str, bytes], list[RenderTask]]:
    """``mimic/`` four gzipped tables in four different row orders, ``files/pXX/pSUBJECT/sSTUDY/*.jpg``, and the
    2.1.0 radiologist labels of the test-split studies (plain CSV, one row per ``study_id``)."""
    rng = _metadata_rng(seed, "mimic")
    hospital = in_world(HOSPITALS["mimic"], world)
    enriched = enriched_prevalence(HOSPITALS["mimic"], world, MIMIC_TEST_PREVALENCE)
    shape = (round(size * 1.2), size)  # MIMIC-CXR-JPG is portrait, about 2544 x 3056
    groups: list[PatientSpec] = []
    image = 0
    for split, base, mean, prevalence in (
        ("test", 100, 3.5, enriched), ("train", 30, 2.0, None), ("validate", 8, 2.0, None),
    ):
        made = sample_patients(hospital, rng, _count(base, scale), first_number=len(groups) + 1,
                               first_image=image, split=split, studies_mean=mean, prevalence=prevalence)
        image += sum(len(s.images) for p in made for s in p.studies)
        groups += made
    subjects = _unique_ids(rng, 10_000_000, 20_000_000, len(groups))
    study_ids = _unique_ids(rng, 50_000_000, 60_000_000, sum(len(p.studies) for p in groups))
    labels: list[list[str]] = []
    negbio: list[list[str]] = []
    radiologist: list[list[str]] = []
    metadata: list[list[str]] = []
    splits: list[list[str]] = []
    tasks: list[RenderTask] = []
    next_study = iter(study_ids)
    for patient, subject_number in zip(groups, subjects, strict=True):
        subject = str(subject_number)
        day = np.datetime64("2110-01-01") + int(rng.integers(0, 365 * 80))
        for k, study in enumerate(patient.studies):
            study_id = str(next(next_study))
            day += int(rng.integers(1, 400))
            labels.append([subject, study_id, *(_fmt(study.raw[n]) for n in MIMIC_LABEL_HEADER[2:])])
            negbio.append([subject, study_id, *(_fmt(_negbio(study.raw[n], rng)) for n in MIMIC_LABEL_HEADER[2:])])
            if patient.split == "test":  # no draw from rng: every other table keeps its bytes
                radiologist.append([study_id, *(_fmt(_radiologist(study, n)) for n in MIMIC_RADIOLOGIST_HEADER[1:])])
            portable = study.images[0].view == "AP"
            procedure = "CHEST (PORTABLE AP)" if portable else "CHEST (PA AND LAT)"
            seconds = rng.uniform(0, 86400)
            time = f"{int(seconds // 3600) * 10000 + int(seconds % 3600 // 60) * 100 + seconds % 60:.3f}"
            for image_spec in study.images:
                dicom = "-".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, size=5))
                view = "" if rng.random() < 0.01 else image_spec.view
                supine = portable and rng.random() < 0.5
                orientation = "" if rng.random() < 0.02 else ("Recumbent" if supine else "Erect")
                metadata.append([
                    dicom, subject, study_id, procedure, view, str(shape[0]), str(shape[1]),
                    str(day).replace("-", ""), time, procedure, _VIEW_MEANING.get(view, ""), orientation,
                ])
                splits.append([dicom, study_id, subject, patient.split])
                path = f"mimic/files/p{subject[:2]}/p{subject}/s{study_id}/{dicom}.jpg"
                tasks.append(_task(path, "mimic", image_spec.index, image_spec.view, patient, k, shape, world))
    # Four different row orders, as the real tables do not share one: a join by row position must fail.
    # Ids are fixed-width digit strings, so sorting the strings sorts the numbers.
    tables = {
        "chexpert": (MIMIC_LABEL_HEADER, sorted(labels, key=lambda r: (r[0], r[1]))),
        "negbio": (MIMIC_LABEL_HEADER, sorted(negbio, key=lambda r: r[1])),
        "metadata": (MIMIC_METADATA_HEADER, sorted(metadata, key=lambda r: (r[1], r[2], r[0]))),
        "split": (MIMIC_SPLIT_HEADER, sorted(splits, key=lambda r: r[0])),
    }
    files = {f"mimic/{MIMIC_PREFIX}-{k}.csv.gz": gzip_bytes(csv_text(h, rows)) for k, (h, rows) in tables.items()}
    files[f"mimic/{MIMIC_RADIOLOGIST_FILE}"] = csv_text(MIMIC_RADIOLOGIST_HEADER, sorted(radiologist))
    return files, tasks
