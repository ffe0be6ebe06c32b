"""The embed stage: resumable after SIGKILL with identical bytes, shardable, rebuilt when the backbone changes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image

from cxrgen.data.cache import build_cache
from cxrgen.errors import CxrgenError
from cxrgen.learn.embed import (
    FEATURES,
    Backbone,
    build_embeddings,
    embed_array,
    embedding_dir,
    load_frozen,
    open_embeddings,
    study_backbone,
)
from cxrgen.study.config import ConfigError, dump_resolved, load_study

SIZE = 32
RANDOM = Backbone("probe", "resnet18", pretrained=False)
Images = tuple[Path, pd.DataFrame]


def _images(root: Path, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        path = f"img/{i:04d}.png"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(root / path)
        rows.append({"image_id": f"ds:{i:04d}", "path": path})
    return pd.DataFrame(rows)


def _study(tmp: Path, name: str, rows: pd.DataFrame, root: Path) -> Path:
    study = tmp / name
    build_cache(rows, root, study, "ds", SIZE, "opencv", clahe=False, workers=1)
    return study


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("data")
    return root, _images(root, 60)


KILLED = """\
import sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from cxrgen.learn.embed import Backbone, build_embeddings
build_embeddings(Path(sys.argv[1]), "ds", Backbone("probe", "resnet18", pretrained=False), 32, "opencv", False,
                 device="cpu", batch_size=2, chunk_size=2)
"""


@pytest.mark.slow
def test_embeddings_resume_after_sigkill_with_identical_bytes(tmp_path: Path, images: Images) -> None:
    root, rows = images
    killed = _study(tmp_path, "killed", rows, root)
    final = embedding_dir(killed, "ds", "probe", SIZE, "opencv", False)
    partial = final.with_name(final.name + ".partial")
    script = tmp_path / "embed.py"
    script.write_text(KILLED)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(script), str(killed)], env=env, stderr=subprocess.PIPE)
    progress = partial / "progress-1of1.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if progress.is_file() and len(progress.read_text().splitlines()) >= 3:
            break
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, process.stderr.read() if process.stderr else ""
    done = len(progress.read_text().splitlines())
    assert 3 <= done < 30, f"{done} of 30 chunks done: the process was not killed mid-way"
    assert not final.exists()  # nothing published under the final name

    resumed = build_embeddings(killed, "ds", RANDOM, SIZE, "opencv", False, device="cpu", batch_size=2, chunk_size=2)
    assert resumed == final and not partial.exists()
    fresh = _study(tmp_path, "fresh", rows, root)
    uninterrupted = build_embeddings(
        fresh, "ds", RANDOM, SIZE, "opencv", False, device="cpu", batch_size=2, chunk_size=2
    )
    assert (resumed / FEATURES).read_bytes() == (uninterrupted / FEATURES).read_bytes()
    features, meta = open_embeddings(resumed)
    assert features.dtype == np.float16 and features.shape == (60, 512) and meta["weights"] == "random:seed0"
    assert np.isfinite(features).all() and features.std() > 0
    # the resumed build did not redo the chunks the killed one finished
    assert len((resumed / "progress-1of1.jsonl").read_text().splitlines()) == 30


def test_shards_together_equal_one_build(tmp_path: Path, images: Images) -> None:
    root, rows = images
    rows = rows.iloc[:20]
    sharded = _study(tmp_path, "sharded", rows, root)
    first = build_embeddings(sharded, "ds", RANDOM, SIZE, "opencv", False, device="cpu", shard=(1, 2), chunk_size=4)
    assert first.name.endswith(".partial")  # chunks 1 and 3 are left for shard 2
    second = build_embeddings(sharded, "ds", RANDOM, SIZE, "opencv", False, device="cpu", shard=(2, 2), chunk_size=4)
    assert second == embedding_dir(sharded, "ds", "probe", SIZE, "opencv", False)
    whole = build_embeddings(_study(tmp_path, "whole", rows, root), "ds", RANDOM, SIZE, "opencv", False, device="cpu",
                             chunk_size=4)
    assert (second / FEATURES).read_bytes() == (whole / FEATURES).read_bytes()
    # the stored features are the backbone's, row for row: recompute three rows directly
    cache = np.load(sharded / "cache" / "ds-32-opencv-noclahe" / "images.npy")
    direct = embed_array(load_frozen(RANDOM, SIZE, torch.device("cpu")), cache[[0, 9, 19]], 3, torch.device("cpu"))
    stored, _ = open_embeddings(second)
    np.testing.assert_allclose(stored[[0, 9, 19]].astype(np.float32), direct.astype(np.float32), atol=2e-3)


def test_other_weights_rebuild_and_a_wrong_checksum_is_refused(tmp_path: Path, images: Images) -> None:
    from safetensors.torch import save_file

    root, rows = images
    study = _study(tmp_path, "study", rows.iloc[:8], root)
    random_folder = build_embeddings(study, "ds", RANDOM, SIZE, "opencv", False, device="cpu")
    random_features = np.array(open_embeddings(random_folder)[0])
    torch.manual_seed(7)
    weights = tmp_path / "resnet18.safetensors"
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(weights))
    trained = Backbone("probe", "resnet18", pretrained=True, weights=weights)
    folder = build_embeddings(study, "ds", trained, SIZE, "opencv", False, device="cpu")
    features, meta = open_embeddings(folder)
    assert folder == random_folder and meta["weights"].startswith("sha256:")
    assert not np.array_equal(np.asarray(features), random_features)
    wrong = Backbone("probe", "resnet18", pretrained=True, weights=weights, weights_sha256="0" * 64)
    with pytest.raises(CxrgenError, match="sha256 is"):
        build_embeddings(study, "ds", wrong, SIZE, "opencv", False, device="cpu")


STUDY = """\
name: s
out: out
datasets:
  a: {reader: nih, root: data}
