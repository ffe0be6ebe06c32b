"""Three more synthetic hospitals in the layouts of PadChest, VinDr-CXR (PhysioNet) and BRAX (DESIGN.md 3b).

Written by this module's own code, never the readers': PadChest as one CSV with a Python-literal ``Labels``
column (terms with leading spaces, some null rows) over 16-bit PNGs holding 12 bits; VinDr-CXR as per-radiologist
label tables (three readers per training image who sometimes disagree, a consensus table for test) over real
DICOM files written with pydicom, some MONOCHROME1, some with a window, some RLE- or JPEG 2000-compressed
(pydicom has no JPEG baseline encoder; pylibjpeg-openjpeg encodes JPEG 2000); BRAX as one spreadsheet with age
bins over PNG and DICOM copies. Each site has its own acquisition, prevalences and device rate.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from cxrgen.synthetic.hospitals import Hospital, PatientSpec, sample_patients
from cxrgen.synthetic.phantom import (
    DRAWN_FINDINGS,
    Acquisition,
    acquire,
    detector_shape,
    render_frontal,
    render_lateral,
)
from cxrgen.synthetic.render import csv_text, render_missing
from cxrgen.synthetic.worlds import in_world


def _per_label(*values: float) -> dict[str, float]:
    return dict(zip(DRAWN_FINDINGS, values, strict=True))


SITES: dict[str, Hospital] = {
    "padchest": Hospital(
        name="padchest", code=4,
        prevalence=_per_label(0.12, 0.2, 0.06, 0.05, 0.14),
        uncertain=_per_label(0.0, 0.0, 0.0, 0.0, 0.0), negated=_per_label(1.0, 1.0, 1.0, 1.0, 1.0), cluster=0.3,
        acquisition=Acquisition(gamma=1.15, window=(0.0, 1.7), noise=0.02, blur=0.9, resolution=0.9,
                                marker="R", marker_corner="tr", collimation=0.04, collimation_value=0.0),
        device_rate=0.07, device_with_cardiomegaly=0.07, ap_rate=0.2, lateral_rate=0.5, binary=True,
    ),
    "vindr": Hospital(
        name="vindr", code=5,
        prevalence=_per_label(0.06, 0.18, 0.05, 0.03, 0.08),
        uncertain=_per_label(0.0, 0.0, 0.0, 0.0, 0.0), negated=_per_label(1.0, 1.0, 1.0, 1.0, 1.0), cluster=0.2,
        acquisition=Acquisition(gamma=0.9, window=(-0.1, 1.5), noise=0.03, blur=0.7, resolution=0.8,
                                marker="L", marker_corner="bl", collimation=0.1, collimation_value=0.0),
        device_rate=0.01, device_with_cardiomegaly=0.01, ap_rate=0.0, lateral_rate=0.0, binary=True,
    ),
    "brax": Hospital(
        name="brax", code=6,
        prevalence=_per_label(0.1, 0.12, 0.05, 0.04, 0.1),
        uncertain=_per_label(0.2, 0.1, 0.2, 0.2, 0.1), negated=_per_label(0.3, 0.3, 0.3, 0.3, 0.3), cluster=0.4,
        acquisition=Acquisition(gamma=1.05, window=(-0.05, 1.8), noise=0.04, blur=1.1, resolution=0.7,
                                marker="L", marker_corner="tl", collimation=0.05, collimation_value=1.0),
        device_rate=0.04, device_with_cardiomegaly=0.04, ap_rate=0.3, lateral_rate=0.4,
    ),
}  # fmt: skip

PADCHEST_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
PADCHEST_HEADER = [
    "", "ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
    "ViewPosition_DICOM", "Projection", "MethodProjection", "Pediatric", "Modality_DICOM", "Manufacturer_DICOM",
    "PhotometricInterpretation_DICOM", "PixelRepresentation_DICOM", "PixelAspectRatio_DICOM",
    "SpatialResolution_DICOM", "BitsStored_DICOM", "WindowCenter_DICOM", "WindowWidth_DICOM", "Rows_DICOM",
    "Columns_DICOM", "XRayTubeCurrent_DICOM", "Exposure_DICOM", "ExposureInuAs_DICOM", "ExposureTime",
    "RelativeXRayExposure_DICOM", "ReportID", "Report", "MethodLabel", "Labels", "Localizations",
    "LabelsLocalizationsBySentence", "labelCUIS", "LocalizationsCUIS",
]  # fmt: skip
# What a PadChest report says for each drawn finding (terms as the release spells them).
_PADCHEST_TERMS = {
    "Atelectasis": ("atelectasis", "laminar atelectasis", "lobar atelectasis", "atelectasis basal"),
    "Cardiomegaly": ("cardiomegaly",),
    "Consolidation": ("consolidation",),
    "Edema": ("pulmonary edema",),
    "Pleural Effusion": ("pleural effusion", "loculated pleural effusion"),
}
_PADCHEST_DISTRACTORS = ("chronic changes", "pericardial effusion", "aortic elongation", "scoliosis")
_PADCHEST_DEVICES = ("pacemaker", "dual chamber device")
VINDR_FINDINGS = [
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture", "Consolidation",
    "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity", "Lung cavity", "Lung cyst",
    "Mediastinal shift", "Nodule/Mass", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis", "Rib fracture", "Other lesion", "COPD", "Lung tumor", "Pneumonia", "Tuberculosis",
    "Other diseases", "No finding",
]  # fmt: skip
_VINDR_SPELLING = {"Pleural Effusion": "Pleural effusion"}
BRAX_CSV = "master_spreadsheet_update.csv"
BRAX_OBSERVATIONS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
]  # fmt: skip
BRAX_HEADER = ["PatientID", "PatientSex", "PatientAge", "AccessionNumber", "StudyDate", *BRAX_OBSERVATIONS,
               "ViewPosition", "Rows", "Columns", "Manufacturer", "DicomPath", "PngPath"]


class SiteImage(NamedTuple):
    """One image file of a new site: ``kind`` is ``png16``, ``png8`` or ``dicom``; ``dicom`` options alongside."""

    path: str
    hospital: str
    serial: int
    view: str
    signs: tuple[tuple[str, float], ...]
    device: bool
    shape: tuple[int, int]
    kind: str
    monochrome1: bool = False
    window: bool = False
    compression: str = ""  # "", "rle" or "jpeg2000"
    world: str = "shipped"


def _rng(seed: int, hospital: str, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SITES[hospital].code, stream]))


def _image(path: str, hospital: str, index: int, view: str, patient: PatientSpec, study: int,
           shape: tuple[int, int], kind: str, world: str, **dicom: object) -> SiteImage:
    spec = patient.studies[study]
    signs = tuple((k, spec.signs[k]) for k in DRAWN_FINDINGS if spec.signs[k] > 0)
    return SiteImage(path, hospital, index, view, signs, spec.device, shape, kind, world=world,
                     **dicom)  # type: ignore[arg-type]


def plan_padchest(
    seed: int, scale: float, size: int, world: str = "shipped"
) -> tuple[dict[str, bytes], list[SiteImage]]:
    """``padchest/PADCHEST_...csv`` over ``padchest/<ImageDir>/<ImageID>`` 16-bit PNGs (12 bits stored)."""
    rng = _rng(seed, "padchest")
    patients = sample_patients(in_world(SITES["padchest"], world), rng, max(3, round(500 * scale)), studies_mean=1.3)
    rows, tasks, row_index = [], [], 0
    for patient in patients:
        birth = 2017 - patient.studies[0].age
        sex = "O" if rng.random() < 0.01 else ("M" if patient.sex == "Male" else "F")
        for k, study in enumerate(patient.studies):
            terms = [rng.choice(_PADCHEST_TERMS[f]) for f in DRAWN_FINDINGS if study.raw[f] in (1.0, -1.0)]
            if study.device:
                terms.append(str(rng.choice(_PADCHEST_DEVICES)))
            terms += [d for d in _PADCHEST_DISTRACTORS if rng.random() < 0.08]
            terms = [(" " + t if rng.random() < 0.2 else str(t)) for t in terms] or ["normal"]
            labels = "" if rng.random() < 0.04 else repr(terms)
            date = f"{birth + study.age}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
            for image in study.images:
                projection = "L" if not image.frontal else ("PA" if image.view == "PA" else
                                                            str(rng.choice(["AP", "AP_horizontal"])))
                projection = "UNK" if rng.random() < 0.02 else projection
                folder = str(int(rng.integers(0, 5)))
                name = f"{int(rng.integers(10**11, 10**12))}_{row_index:05d}.png"
                values = {
                    "": str(row_index), "ImageID": name, "ImageDir": folder, "StudyDate_DICOM": date,
                    "StudyID": f"st{patient.number:05d}{k}", "PatientID": f"pt{patient.number:05d}",
                    "PatientBirth": "" if rng.random() < 0.03 else f"{birth}.0", "PatientSex_DICOM": sex,
                    "Projection": projection, "MethodLabel": "Physician" if rng.random() < 0.27 else "RNN_model",
                    "Labels": labels, "BitsStored_DICOM": "12", "Modality_DICOM": "CR",
                    "PhotometricInterpretation_DICOM": "MONOCHROME2",
                }
                rows.append([values.get(column, "") for column in PADCHEST_HEADER])
                tasks.append(_image(f"padchest/{folder}/{name}", "padchest", image.index, image.view, patient, k,
                                    (size, size), "png16", world))
                row_index += 1
    return {f"padchest/{PADCHEST_CSV}": csv_text(PADCHEST_HEADER, rows)}, tasks


def plan_vindr(
    seed: int, scale: float, size: int, world: str = "shipped"
) -> tuple[dict[str, bytes], list[SiteImage]]:
    """``vindr/annotations/image_labels_{train,test}.csv`` and ``vindr/{train,test}/<image_id>.dicom``."""
    rng = _rng(seed, "vindr")
    patients = sample_patients(in_world(SITES["vindr"], world), rng, max(5, round(700 * scale)), studies_mean=1.0)
    train_rows, test_rows, tasks = [], [], []
    for patient in patients:
        study = patient.studies[0]
        image = study.images[0]
        image_id = "".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, size=4))
        part = "test" if rng.random() < 0.25 else "train"
        truth = {_VINDR_SPELLING.get(f, f): study.truth[f] for f in DRAWN_FINDINGS}
        if part == "train":
            for rad in rng.choice([f"R{i}" for i in range(1, 18)], size=3, replace=False):
                marks = {f: int(v) if rng.random() > 0.15 else 1 - int(v) for f, v in truth.items()}
                row = [marks.get(f, int(rng.random() < 0.02)) for f in VINDR_FINDINGS[:-1]]
                train_rows.append([image_id, str(rad), *row, int(not any(row))])
        else:
            row = [truth.get(f, 0) for f in VINDR_FINDINGS[:-1]]
            test_rows.append([image_id, *row, int(not any(row))])
        dicom = {"monochrome1": bool(rng.random() < 0.3), "window": bool(rng.random() < 0.4),
                 "compression": str(rng.choice(["", "", "rle", "jpeg2000"]))}
        tasks.append(_image(f"vindr/{part}/{image_id}.dicom", "vindr", image.index, "PA", patient, 0,
                            (size, size), "dicom", world, **dicom))
    files = {
        "vindr/annotations/image_labels_train.csv": csv_text(["image_id", "rad_id", *VINDR_FINDINGS], train_rows),
        "vindr/annotations/image_labels_test.csv": csv_text(["image_id", *VINDR_FINDINGS], test_rows),
    }
    return files, tasks


def _brax_bin(age: int) -> str:
    return "85 or more" if age >= 85 else f"{age // 5 * 5}-{age // 5 * 5 + 4}"


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else str(int(value))


def plan_brax(
    seed: int, scale: float, size: int, world: str = "shipped"
) -> tuple[dict[str, bytes], list[SiteImage]]:
    """``brax/master_spreadsheet_update.csv`` over ``brax/images/<patient>/<study>/<image>.{png,dcm}``."""
    rng = _rng(seed, "brax")
    patients = sample_patients(in_world(SITES["brax"], world), rng, max(3, round(400 * scale)), studies_mean=1.4)
    rows, tasks = [], []
    for patient in patients:
        pid = f"{int(rng.integers(10**9, 10**10))}"
        sex = "O" if rng.random() < 0.005 else ("M" if patient.sex == "Male" else "F")
        for k, study in enumerate(patient.studies):
            accession = f"{int(rng.integers(10**7, 10**8))}"
            for j, image in enumerate(study.images):
                view = image.view if image.frontal else str(rng.choice(["L", "RL"]))  # BRAX's lateral spellings
                stem = f"images/id_{pid}/Study_{accession}/Series_{j}/image-{j}"
                rows.append([pid, sex, _brax_bin(study.age), accession, f"2018{k + 1:02d}01",
                             *(_fmt(study.raw[o]) for o in BRAX_OBSERVATIONS), view, size, size,
                             int(rng.integers(0, 4)), f"{stem}.dcm", f"{stem}.png"])
                for kind, suffix in (("png8", "png"), ("dicom", "dcm")):
                    tasks.append(_image(f"brax/{stem}.{suffix}", "brax", image.index, image.view, patient, k,
                                        (size, size), kind, world))
    return {f"brax/{BRAX_CSV}": csv_text(BRAX_HEADER, rows)}, tasks


PLANS = {"padchest": plan_padchest, "vindr": plan_vindr, "brax": plan_brax}


def _pixels(task: SiteImage, seed: int, levels: int) -> np.ndarray:
    hospital = in_world(SITES[task.hospital], task.world)
    rng = np.random.default_rng(np.random.SeedSequence([seed, hospital.code, task.serial + 1]))
    frontal = task.view in ("PA", "AP")
    detector = detector_shape(hospital.acquisition, task.shape)
    if frontal:
        attenuation, _ = render_frontal(rng, dict(task.signs), detector, device=task.device,
                                        meniscus=hospital.meniscus)
    else:
        attenuation = render_lateral(rng, dict(task.signs), detector, device=task.device)
    return acquire(attenuation, hospital.acquisition, rng, frontal=frontal, shape=task.shape, levels=levels)


def _dicom_bytes(pixels: np.ndarray, task: SiteImage) -> bytes:
    """A DX DICOM of 12 bits stored: MONOCHROME1 stores inverted values; a window, when set, spans the data."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

    uid = UID(f"1.2.826.0.1.3680043.10.1{SITES[task.hospital].code}.{task.serial + 1}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1.1")
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, uid, "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 12, 11, 0
    ds.PhotometricInterpretation = "MONOCHROME1" if task.monochrome1 else "MONOCHROME2"
    stored = (4095 - pixels) if task.monochrome1 else pixels
    if task.window:
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = stored.astype(np.uint16).tobytes()
    if task.compression:
        ds.compress(RLELossless if task.compression == "rle" else JPEG2000Lossless, generate_instance_uid=False)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def render_site_image(task: SiteImage, seed: int) -> bytes:
    """The encoded file of one task: 16-bit PNG (12 bits used), 8-bit PNG or DICOM."""
    buffer = io.BytesIO()
    if task.kind == "png8":
        Image.fromarray(_pixels(task, seed, 255)).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()
    pixels = _pixels(task, seed, 4095)
    if task.kind == "dicom":
        return _dicom_bytes(pixels, task)
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def render_sites_into(out_dir: Path, seed: int, tasks: Sequence[SiteImage]) -> int:
    """Render and write the tasks whose files are missing (atomically); returns how many were written."""
    return render_missing(out_dir, tasks, functools.partial(render_site_image, seed=seed))
