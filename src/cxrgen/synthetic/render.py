"""What every synthetic image file shares: the task, its rendering, write-if-missing.

A task names one image file (its path under the output folder) and what it shows; its pixels come from its own
``SeedSequence((seed, hospital, index))``, so a killed run, rerun, finishes with the same bytes whatever the
number of workers. Every file lands under its final name only when complete (:func:`cxrgen.utils.fileio.write_bytes`),
and :func:`render_missing` skips the files already there. The two site families (:mod:`.paper_sites`,
:mod:`.more_sites`) plan tasks and import this module; nothing here imports them.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol, TypeVar

import numpy as np
from PIL import Image

from cxrgen.synthetic.hospitals import HOSPITALS
from cxrgen.synthetic.phantom import acquire, detector_shape, render_frontal, render_lateral
from cxrgen.synthetic.worlds import in_world
from cxrgen.utils.fileio import write_bytes


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
    world: str = "shipped"


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    """A CSV file's bytes: UTF-8, ``\\n`` line ends, the header first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip: no file name, mtime 0."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as stream:
        stream.write(data)
    return buffer.getvalue()


def render_task(task: RenderTask, seed: int) -> bytes:
    """The encoded image of one task: PNG (8-bit gray, about 1 % RGBA like NIH) or baseline JPEG."""
    hospital = in_world(HOSPITALS[task.hospital], task.world)
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
            write_bytes(target, render(task))
            written += 1
    return written


def render_into(out_dir: Path, seed: int, tasks: Sequence[RenderTask]) -> int:
    """:func:`render_missing` for the paper sites' tasks (a module-level function: worker processes pickle it)."""
    return render_missing(out_dir, tasks, functools.partial(render_task, seed=seed))
