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


# A timm architecture with a full state dict trained elsewhere: {name, timm, weights, sha256, ...}.
TIMM_OUTPUTS = {"Cardiomegaly": 0, "Edema": 1, "Pleural Effusion": 2}


@pytest.fixture(scope="module")
def state_dict_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path, Path]:
    """A randomly initialized 3-class resnet10t and its state dict as safetensors and as a torch file."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("timm")
    torch.manual_seed(1)
    model = timm.create_model(ARCH, num_classes=3, pretrained=False).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "w.safetensors"))
    torch.save({"state_dict": state}, folder / "w.pt")
    return model, folder / "w.safetensors", folder / "w.pt"


def timm_spec(path: Path, **changes: object) -> ExternalModelSpec:
    fields = {"name": "xrv", "timm": ARCH, "weights": path, "sha256": sha(path), "input_size": SIZE,
              "outputs": TIMM_OUTPUTS, **changes}  # fmt: skip
    return ExternalModelSpec.model_validate(fields)


@pytest.mark.slow
def test_a_timm_state_dict_equals_the_source_model_on_the_same_cached_images(
    state_dict_files: tuple[torch.nn.Module, Path, Path], tmp_path: Path
) -> None:
    from cxrgen.data.loaders import CXRDataModule
    from cxrgen.models.normalize import normalize_on_device
    from cxrgen.runner.study import run_study
    from cxrgen.study.config import dump_resolved, load_study
    from cxrgen.study.workspace import Study
    from cxrgen.synthetic import write_synthetic

    source, weights, _ = state_dict_files
    write_synthetic(tmp_path, seed=0, scale=0.05, image_size=64)
    study = yaml.safe_load(study_yaml())
    study["architectures"] = [{"name": "xrv_all", "timm": ARCH, "weights": str(weights), "sha256": sha(weights),
                               "input_size": SIZE, "outputs": TIMM_OUTPUTS}]  # fmt: skip
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    opened = Study.load(tmp_path / "study.yaml")
    assert opened.config.external_model("xrv_all") is not None and not opened.config.is_linear_probe("xrv_all")
    (tmp_path / "resolved.yaml").write_text(dump_resolved(opened.config))
    assert load_study(tmp_path / "resolved.yaml") == opened.config
    with pytest.warns(UserWarning, match=r"w\.safetensors: model 'xrv_all' has no output for "
                                         r"\['Atelectasis', 'Consolidation'\]"):  # fmt: skip
        table = run_study(opened, workers=1)
    assert set(table["arch"]) == {"xrv_all"}
    run = opened.dir.path / "runs/c1/xrv_all"
    assert not (run / "checkpoints").exists()  # never trained
    assert '"external": "timm"' in (run / "done.json").read_text()
    module = CXRDataModule.from_study(opened, "c1", SIZE)
    for test_set, dataset in (("internal", "chexpert"), ("mimic", "mimic")):
        images = torch.stack([item["image"] for item in module.test_dataset(dataset)])  # the cached uint8 images
        with torch.inference_mode():
            reference = torch.sigmoid(source(normalize_on_device(images, channels_last=False))).double().numpy()
        frame = pd.read_parquet(run / f"predictions/{test_set}.parquet")
        assert frame["image_id"].tolist() == module.test_dataset(dataset).image_ids.tolist() and len(frame) > 10
        assert frame["p_Atelectasis"].isna().all() and frame["p_Consolidation"].isna().all()
        for label, index in TIMM_OUTPUTS.items():
            np.testing.assert_allclose(frame[f"p_{label}"].to_numpy(), reference[:, index], atol=1e-5, rtol=0)


def test_a_timm_entry_is_told_from_a_probe_and_takes_its_architectures_input_size(
    state_dict_files: tuple[torch.nn.Module, Path, Path],
) -> None:
    from cxrgen.models.registry import get_arch
    from cxrgen.study.config import ArchitectureSpec, ExternalModelSpec, _entry_kind

    _, weights, torch_file = state_dict_files
    entry = {"name": "xrv_all", "timm": "densenet121", "weights": weights, "sha256": "0" * 64}
    assert _entry_kind(entry) == "external"
    assert ExternalModelSpec.model_validate(entry).input_size == 224  # the registry's densenet121
    assert timm_spec(weights, input_size=None).input_size == get_arch(ARCH).input_size  # timm's config
    for probe_key in ({"mode": "linear_probe"}, {"weights_sha256": "abc"}, {"pretrained": True}):
        probe = {"name": "p", "timm": ARCH, "weights": weights, **probe_key}
        assert _entry_kind(probe) == "probe" and isinstance(ArchitectureSpec.model_validate(probe), ArchitectureSpec)
    assert _entry_kind({"name": "p", "timm": ARCH}) == "probe"
    # a torch state dict (wrapped in "state_dict", read with weights_only) loads like the safetensors file
    model = load_external(timm_spec(torch_file), LABELS)
    assert model.outputs == 3 and model.spec.kind == "timm"
    images = np.random.default_rng(0).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)
    np.testing.assert_allclose(model.run(images), load_external(timm_spec(weights), LABELS).run(images), atol=0)


def test_a_timm_state_dict_with_a_wrong_sha256_or_that_does_not_fit_is_refused(
    state_dict_files: tuple[torch.nn.Module, Path, Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    _, weights, _ = state_dict_files
    with pytest.raises(ExternalModelError, match=rf"w\.safetensors: sha256 is {sha(weights)}, architectures entry "
                                                 r"'xrv' expects 0{64}; a different or damaged file"):  # fmt: skip
        load_external(timm_spec(weights, sha256="0" * 64), LABELS)
    state = load_file(str(weights))
    wrong = {**state, "conv1.0.weight": torch.zeros(24, 3, 5, 5)}
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ExternalModelError, match=r"wrong\.safetensors: the state dict does not fit timm model "
                                                 r"'resnet10t' with 3 classes: 1 shapes differ \(conv1\.0\.weight: "
                                                 r"expected \[24, 3, 3, 3\], found \[24, 3, 5, 5\]\)"):  # fmt: skip
        load_external(timm_spec(tmp_path / "wrong.safetensors"), LABELS)
    save_file(state, str(tmp_path / "other.safetensors"))
    with pytest.raises(ExternalModelError, match=r"other\.safetensors: the state dict does not fit timm model "
                                                 r"'resnet14t' with 3 classes: .*missing keys"):  # fmt: skip
        load_external(timm_spec(tmp_path / "other.safetensors", timm="resnet14t"), LABELS)
    save_file({k: v for k, v in state.items() if not k.startswith("fc.")}, str(tmp_path / "backbone.safetensors"))
    with pytest.raises(ExternalModelError, match=r"backbone\.safetensors: no classifier 'fc\.weight' for timm model "
                                                 r"'resnet10t': expected a full state dict"):  # fmt: skip
        load_external(timm_spec(tmp_path / "backbone.safetensors"), LABELS)
    with pytest.raises(ExternalModelError, match=r"w\.safetensors: output shape \[2, 3\] does not fit: expected "
                                                 r"\[N, K\] with K >= 5"):  # fmt: skip
        load_external(timm_spec(weights, outputs=None), LABELS)
