from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cxrgen.utils.lock import LOCK_NAME, LockedError, study_lock


def test_second_holder_is_refused_and_lock_released(tmp_path: Path) -> None:
    with study_lock(tmp_path):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder == {"host": socket.gethostname(), "pid": os.getpid()}
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"), study_lock(tmp_path):
            pass
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    code = (
        "import sys, time; from pathlib import Path; from cxrgen.utils.lock import study_lock\n"
        "with study_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    with pytest.raises(LockedError, match=f"pid {proc.pid}"), study_lock(tmp_path):
        pass
    proc.kill()
    proc.wait()
    assert (tmp_path / LOCK_NAME).exists()  # SIGKILL left it behind
    with study_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_lock_held_on_another_host_is_refused(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    with pytest.raises(LockedError, match="on elsewhere"), study_lock(tmp_path):
        pass


def test_sweep_removes_only_leftover_temporaries(tmp_path: Path) -> None:
    from cxrgen.utils.fileio import atomic_path, sweep_temporaries

    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / ".auc.csv.abc123.tmp").write_text("half")
    (tmp_path / ".manifest.parquet.x.tmp").write_text("half")
    (tmp_path / "keep.tmp").write_text("not ours")
    with atomic_path(tmp_path / "done.csv") as tmp:
        tmp.write_text("a\n")
    assert sweep_temporaries(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["done.csv", "keep.tmp"]
