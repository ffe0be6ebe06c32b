"""The architecture registry, parameter counts against the paper, and pretrained-weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from cxrgen.errors import CxrgenError
from cxrgen.models.registry import (
    ARCHITECTURES,
    create_model,
    get_arch,
    models_table,
    trainable_parameters,
)
from cxrgen.models.saliency import cam_layer_name
from cxrgen.utils.fileio import sha256_of

TINY = "test_byobnet"


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_registered_architecture_matches_paper_count(name: str) -> None:
    spec = ARCHITECTURES[name]
    model = create_model(name, num_labels=5, pretrained=False, keras_faithful=True)
    assert trainable_parameters(model) == spec.paper_trainable
    model.get_submodule(cam_layer_name(model, spec))  # the Grad-CAM layer exists
    assert model.get_classifier().out_features == 5


def test_models_table_prints_the_paper_numbers() -> None:
    rows = {row["name"]: row for row in models_table()}
    assert rows["densenet121"]["trainable_parameters"] == 6_958_981
    assert rows["densenet121"]["input_size"] == 224
    assert rows["inception_resnet_v2"]["trainable_parameters"] == 54_283_877
    assert rows["inception_resnet_v2"]["input_size"] == 299


def test_keras_faithful_freezes_only_batchnorm_gammas_at_one() -> None:
    plain = create_model("inception_resnet_v2", 5, pretrained=False, keras_faithful=False)
    keras = create_model("inception_resnet_v2", 5, pretrained=False, keras_faithful=True)
    bn = [m for m in keras.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert trainable_parameters(plain) - trainable_parameters(keras) == sum(m.weight.numel() for m in bn)
    assert all(not m.weight.requires_grad and bool((m.weight == 1).all()) for m in bn)


def test_any_timm_model_takes_its_input_size_from_timm() -> None:
    spec = get_arch(TINY)
    assert spec.input_size == timm.get_pretrained_cfg(TINY).input_size[-1]
    model = create_model(TINY, 3, pretrained=False)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    assert cam_layer_name(model, spec) == model.feature_info[-1]["module"]


def test_unknown_architecture_suggests_close_names() -> None:
    with pytest.raises(CxrgenError, match="did you mean 'densenet121'"):
        get_arch("densenet12l")


def _pretrained_file(tmp_path: Path, suffix: str) -> tuple[Path, torch.nn.Module]:
    source = create_model(TINY, 1000, pretrained=False)  # an ImageNet-shaped head, which must be dropped
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    return path, source


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_from_local_file_loads_backbone_and_ignores_classifier(tmp_path: Path, suffix: str) -> None:
    path, source = _pretrained_file(tmp_path, suffix)
    model = create_model(TINY, 2, pretrained=True, weights_path=path, weights_sha256=sha256_of(path))
    head = str(model.pretrained_cfg["classifier"])
    for key, value in model.state_dict().items():
        if not key.startswith(head + "."):
            assert torch.equal(value, source.state_dict()[key]), key
    assert model.get_classifier().out_features == 2


def test_pretrained_file_with_wrong_checksum_or_architecture_is_refused(tmp_path: Path) -> None:
    path, _ = _pretrained_file(tmp_path, ".safetensors")
    with pytest.raises(CxrgenError, match="sha256"):
        create_model(TINY, 2, pretrained=True, weights_path=path, weights_sha256="0" * 64)
    with pytest.raises(CxrgenError, match="does not fit"):
        create_model("test_efficientnet", 2, pretrained=True, weights_path=path)


def test_pretrained_without_weights_offline_says_how_to_provide_them(monkeypatch: pytest.MonkeyPatch) -> None:
    real = timm.create_model

    def offline(name: str, pretrained: bool = False, **kwargs: object) -> torch.nn.Module:
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(CxrgenError, match=r"train\.weights\.densenet121"):
        create_model("densenet121", 5, pretrained=True)


def test_cli_models_prints_the_paper_counts() -> None:
    from typer.testing import CliRunner

    from cxrgen.cli import app

    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "6,958,981" in result.output and "54,283,877" in result.output
    assert "Any timm model name can be used" in result.output  # the two rows are not the only choice
