"""Write the three synthetic hospitals in the native layouts of CheXpert, NIH ChestX-ray14 and MIMIC-CXR-JPG.

The layouts are written by hand here, never by the project's readers, so reading them back tests the readers.
Every file lands under its final name only when complete (temporary name + ``os.replace``), images already
present are skipped, and each image's pixels come from its own ``SeedSequence((seed, hospital, index))``: a
killed run, rerun, finishes with the same bytes, and so does a run with any number of workers.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple, Protocol, TypeVar

import numpy as np
from PIL import Image

from cxrgen.synthetic.hospitals import (
    CHEXPERT_OBSERVATIONS,
    HOSPITALS,
    MIMIC_TEST_PREVALENCE,
    PatientSpec,
    StudySpec,
    sample_patients,
)
from cxrgen.synthetic.phantom import DRAWN_FINDINGS, acquire, detector_shape, render_frontal, render_lateral
from cxrgen.synthetic.truth import truth_files

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
MARKER = ".cxrgen-synthetic.json"
FORMAT_VERSION = 1

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


class RenderTask(NamedTuple):
    """One image file: where it goes and what it shows (picklable, for worker processes)."""

    path: str
    hospital: str
    serial: int
    view: str
    signs: tuple[tuple[str, float], ...]
    device: bool
    shape: tuple[int, int]
    png: bool


def _fmt(value: float) -> str:
    """CheXpert/MIMIC label spelling: ``1.0``, ``0.0``, ``-1.0`` or blank for NaN."""
    return "" if math.isnan(value) else f"{value:.1f}"


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _gzip(data: bytes) -> bytes:
    """Deterministic gzip: no file name, mtime 0."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as stream:
        stream.write(data)
    return buffer.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling so a reader never sees a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _metadata_rng(seed: int, hospital: str) -> np.random.Generator:
    # Stream 0 of each hospital holds its metadata; images use (seed, code, index + 1).
    return np.random.default_rng(np.random.SeedSequence([seed, HOSPITALS[hospital].code, 0]))


def _count(base: int, scale: float) -> int:
    return max(3, round(base * scale))


def _task(path: str, hospital: str, index: int, view: str, patient: PatientSpec, study: int,
          shape: tuple[int, int], png: bool = False) -> RenderTask:
    spec = patient.studies[study]
    signs = tuple((k, spec.signs[k]) for k in DRAWN_FINDINGS if spec.signs[k] > 0)
    return RenderTask(path, hospital, index, view, signs, spec.device, shape, png)


def plan_chexpert(seed: int, scale: float, size: int) -> tuple[dict[str, bytes], list[RenderTask]]:
    """``chexpert/CheXpert-v1.0-small/{train,valid}.csv`` and their images; valid patients follow train."""
    rng = _metadata_rng(seed, "chexpert")
    hospital = HOSPITALS["chexpert"]
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
                    tasks.append(_task(f"chexpert/{path}", "chexpert", image.index, image.view, patient, k, shape))
        files[f"chexpert/{CHEXPERT_FOLDER}/{part}.csv"] = _csv_text(CHEXPERT_HEADER, rows)
    return files, tasks


def plan_nih(seed: int, scale: float, size: int, shortcut: bool = True) -> tuple[dict[str, bytes], list[RenderTask]]:
    """``nih/Data_Entry_2017_v2020.csv`` (official layout, every line ending in a comma), images, split lists.

    ``shortcut=False`` is the control world: pacemakers as frequent with Cardiomegaly as without, every other
    draw unchanged.
    """
    rng = _metadata_rng(seed, "nih")
    site = HOSPITALS["nih"]
    site = site if shortcut else dataclasses.replace(site, device_with_cardiomegaly=site.device_rate)
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
        tasks.append(_task(f"nih/{folder}/{name}", "nih", image.index, image.view, patient, k, (size, size), True))
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