architectures:
  - densenet121
  - {name: dino_probe, timm: vit_small_patch14_dinov2, weights: w/model.safetensors, weights_sha256: abc}
  - {name: cnn_probe, timm: resnet18, mode: linear_probe, pretrained: false}
configurations:
  - {name: a, train: [a], internal: [a]}
"""


def test_architecture_entries_keep_plain_names(tmp_path: Path) -> None:
    (tmp_path / "study.yaml").write_text(STUDY)
    config = load_study(tmp_path / "study.yaml")
    assert config.architectures == ["densenet121", "dino_probe", "cnn_probe"]
    assert set(config.architecture_specs) == {"dino_probe", "cnn_probe"}
    assert config.architecture_specs["dino_probe"].weights == (tmp_path / "w" / "model.safetensors").resolve()
    assert [config.is_linear_probe(a) for a in config.architectures] == [False, True, True]
    # input size and normalization come from the backbone's own pretrained config
    assert config.arch_spec("dino_probe").input_size == 518 and config.input_size("cnn_probe") == 224
    assert study_backbone(config, "cnn_probe").random_weights
    assert not study_backbone(config, "dino_probe").random_weights  # train.pretrained defaults to true
    # the resolved config (as saved beside every output) reads back to the same config
    (tmp_path / "resolved.yaml").write_text(dump_resolved(config))
    assert load_study(tmp_path / "resolved.yaml") == config


def test_bad_architecture_entries_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.replace("mode: linear_probe", "mode: finetune_all"))
    with pytest.raises(ConfigError, match=r"architecture_specs\.cnn_probe\.mode"):
        load_study(path)
    path.write_text(STUDY.replace("cnn_probe", "dino_probe"))
    with pytest.raises(ConfigError, match="given twice"):
        load_study(path)
    path.write_text(STUDY.replace("pretrained: false}", "pretrained: false, lr: 1}"))
    with pytest.raises(ConfigError, match="unknown key"):
        load_study(path)
