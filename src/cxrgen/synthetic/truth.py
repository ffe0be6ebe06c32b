"""What the synthetic world knows and a real dataset never tells: each image's true cardiothoracic ratio.

``<hospital>/truth.parquet`` sits beside each synthetic hospital's native files; no reader reads it (the
manifest never sees it), only the report's borderline-error check (issue 11). Columns: ``path`` (relative to
the hospital's root, as the manifest's ``path``), ``view``, ``ctr`` (heart width over thorax width of the
rendered frontal image, NaN for laterals), ``device`` (a pacemaker is drawn).

The ratio is recovered by replaying the first draws of the image's own generator (the side of atelectasis,
then :func:`cxrgen.synthetic.phantom.frontal_geometry`), exactly as :func:`cxrgen.synthetic.render.render_task`
makes them, so it costs no rendering and resumed runs write the same file.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cxrgen.synthetic.hospitals import HOSPITALS
from cxrgen.synthetic.phantom import frontal_geometry
from cxrgen.synthetic.render import RenderTask

#: The name :class:`cxrgen.study.layout.DatasetDir` reads (synthetic imports no study code; a test ties the two).
TRUTH_FILE = "truth.parquet"


def true_ctr(task: RenderTask, seed: int) -> float:
    """The cardiothoracic ratio the renderer draws for ``task`` (NaN for a lateral view)."""
    if task.view not in ("PA", "AP"):
        return math.nan
    rng = np.random.default_rng(np.random.SeedSequence([seed, HOSPITALS[task.hospital].code, task.serial + 1]))
    side = int(rng.choice([-1, 1]))  # the first draw of render_frontal
    return float(frontal_geometry(rng, dict(task.signs), side).cardiothoracic_ratio)


def truth_files(tasks: Sequence[RenderTask], seed: int) -> dict[str, bytes]:
    """``<hospital>/truth.parquet`` bytes per hospital, rows in task order."""
    rows: dict[str, list[dict[str, object]]] = {}
    for task in tasks:
        hospital, _, relative = task.path.partition("/")
        rows.setdefault(hospital, []).append(
            {"path": relative, "view": task.view, "ctr": true_ctr(task, seed), "device": bool(task.device)}
        )
    out = {}
    for hospital, table in rows.items():
        buffer = io.BytesIO()
        pd.DataFrame(table).to_parquet(buffer, index=False)
        out[f"{hospital}/{TRUTH_FILE}"] = buffer.getvalue()
    return out
