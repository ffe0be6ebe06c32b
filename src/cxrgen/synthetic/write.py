"""write_synthetic: any set of the six hospitals and a study file over them.

The three paper sites (:mod:`.paper_sites`) and the three more (:mod:`.more_sites`) plan their files and image
tasks; this module claims the output folder, renders the missing images (in worker processes if asked), writes
each hospital's ``truth.parquet`` (:mod:`.truth`) and the metadata files, and ``study.yaml`` last.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from cxrgen.synthetic.more_sites import PLANS, SiteImage, render_sites_into
from cxrgen.synthetic.paper_sites import plan_chexpert, plan_mimic, plan_nih
from cxrgen.synthetic.render import RenderTask, render_into
from cxrgen.synthetic.truth import truth_files
from cxrgen.synthetic.worlds import check_world
from cxrgen.utils.fileio import sweep_temporaries, write_bytes

MARKER = ".cxrgen-synthetic.json"

FORMAT_VERSION = 1


def _claim(out_dir: Path, params: dict[str, float | int | str]) -> None:
    """Refuse to mix two datasets in one folder: resuming is only safe with the same parameters."""
    marker = out_dir / MARKER
    text = json.dumps(params, sort_keys=True) + "\n"
    if marker.exists() and marker.read_text(encoding="utf-8") != text:
        raise ValueError(
            f"{out_dir}: holds a synthetic dataset made with {marker.read_text(encoding='utf-8').strip()}, "
            f"not {text.strip()}; choose an empty folder"
        )
    write_bytes(marker, text.encode("utf-8"))


#: The hospitals ``cxrgen synthesize`` writes by default (``make demo``), and every one it can write.
DEFAULT_HOSPITALS: tuple[str, ...] = ("chexpert", "nih", "mimic")


ALL_HOSPITALS: tuple[str, ...] = (*DEFAULT_HOSPITALS, "padchest", "vindr", "brax")


def write_synthetic(
    out_dir: Path, *, seed: int = 0, scale: float = 1.0, image_size: int = 256, workers: int = 1,
    hospitals: Sequence[str] = DEFAULT_HOSPITALS,
    shortcut: bool = True, world: str = "shipped",
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
        shortcut: False writes the control world without the NIH-like site's pacemaker-Cardiomegaly pairing
            (the same as ``world="control"``).
        world: one of :data:`cxrgen.synthetic.worlds.WORLDS` (``shipped``, ``control``, ``prevalence``,
            ``acquisition``, ``reversed``; :mod:`cxrgen.synthetic.worlds` says what each plants). It is claimed
            with the other parameters in ``.cxrgen-synthetic.json`` (``"world"``; the control world keeps its
            older spelling ``"shortcut": false``) and named in ``study.yaml``'s first comment.

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
    check_world(world)
    if not shortcut and world not in ("shipped", "control"):
        raise ValueError(f"write_synthetic: --no-shortcut (shortcut=False) is the control world; it cannot be "
                         f"combined with world {world!r}")
    world = "control" if not shortcut else world
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
    if world == "control":  # the spelling folders written before the worlds existed carry
        params["shortcut"] = False
    elif world != "shipped":
        params["world"] = world
    _claim(out_dir, params)
    for name in hospitals:  # what a killed run was writing; only the hospitals' folders (a study may run beside)
        if (out_dir / name).is_dir():
            sweep_temporaries(out_dir / name)
    files: dict[str, bytes] = {}
    tasks: list[RenderTask] = []
    site_tasks: list[SiteImage] = []
    plans: dict[str, Callable[..., tuple[dict[str, bytes], list[RenderTask]]]] = {
        "chexpert": plan_chexpert, "nih": plan_nih, "mimic": plan_mimic,
    }  # fmt: skip
    for name in hospitals:
        if name in plans:
            plan_files, plan_tasks = plans[name](seed, scale, image_size, world=world)
            tasks += plan_tasks
        else:
            plan_files, more = PLANS[name](seed, scale, image_size, world=world)
            site_tasks += more
        files.update(plan_files)
    if workers == 1:
        render_into(out_dir, seed, tasks)
        render_sites_into(out_dir, seed, site_tasks)
    else:
        chunks = [tasks[i : i + 32] for i in range(0, len(tasks), 32)]
        site_chunks = [site_tasks[i : i + 32] for i in range(0, len(site_tasks), 32)]
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            list(pool.map(render_into, [out_dir] * len(chunks), [seed] * len(chunks), chunks))
            list(pool.map(render_sites_into, [out_dir] * len(site_chunks), [seed] * len(site_chunks), site_chunks))
    files.update(truth_files(tasks, seed))
    for relative, data in files.items():
        write_bytes(out_dir / relative, data)
    if tuple(hospitals) == DEFAULT_HOSPITALS:
        study = study_yaml(seed, scale, image_size)
    else:
        study = sites_study_yaml(seed, scale, image_size, hospitals)
    write_bytes(out_dir / "study.yaml", _world_line(world) + study)
    return out_dir


def _world_line(world: str) -> bytes:
    """The study file's first comment in a planted world (none in ``shipped`` and ``control``: their bytes stay)."""
    if world in ("shipped", "control"):
        return b""
    return f"# World: {world} (cxrgen synthesize --world {world}; see cxrgen.synthetic.worlds).\n".encode()


