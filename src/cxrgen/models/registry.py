"""Model factory over timm and a registry of the architectures a study may name.

Every classifier is a timm backbone whose head is global average pooling + one linear layer with one output
per label. The sigmoid lives in the loss (``BCEWithLogits``) and in prediction, never in the model, so training
stays numerically stable under mixed precision.

The registry holds what must not be scattered as constants: input size, the layer Grad-CAM hooks, and the
options that make a timm model count the same trainable parameters as the paper's Keras model. Any other timm
model can be named too; its input size then comes from timm's ``pretrained_cfg``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxrgen.errors import CxrgenError
from cxrgen.models.hub import require_hub_weights
from cxrgen.utils.fileio import sha256_of

if TYPE_CHECKING:  # torch and timm are imported only where a model is built or read (metadata commands skip them)
    import torch
    from torch import nn

log = logging.getLogger(__name__)

#: Label count of the paper, used for the parameter counts of ``cxrgen models``.
PAPER_NUM_LABELS = 5


@dataclass(frozen=True)
class ArchSpec:
    """One architecture a study may name.

    Attributes:
        name: Registry key, as written under ``architectures:`` in the study file.
        timm_name: Model name (optionally ``name.tag``) passed to ``timm.create_model``; the tag picks the
            pretrained weights.
        input_size: Side in pixels of the square grayscale input the cache is built at.
        cam_layer: Dotted module path (``model.get_submodule``) whose activations Grad-CAM uses; ``None`` means
            the last feature stage timm reports in ``model.feature_info``.
        freeze_bn_scale: Keras-faithful option: Keras builds this network's BatchNorm without a scale (gamma),
            so gammas are fixed at 1 and frozen when ``keras_faithful`` is asked.
        paper_trainable: Trainable parameters of the paper's Keras model with 5 labels, when published.
        min_input_size: The smallest side in pixels the network runs on (below it a pooling or convolution kernel
            is larger than its input and the forward pass fails).
    """

    name: str
    timm_name: str
    input_size: int
    cam_layer: str | None = None
    freeze_bn_scale: bool = False
    paper_trainable: int | None = None
    min_input_size: int = 32


ARCHITECTURES: dict[str, ArchSpec] = {}


def register(factory: Callable[[], ArchSpec]) -> Callable[[], ArchSpec]:
    """Decorator: add the spec returned by ``factory`` to :data:`ARCHITECTURES` under its name."""
    spec = factory()
    if spec.name in ARCHITECTURES:
        raise ValueError(f"architecture {spec.name!r} is registered twice")
    ARCHITECTURES[spec.name] = spec
    return factory


@register
def densenet121() -> ArchSpec:
    # tv_in1k: torchvision's weights, ported from the authors' original models like the Keras weights the
    # paper used (timm's default tag is timm's own re-training).
    return ArchSpec(
        name="densenet121",
        timm_name="densenet121.tv_in1k",
        input_size=224,
        cam_layer="features.norm5",
        paper_trainable=6_958_981,
    )


@register
def inception_resnet_v2() -> ArchSpec:
    # tf_in1k: ported from TF-slim, as are the Keras weights.
    return ArchSpec(
        name="inception_resnet_v2",
        timm_name="inception_resnet_v2.tf_in1k",
        input_size=299,
        cam_layer="conv2d_7b",
        freeze_bn_scale=True,
        paper_trainable=54_283_877,
        min_input_size=75,  # at 74 px its last unpadded 3x3 stage meets a 2x2 map: "Kernel size can't be greater"
    )


def get_arch(name: str) -> ArchSpec:
    """The spec of a registered architecture or of any timm model name.

    Raises:
        CxrgenError: the name is neither registered nor a timm model; the message suggests close names.
    """
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    import timm  # only for a name outside the registry: its facts live in timm's pretrained config

    if timm.is_model(name):
        try:
            cfg = timm.get_pretrained_cfg(name)
        except RuntimeError as exc:  # an unknown pretrained tag after the dot
            raise CxrgenError(f"architecture {name!r}: {exc}") from exc
        size = cfg.input_size if cfg is not None else (3, 224, 224)
        return ArchSpec(name=name, timm_name=name, input_size=int(size[-1]))
    close = difflib.get_close_matches(name, [*ARCHITECTURES, *timm.list_models()], n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in dict.fromkeys(close))}?" if close else ""
    raise CxrgenError(
        f"unknown architecture {name!r} (registered: {', '.join(sorted(ARCHITECTURES))}; or any timm model){hint}"
    )


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters the optimizer updates (``requires_grad``); buffers such as BN statistics excluded."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _read_weights(path: Path, sha256: str | None) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or of a torch state_dict file (loaded with ``weights_only=True``)."""
    import torch

    if not path.is_file():
        raise CxrgenError(f"pretrained weights file {path} does not exist (train.weights in the study file)")
    if sha256 is not None:
        actual = sha256_of(path)
        if actual.lower() != sha256.lower():
            raise CxrgenError(f"pretrained weights file {path}: sha256 is {actual}, the study file expects {sha256}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        raise CxrgenError(f"pretrained weights file {path} cannot be read as a state_dict: {exc}") from exc
    # Training scripts often wrap the state_dict (timm: "state_dict"/"model"); unwrap one level.
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise CxrgenError(f"pretrained weights file {path} holds a {type(state).__name__}, not a state_dict")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _load_backbone(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load every backbone tensor; the classifier is ours (new label count), so the file's is dropped."""
    cfg: Mapping[str, object] = getattr(model, "pretrained_cfg", {})
    classifier = str(cfg.get("classifier", "classifier"))
    state = {k: v for k, v in state.items() if not k.startswith(classifier + ".")}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(classifier + ".")]
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise CxrgenError(
            f"pretrained weights file {path} does not fit this architecture: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(result.unexpected_keys)} unexpected keys "
            f"(e.g. {result.unexpected_keys[:3]})"
        )


def _freeze_bn_scale(model: nn.Module) -> None:
    """Fix every BatchNorm gamma at 1 and freeze it, as in a Keras ``BatchNormalization(scale=False)``."""
    import torch
    from torch import nn

    moved = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
            if module.weight.device.type != "meta":
                moved += int((module.weight.detach() - 1).abs().max().item() > 1e-6)
            with torch.no_grad():
                module.weight.fill_(1.0)
            module.weight.requires_grad_(False)
    if moved:
        log.warning("keras_faithful: %d BatchNorm layers had gammas != 1; they are now fixed at 1", moved)


def _hub_repo(spec: ArchSpec) -> str | None:
    """The hub repository timm downloads ``spec``'s weights from, or None (a URL, or no pretrained config)."""
    import timm

    cfg = timm.get_pretrained_cfg(spec.timm_name)
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


def _no_weights_message(spec: ArchSpec, exc: Exception) -> str:
    hub = _hub_repo(spec)
    where = f"https://huggingface.co/{hub}/resolve/main/model.safetensors" if hub else "timm's weight files"
    return (
        f"pretrained weights for {spec.name!r} could not be downloaded ({type(exc).__name__}: {exc}). "
        f"Download {where} on a machine with internet access and name it in the study file under "
        f"train.weights.{spec.name} (optionally train.weights_sha256.{spec.name}), or set train.pretrained: false"
    )


def create_model(
    arch: str,
    num_labels: int,
    pretrained: bool,
    weights_path: Path | None = None,
    weights_sha256: str | None = None,
    keras_faithful: bool = False,
) -> nn.Module:
    """Build a classifier: timm backbone, global average pooling, one linear layer of ``num_labels`` logits.

    Args:
        arch: Registry key or timm model name (see :func:`get_arch`).
        num_labels: Outputs of the linear layer, one logit per label (no sigmoid).
        pretrained: Start from ImageNet weights. They come from ``weights_path`` when given, otherwise from
            timm's hub; when neither works the call fails instead of silently training from random weights.
        weights_path: Local ``.safetensors`` or torch state_dict file of the timm backbone; its classifier is
            ignored. Only read when ``pretrained`` is true.
        weights_sha256: Expected SHA-256 of ``weights_path``, checked before loading.
        keras_faithful: Apply the spec's Keras options so trainable parameters match the paper's count.

    Raises:
        CxrgenError: unknown architecture, missing or mismatching weights file, or weights unobtainable.
    """
    import timm

    spec = get_arch(arch)
    hub = pretrained and weights_path is None
    if hub:
        require_hub_weights(spec.name, _hub_repo(spec))
    try:
        model = timm.create_model(spec.timm_name, pretrained=hub, num_classes=num_labels, global_pool="avg")
    except Exception as exc:  # hub failures surface as OSError, HTTP, hub-offline or RuntimeError types
        if not hub:
            raise
        raise CxrgenError(_no_weights_message(spec, exc)) from exc
    if pretrained and weights_path is not None:
        _load_backbone(model, _read_weights(Path(weights_path), weights_sha256), Path(weights_path))
    if keras_faithful and spec.freeze_bn_scale:
        _freeze_bn_scale(model)
    return model


def create_backbone(
    timm_name: str,
    pretrained: bool,
    size: int,
    weights_path: Path | None = None,
    weights_sha256: str | None = None,
) -> nn.Module:
    """A timm backbone without classifier (``num_classes=0``): images [B, 3, size, size] -> pooled features [B, D].

    ``size`` is passed as ``img_size`` to models that need it (ViTs with fixed position embeddings) when it
    differs from the pretrained config's; models that take no ``img_size`` (CNNs) accept any size as they are.
    Weights come from ``weights_path`` (checked against ``weights_sha256``) or timm's hub, as in
    :func:`create_model`; with ``pretrained`` false the weights are timm's random initialization.
    """
    import timm

    spec = get_arch(timm_name)
    hub = pretrained and weights_path is None
    if hub:
        require_hub_weights(spec.name, _hub_repo(spec))
    options: dict[str, Any] = {"pretrained": hub, "num_classes": 0}
    if size != spec.input_size:
        options["img_size"] = size
    try:
        try:
            model = timm.create_model(spec.timm_name, **options)
        except TypeError:  # the model class takes no img_size: it is size-agnostic
            options.pop("img_size", None)
            model = timm.create_model(spec.timm_name, **options)
    except Exception as exc:  # hub failures surface as OSError, HTTP, hub-offline or RuntimeError types
        if not hub:
            raise
        raise CxrgenError(_no_weights_message(spec, exc)) from exc
    if pretrained and weights_path is not None:
        _load_backbone(model, _read_weights(Path(weights_path), weights_sha256), Path(weights_path))
    return model


def models_table(names: list[str] | None = None, num_labels: int = PAPER_NUM_LABELS) -> list[dict[str, object]]:
    """Rows for ``cxrgen models``: name, input size, trainable parameters (Keras-faithful) and the paper's count.

    Models are built on the meta device, so no memory is allocated and no weights are needed.
    """
    import torch

    rows: list[dict[str, object]] = []
    for name in names or list(ARCHITECTURES):
        spec = get_arch(name)
        with torch.device("meta"):
            model = create_model(name, num_labels, pretrained=False, keras_faithful=True)
        rows.append(
            {
                "name": spec.name,
                "timm": spec.timm_name,
                "input_size": spec.input_size,
                "trainable_parameters": trainable_parameters(model),
                "paper": spec.paper_trainable if num_labels == PAPER_NUM_LABELS else None,
            }
        )
    return rows
