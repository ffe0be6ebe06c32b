"""Models from elsewhere (issue 23): a tiny timm model exported to ONNX and TorchScript by the test itself,
predicted on a study's cached test images, equal to the source torch model; bad files refused before any image."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import yaml

from cxrgen.learn.external import ExternalModelError, load_external
from cxrgen.study.config import ExternalModelSpec
from helpers.faults import ARCH, LABELS, study_yaml

SIZE = 32


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path, Path]:
    """The source model, its ONNX export (dynamic batch) and its TorchScript trace."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    model = timm.create_model(ARCH, num_classes=len(LABELS), pretrained=False).eval()
    example = torch.randn(2, 3, SIZE, SIZE)
    torch.onnx.export(model, (example,), str(folder / "vendor.onnx"), input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}}, dynamo=False)  # fmt: skip
    torch.jit.trace(model, example).save(str(folder / "site.pt"))
    return model, folder / "vendor.onnx", folder / "site.pt"


def spec(path: Path, **changes: object) -> ExternalModelSpec:
    kind = "onnx" if path.suffix == ".onnx" else "torchscript"
    fields: dict[str, object] = {"name": "m", kind: path, "sha256": sha(path), "input_size": SIZE, **changes}
    return ExternalModelSpec.model_validate(fields)


@pytest.mark.slow
def test_onnx_and_torchscript_equal_the_source_model_on_the_same_cached_images(
    exported: tuple[torch.nn.Module, Path, Path], tmp_path: Path
) -> None:
    from cxrgen.data.loaders import CXRDataModule
    from cxrgen.learn.predict import predict_arrays
    from cxrgen.runner.study import run_study
    from cxrgen.study.workspace import Study
    from cxrgen.synthetic import write_synthetic

    source, onnx_file, script_file = exported
    write_synthetic(tmp_path, seed=0, scale=0.05, image_size=64)
    outputs = {label: index for index, label in enumerate(LABELS) if label != "Atelectasis"}  # one label lacking
    study = yaml.safe_load(study_yaml(datasets=("chexpert", "nih", "mimic")))
    study["architectures"] = [
        {"name": "vendor", "onnx": str(onnx_file), "sha256": sha(onnx_file), "input_size": SIZE,
         "normalize": "imagenet", "outputs": outputs, "output": "logits"},
        {"name": "site", "torchscript": str(script_file), "sha256": sha(script_file), "input_size": SIZE},
    ]  # fmt: skip
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    opened = Study.load(tmp_path / "study.yaml")
    with pytest.warns(UserWarning, match=r"vendor\.onnx: model 'vendor' has no output for \['Atelectasis'\]"):
        table = run_study(opened, workers=1)
    assert sorted(set(table["arch"])) == ["site", "vendor"]
    assert not (opened.dir.path / "runs/c1/vendor/checkpoints").exists()  # never trained
    module = CXRDataModule.from_study(opened, "c1", SIZE)
    for test_set, datasets in (("internal", ["chexpert", "nih"]), ("mimic", ["mimic"])):
        ids = np.concatenate([module.test_dataset(d).image_ids for d in datasets])
        reference = np.concatenate([predict_arrays(source, module.test_dataset(d), 16, "cpu")[0] for d in datasets])
        for arch in ("vendor", "site"):
            frame = pd.read_parquet(opened.dir.path / f"runs/c1/{arch}/predictions/{test_set}.parquet")
            assert frame["image_id"].tolist() == ids.tolist() and len(frame) > 10
            for j, label in enumerate(LABELS):
                if arch == "vendor" and label == "Atelectasis":
                    assert frame[f"p_{label}"].isna().all()
                    continue
                np.testing.assert_allclose(frame[f"p_{label}"].to_numpy(), reference[:, j], atol=1e-4, rtol=0)
    auc = pd.read_csv(opened.dir.path / "runs/c1/site/auc.csv")
    assert set(auc["test_set"]) == {"internal", "mimic"} and auc["auc"].notna().any()


def test_a_wrong_sha256_a_file_that_is_not_onnx_and_a_two_input_model_are_refused(
    exported: tuple[torch.nn.Module, Path, Path], tmp_path: Path
) -> None:
    _, onnx_file, _ = exported
    with pytest.raises(ExternalModelError, match=rf"vendor\.onnx: sha256 is {sha(onnx_file)}, architectures entry "
                                                 r"'m' expects 0{64}; a different or damaged file"):  # fmt: skip
        load_external(spec(onnx_file, sha256="0" * 64), LABELS)
    text = tmp_path / "notes.onnx"
    text.write_text("these are not the weights you are looking for\n")
    with pytest.raises(ExternalModelError, match=r"notes\.onnx: not an ONNX model"):
        load_external(spec(text), LABELS)

    class TwoInputs(torch.nn.Module):
        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return image.mean(dim=(2, 3)) + mask.mean(dim=(2, 3))

    two = tmp_path / "two.onnx"
    x = torch.zeros(1, 3, SIZE, SIZE)
    torch.onnx.export(TwoInputs(), (x, x), str(two), input_names=["image", "mask"], dynamo=False)
    with pytest.raises(ExternalModelError, match=r"two\.onnx: the model has 2 inputs \(image, mask\); expected one "
                                                 r"image input \[N, 3, 32, 32\]"):  # fmt: skip
        load_external(spec(two, outputs={"Cardiomegaly": 0}), LABELS)


def test_shapes_that_do_not_fit_are_named_before_any_image(exported: tuple[torch.nn.Module, Path, Path]) -> None:
    _, onnx_file, script_file = exported
    with pytest.raises(ExternalModelError, match=r"vendor\.onnx: input shape \[n, 3, 32, 32\] does not fit: "
                                                 r"expected \[N, 3, 48, 48\] \(input_size: 48\)"):  # fmt: skip
        load_external(spec(onnx_file, input_size=48), LABELS)
    with pytest.raises(ExternalModelError, match=r"vendor\.onnx: output shape \[n, 5\] does not fit: expected "
                                                 r"\[N, K\] with K >= 8"):  # fmt: skip
        load_external(spec(onnx_file, outputs={"Edema": 7}), LABELS)
    with pytest.raises(ExternalModelError, match=r"site\.pt: output shape \[2, 5\] does not fit: expected \[N, K\] "
                                                 r"with K >= 10"):  # fmt: skip
        load_external(spec(script_file, outputs={"Edema": 9}), LABELS)
    with pytest.raises(ValueError, match="exactly one of onnx: or torchscript:"):
        ExternalModelSpec.model_validate({"name": "x", "sha256": "0" * 64, "input_size": SIZE})
    model = load_external(spec(script_file), LABELS)
    assert model.outputs == len(LABELS)