#: The architectures of the three-hospital study file: the paper's two.
STUDY_ARCHITECTURES = ("densenet121", "inception_resnet_v2")
#: The input side of each study file: quick on a CPU and at least every named architecture's smallest input
#: (inception_resnet_v2 needs 75 px; 64 px failed with a kernel-size error). Synthetic imports no model code, so
#: these are numbers; ``tests/synthetic`` runs every named architecture at them and checks the registry's minimum.
STUDY_INPUT_SIZE = 80
SITES_INPUT_SIZE = 64


def study_yaml(seed: int, scale: float, image_size: int) -> bytes:
    """The study file of section 8 of DESIGN.md over the three hospitals, paths relative to itself."""
    split = f"{{method: random, fractions: {{train: 0.72, val: 0.08, test: 0.2}}, seed: {seed}}}"
    size = STUDY_INPUT_SIZE
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
preprocess: {{clahe: true, engine: opencv, size: {size}}}
architectures: [{", ".join(STUDY_ARCHITECTURES)}]
train: {{batch_size: 32, lr: 1.0e-3, max_epochs: 3, patience: 2, pretrained: false, seed: {seed}}}
configurations:
  - {{name: chexpert, train: [chexpert], internal: [chexpert], external: [mimic]}}
  - {{name: nih, train: [nih], internal: [nih], external: [mimic]}}
  - {{name: both, train: [chexpert, nih], internal: [chexpert, nih], external: [mimic]}}
""".encode()


_SITE_DATASETS = {
    "chexpert": "{reader: chexpert, root: chexpert, csv: train.csv}",
    "nih": "{reader: nih, root: nih}",
    "mimic": "{reader: mimic, root: mimic, labels: chexpert}",
    "padchest": "{reader: padchest, root: padchest}",
    "vindr": "{reader: vindr, root: vindr, readers: majority}",
    "brax": "{reader: brax, root: brax}",
}


_OFFICIAL_SPLITS = ("mimic", "vindr")
#: The architectures of the leave-one-out study file over any hospitals.
SITES_ARCHITECTURES = ("densenet121",)


def sites_study_yaml(seed: int, scale: float, image_size: int, hospitals: Sequence[str]) -> bytes:
    """A study over any set of synthetic hospitals: each held out in turn (leave-one-out), tiny CPU models."""
    split = f"{{method: random, fractions: {{train: 0.72, val: 0.08, test: 0.2}}, seed: {seed}}}"
    datasets = "\n".join(f"  {name}: {_SITE_DATASETS[name]}" for name in hospitals)
    splits = "\n".join(
        f"  {name}: {{method: official}}" if name in _OFFICIAL_SPLITS else f"  {name}: {split}" for name in hospitals
    )
    size = SITES_INPUT_SIZE
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
preprocess: {{clahe: true, engine: opencv, size: {size}}}
architectures: [{", ".join(SITES_ARCHITECTURES)}]
train: {{batch_size: 32, lr: 1.0e-3, max_epochs: 3, patience: 2, pretrained: false, seed: {seed}}}
design: {{leave_one_out: [{", ".join(hospitals)}], single_sources: false}}
""".encode()