def plan_mimic(seed: int, scale: float, size: int) -> tuple[dict[str, bytes], list[RenderTask]]:
    """``mimic/`` four gzipped tables in four different row orders, ``files/pXX/pSUBJECT/sSTUDY/*.jpg``, and the
    2.1.0 radiologist labels of the test-split studies (plain CSV, one row per ``study_id``)."""
    rng = _metadata_rng(seed, "mimic")
    hospital = HOSPITALS["mimic"]
    shape = (round(size * 1.2), size)  # MIMIC-CXR-JPG is portrait, about 2544 x 3056
    groups: list[PatientSpec] = []
    image = 0
    for split, base, mean, prevalence in (
        ("test", 100, 3.5, MIMIC_TEST_PREVALENCE), ("train", 30, 2.0, None), ("validate", 8, 2.0, None),
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
                tasks.append(_task(path, "mimic", image_spec.index, image_spec.view, patient, k, shape))
    # Four different row orders, as the real tables do not share one: a join by row position must fail.
    # Ids are fixed-width digit strings, so sorting the strings sorts the numbers.
    tables = {
        "chexpert": (MIMIC_LABEL_HEADER, sorted(labels, key=lambda r: (r[0], r[1]))),
        "negbio": (MIMIC_LABEL_HEADER, sorted(negbio, key=lambda r: r[1])),
        "metadata": (MIMIC_METADATA_HEADER, sorted(metadata, key=lambda r: (r[1], r[2], r[0]))),
        "split": (MIMIC_SPLIT_HEADER, sorted(splits, key=lambda r: r[0])),
    }
    files = {f"mimic/{MIMIC_PREFIX}-{k}.csv.gz": _gzip(_csv_text(h, rows)) for k, (h, rows) in tables.items()}
    files[f"mimic/{MIMIC_RADIOLOGIST_FILE}"] = _csv_text(MIMIC_RADIOLOGIST_HEADER, sorted(radiologist))
    return files, tasks


def study_yaml(seed: int, scale: float, image_size: int) -> bytes:
    """The study file of section 8 of DESIGN.md over the three hospitals, paths relative to itself."""
    split = f"{{method: random, fractions: {{train: 0.72, val: 0.08, test: 0.2}}, seed: {seed}}}"
    return f"""\
# Three synthetic hospitals written by `cxrgen synthesize` (seed {seed}, scale {scale}, image size {image_size}).
# The paper's recipe on a quick CPU budget: small inputs, few epochs, no pretrained weights.
name: synthetic
out: runs/study
datasets:
  chexpert: {{reader: chexpert, root: chexpert, csv: train.csv}}
  nih: {{reader: nih, root: nih}}
  mimic: {{reader: mimic, root: mimic, labels: chexpert}}
labels: [Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion]
uncertainty: {{Atelectasis: ones, Cardiomegaly: zeros, Consolidation: zeros, Edema: ones, Pleural Effusion: ones}}
blank: zeros
views: all
splits:
  chexpert: {split}
  nih: {split}
  mimic: {{method: official}}
preprocess: {{clahe: true, engine: opencv, size: 64}}
architectures: [densenet121, inception_resnet_v2]
train: {{batch_size: 32, lr: 1.0e-3, max_epochs: 3, patience: 2, pretrained: false, seed: {seed}}}
configurations:
  - {{name: chexpert, train: [chexpert], internal: [chexpert], external: [mimic]}}
  - {{name: nih, train: [nih], internal: [nih], external: [mimic]}}
  - {{name: both, train: [chexpert, nih], internal: [chexpert, nih], external: [mimic]}}
""".encode()


def render_task(task: RenderTask, seed: int) -> bytes:
    """The encoded image of one task: PNG (8-bit gray, about 1 % RGBA like NIH) or baseline JPEG."""
    hospital = HOSPITALS[task.hospital]
    rng = np.random.default_rng(np.random.SeedSequence([seed, hospital.code, task.serial + 1]))
    signs = dict(task.signs)
    frontal = task.view in ("PA", "AP")
    detector = detector_shape(hospital.acquisition, task.shape)
    if frontal:
        attenuation, _ = render_frontal(rng, signs, detector, device=task.device, meniscus=hospital.meniscus)
    else:
        attenuation = render_lateral(rng, signs, detector, device=task.device)
    pixels = acquire(attenuation, hospital.acquisition, rng, frontal=frontal, shape=task.shape)
    picture = Image.fromarray(pixels)
    buffer = io.BytesIO()
    if task.png:
        if rng.random() < 0.01:
            picture = picture.convert("RGBA")
        picture.save(buffer, format="PNG", compress_level=1)
    else:
        picture.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


Task = TypeVar("Task", bound="_HasPath")


class _HasPath(Protocol):
    @property
    def path(self) -> str: ...


def render_missing(out_dir: Path, tasks: Sequence[Task], render: Callable[[Task], bytes]) -> int:
    """Render and write (atomically) the tasks whose files are missing, so a killed run redoes only those;
    returns how many were written."""
    written = 0
    for task in tasks:
        target = out_dir / task.path
        if not target.exists():
            write_atomic(target, render(task))
            written += 1
    return written


def _render_into(out_dir: Path, seed: int, tasks: Sequence[RenderTask]) -> int:
    return render_missing(out_dir, tasks, functools.partial(render_task, seed=seed))


def _claim(out_dir: Path, params: dict[str, float | int | str]) -> None:
    """Refuse to mix two datasets in one folder: resuming is only safe with the same parameters."""
    marker = out_dir / MARKER
    text = json.dumps(params, sort_keys=True) + "\n"
    if marker.exists() and marker.read_text(encoding="utf-8") != text:
        raise ValueError(
            f"{out_dir}: holds a synthetic dataset made with {marker.read_text(encoding='utf-8').strip()}, "
            f"not {text.strip()}; choose an empty folder"
        )
    write_atomic(marker, text.encode("utf-8"))


#: The hospitals ``cxrgen synthesize`` writes by default (``make demo``), and every one it can write.
DEFAULT_HOSPITALS: tuple[str, ...] = ("chexpert", "nih", "mimic")
ALL_HOSPITALS: tuple[str, ...] = (*DEFAULT_HOSPITALS, "padchest", "vindr", "brax")


def write_synthetic(
    out_dir: Path, *, seed: int = 0, scale: float = 1.0, image_size: int = 256, workers: int = 1,
    hospitals: Sequence[str] = DEFAULT_HOSPITALS,
    shortcut: bool = True,
) -> Path:
    """Write three synthetic hospitals (CheXpert-, NIH- and MIMIC-like) and a study file over them.

    Layout under ``out_dir``: ``chexpert/CheXpert-v1.0-small/{train,valid}.csv`` and images;
    ``nih/Data_Entry_2017_v2020.csv``, ``nih/images_00N/images/*.png``, ``nih/{train_val,test}_list.txt``;
    ``mimic/mimic-cxr-2.0.0-{chexpert,negbio,metadata,split}.csv.gz``, ``mimic/mimic-cxr-2.1.0-test-set-labeled.csv``
    and ``mimic/files/pXX/...jpg``; ``study.yaml`` (relative paths), written last.

    Args:
        out_dir: target folder; created if needed. Rerunning with the same parameters resumes and
            reproduces the same bytes; other parameters in a used folder are refused.
        seed: non-negative; same seed, same bytes, whatever ``workers``.
        scale: multiplies patient counts (1.0: about 1,500 CheXpert, 1,200 NIH and 700 MIMIC images).
        image_size: image height in pixels for NIH and CheXpert (MIMIC is 1.2x taller, CheXpert 1.2x wider).
        workers: processes rendering images.
        hospitals: which of :data:`ALL_HOSPITALS` to write (PadChest, VinDr-CXR and BRAX come from
            :mod:`cxrgen.synthetic.more_sites`); ``study.yaml`` then covers them with a leave-one-out design.
        shortcut: False writes the control world without the NIH-like site's pacemaker-Cardiomegaly pairing.

    Each hospital also gets ``truth.parquet`` (true cardiothoracic ratio and device per image), which no
    reader reads (:mod:`cxrgen.synthetic.truth`).

    Returns:
        ``out_dir``.
    """
    if seed < 0 or scale <= 0 or image_size < 32 or workers < 1:
        raise ValueError(
            f"write_synthetic: need seed >= 0, scale > 0, image_size >= 32, workers >= 1; got seed={seed}, "
            f"scale={scale}, image_size={image_size}, workers={workers}"
        )
    from cxrgen.synthetic.more_sites import PLANS, SiteImage, render_sites_into

    unknown = [h for h in hospitals if h not in ALL_HOSPITALS]
    if unknown or not hospitals or len(set(hospitals)) != len(hospitals):
        raise ValueError(f"write_synthetic: hospitals must be distinct names among {', '.join(ALL_HOSPITALS)}; "
                         f"got {list(hospitals)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params: dict[str, float | int | str | bool] = {"seed": seed, "scale": scale, "image_size": image_size,
                                                   "version": FORMAT_VERSION}
    if tuple(hospitals) != DEFAULT_HOSPITALS:
        params["hospitals"] = ",".join(hospitals)
    if not shortcut:
        params["shortcut"] = False
    _claim(out_dir, params)
    files: dict[str, bytes] = {}
    tasks: list[RenderTask] = []
    site_tasks: list[SiteImage] = []
    plans: dict[str, Callable[[int, float, int], tuple[dict[str, bytes], list[RenderTask]]]] = {
        "chexpert": plan_chexpert, "nih": functools.partial(plan_nih, shortcut=shortcut), "mimic": plan_mimic,
    }  # fmt: skip
    for name in hospitals:
        if name in plans:
            plan_files, plan_tasks = plans[name](seed, scale, image_size)
            tasks += plan_tasks
        else:
            plan_files, more = PLANS[name](seed, scale, image_size)
            site_tasks += more
        files.update(plan_files)
    if workers == 1:
        _render_into(out_dir, seed, tasks)
        render_sites_into(out_dir, seed, site_tasks)
    else:
        chunks = [tasks[i : i + 32] for i in range(0, len(tasks), 32)]
        site_chunks = [site_tasks[i : i + 32] for i in range(0, len(site_tasks), 32)]
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            list(pool.map(_render_into, [out_dir] * len(chunks), [seed] * len(chunks), chunks))
            list(pool.map(render_sites_into, [out_dir] * len(site_chunks), [seed] * len(site_chunks), site_chunks))
    files.update(truth_files(tasks, seed))
    for relative, data in files.items():
        write_atomic(out_dir / relative, data)
    if tuple(hospitals) == DEFAULT_HOSPITALS:
        study = study_yaml(seed, scale, image_size)
    else:
        study = sites_study_yaml(seed, scale, image_size, hospitals)
    write_atomic(out_dir / "study.yaml", study)
    return out_dir


_SITE_DATASETS = {
    "chexpert": "{reader: chexpert, root: chexpert, csv: train.csv}",
    "nih": "{reader: nih, root: nih}",
    "mimic": "{reader: mimic, root: mimic, labels: chexpert}",
    "padchest": "{reader: padchest, root: padchest}",
    "vindr": "{reader: vindr, root: vindr, readers: majority}",
    "brax": "{reader: brax, root: brax}",
}
_OFFICIAL_SPLITS = ("mimic", "vindr")


def sites_study_yaml(seed: int, scale: float, image_size: int, hospitals: Sequence[str]) -> bytes:
    """A study over any set of synthetic hospitals: each held out in turn (leave-one-out), tiny CPU models."""
    split = f"{{method: random, fractions: {{train: 0.72, val: 0.08, test: 0.2}}, seed: {seed}}}"
    datasets = "\n".join(f"  {name}: {_SITE_DATASETS[name]}" for name in hospitals)
    splits = "\n".join(
        f"  {name}: {{method: official}}" if name in _OFFICIAL_SPLITS else f"  {name}: {split}" for name in hospitals
    )
    return f"""\
# Synthetic hospitals written by `cxrgen synthesize --hospitals {",".join(hospitals)}` (seed {seed}, scale {scale},
# image size {image_size}): each hospital held out in turn. Small inputs, few epochs, no pretrained weights.
name: synthetic-sites
out: runs/sites
datasets:
{datasets}
labels: [Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion]
uncertainty: {{Atelectasis: ones, Cardiomegaly: zeros, Consolidation: zeros, Edema: ones, Pleural Effusion: ones}}
blank: zeros
views: all
splits:
{splits}
preprocess: {{clahe: true, engine: opencv, size: 64}}
architectures: [densenet121]
train: {{batch_size: 32, lr: 1.0e-3, max_epochs: 3, patience: 2, pretrained: false, seed: {seed}}}
design: {{leave_one_out: [{", ".join(hospitals)}], single_sources: false}}
""".encode()
