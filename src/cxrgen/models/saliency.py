"""Grad-CAM saliency for a trained classifier: where the model looked for one finding.

It sits beside :mod:`cxrgen.models.registry`, not in the report: the
report draws the maps, but computing them is a model
question (which layer, which logit), and training must never import report code (DESIGN.md section 4). The maps
come from ``pytorch_grad_cam`` (jacobgil/pytorch-grad-cam), not from hand-written hooks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cxrgen.errors import CxrgenError
from cxrgen.models.registry import ArchSpec

#: Images per Grad-CAM forward/backward pass (bounds memory at 299 px on CPU).
CAM_BATCH = 8


def cam_layer_name(model: nn.Module, spec: ArchSpec) -> str:
    """Dotted path of the layer Grad-CAM should hook for ``model`` built from ``spec``."""
    if spec.cam_layer is not None:
        return spec.cam_layer
    info = getattr(model, "feature_info", None)
    if not info:
        raise CxrgenError(f"architecture {spec.name!r} names no Grad-CAM layer and timm reports no feature_info")
    return str(info[-1]["module"])


def grad_cam(model: nn.Module, layer_name: str, images: np.ndarray, label_index: int) -> np.ndarray:
    """Grad-CAM maps in [0, 1], float32 [K, H, W], of uint8 images [K, H, W] for one output logit.

    The hooks of ``pytorch_grad_cam`` are released on exit of its context manager, so the model can be reused
    (and garbage-collected) afterwards.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from cxrgen.models.normalize import normalize_on_device

    device = next(model.parameters()).device
    model.eval()
    layer = model.get_submodule(layer_name)
    maps = []
    with GradCAM(model=model, target_layers=[layer]) as cam:
        for start in range(0, len(images), CAM_BATCH):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + CAM_BATCH]))[:, None].to(device)
            x = normalize_on_device(batch, channels_last=False)
            targets = [ClassifierOutputTarget(label_index) for _ in range(len(x))]
            maps.append(np.asarray(cam(input_tensor=x, targets=targets), dtype=np.float32))
    return np.concatenate(maps)


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """A Grad-CAM map over its grayscale image, uint8 RGB [H, W, 3] (``pytorch_grad_cam``'s jet overlay)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = np.repeat((image.astype(np.float32) / 255.0)[..., None], 3, axis=2)
    return np.asarray(show_cam_on_image(rgb, cam, use_rgb=True), dtype=np.uint8)
