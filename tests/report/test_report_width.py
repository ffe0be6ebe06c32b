"""Every table of a generated report fits a 1280 px browser window, measured in headless Chromium."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from components import executable
from cxrgen.metrics.evaluate import UNFINISHED_KEY
from cxrgen.report.build import build_report
from cxrgen.utils.fileio import write_parquet
from helpers.report_study import make_study

WIDTH = 1280
MEASURE = """<script>
const out = {page: document.documentElement.scrollWidth,
             tables: [...document.querySelectorAll('table')].map(t => Math.ceil(t.getBoundingClientRect().right))};
document.body.setAttribute('data-measured', JSON.stringify(out));
</script></body>"""


@pytest.mark.slow
@pytest.mark.requires("chromium")
def test_every_table_fits_1280_px(tmp_path: Path) -> None:
    browser = executable("chromium")
    study = make_study(tmp_path, patients=30, seeds=[0, 1])
    runs = study / "runs" / "both" / "inception_resnet_v2"  # the notices at the top must fit too
    unfinished = runs / "seed-0" / "predictions" / "internal.parquet"
    write_parquet(pd.read_parquet(unfinished), unfinished, metadata={UNFINISHED_KEY: "true"})
    (runs / "seed-1" / "predictions" / "gamma.parquet").unlink()
    results = build_report(study, review=False)
    page = (results / "report.html").read_text(encoding="utf-8")
    assert 'class="notice"' in page
    probe = results / "measure.html"
    probe.write_text(page.replace("</body>", MEASURE, 1), encoding="utf-8")
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={WIDTH},900", "--dump-dom",
         probe.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    found = re.search(r'data-measured="([^"]*)"', dom)
    assert found, dom[-2000:]
    measured = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(measured["tables"]) == page.count("<table")
    assert measured["page"] <= WIDTH, measured
    assert max(measured["tables"]) <= WIDTH, measured
