"""Models from elsewhere: an ONNX or TorchScript file, or a timm architecture with a full state dict, predicted on a
study's test sets, never trained (issue 23).

An ``architectures:`` entry ``{name, onnx | torchscript | timm + weights, sha256, input_size, normalize, outputs,
output}`` (:class:`cxrgen.study.config.ExternalModelSpec`). Before any image is read the file's SHA-256 is checked, and
its one input must take ``[N, 3, S, S]`` float images (S = ``input_size``) and its one output give ``[N, K]`` with
K above every index of ``outputs``; otherwise an error names the file, the expected and the found shape. ONNX
runs through onnxruntime (its CUDA provider where there is one, else the CPU); TorchScript through
``torch.jit.load`` on the CPU map location; a timm state dict (``.safetensors``, else ``torch.load(...,
weights_only=True)``) into ``timm.create_model(timm, pretrained=False, num_classes=K)``, K read from the file's
classifier, loaded strictly (keys and shapes that do not fit are named). The images are the study's cache at
``input_size`` (its CLAHE setting), the same rows every trained model of the configuration is judged on.

A run folder of such a model holds ``predictions/<test_set>.parquet`` (with the model's SHA-256 in its
metadata, so a changed file is predicted again), ``auc.csv`` and ``done.json`` (``{"external": ...}``); no
checkpoint, no validation predictions.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from cxrgen.data.loaders import CXRDataModule, UnionDataset
from cxrgen.errors import CxrgenError
from cxrgen.learn.predict import predictions_frame, test_rows_digest
from cxrgen.metrics.evaluate import UNPREDICTED_KEY
from cxrgen.models.normalize import IMAGENET_MEAN, IMAGENET_STD
from cxrgen.study.config import ExternalModelSpec
from cxrgen.study.workspace import Study
from cxrgen.utils.fileio import parquet_metadata, sha256_of, write_parquet, write_text

log = logging.getLogger(__name__)


class ExternalModelError(CxrgenError, ValueError):
    """A model file that cannot be used as its entry says; the message names the file and what was expected."""


def _shape(dims: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else "N" if d in (None, "") else str(d) for d in dims) + "]"


@dataclass
class ExternalModel:
    """A loaded model from elsewhere: ``run(float32 [B, 3, S, S]) -> float [B, K]`` (its raw outputs)."""

    spec: ExternalModelSpec
    outputs: int
    session: Any = None
    module: torch.nn.Module | None = None
    input_name: str = ""

    def run(self, images: np.ndarray) -> np.ndarray:
        if self.session is not None:
            return np.asarray(self.session.run(None, {self.input_name: images})[0], dtype=np.float64)
        assert self.module is not None
        with torch.inference_mode():
            return self.module(torch.from_numpy(images)).double().numpy()


def check_sha256(spec: ExternalModelSpec) -> None:
    path = spec.file
    if not path.is_file():
        raise ExternalModelError(f"{path}: model file of architectures entry {spec.name!r} does not exist")
    found = sha256_of(path)
    if found.lower() != spec.sha256.lower():
        raise ExternalModelError(
            f"{path}: sha256 is {found}, architectures entry {spec.name!r} expects {spec.sha256.lower()}; "
            "a different or damaged file"
        )


def _check_output_width(spec: ExternalModelSpec, width: int | None, labels: Sequence[str], found: str) -> int:
    needed = 1 + max(label_outputs(spec, labels).values(), default=-1)
    if width is None or width < needed:
        raise ExternalModelError(
            f"{spec.file}: output shape {found} does not fit: expected [N, K] with K >= {needed} (outputs of "
            f"{spec.name!r}: {label_outputs(spec, labels)})"
        )
    return width


def label_outputs(spec: ExternalModelSpec, labels: Sequence[str]) -> dict[str, int]:
    """Study label -> output column: ``outputs`` where given, else the study's labels in order."""
    if spec.outputs is None:
        return {label: index for index, label in enumerate(labels)}
    return {label: index for label, index in spec.outputs.items() if label in labels}


def load_onnx(spec: ExternalModelSpec, labels: Sequence[str]) -> ExternalModel:
    import onnx
    import onnxruntime

    path, size = spec.file, spec.size
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # onnx raises DecodeError, ValueError or its own errors for a file that is not ONNX
        raise ExternalModelError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc})") from None
    initializers = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise ExternalModelError(
            f"{path}: the model has {len(inputs)} inputs ({names}); expected one image input [N, 3, {size}, {size}]"
        )
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in inputs[0].type.tensor_type.shape.dim]
    expected = [None, 3, size, size]
    fits = len(dims) == 4 and all(
        not isinstance(d, int) or d == 0 or e is None or d == e for d, e in zip(dims, expected, strict=True)
    )
    if not fits:
        raise ExternalModelError(
            f"{path}: input shape {_shape(dims)} does not fit: expected [N, 3, {size}, {size}] (input_size: {size})"
        )
    if len(graph.output) != 1:
        raise ExternalModelError(f"{path}: the model has {len(graph.output)} outputs; expected one, [N, K]")
    out = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in graph.output[0].type.tensor_type.shape.dim]
    width = out[1] if len(out) == 2 and isinstance(out[1], int) and out[1] > 0 else None
    _check_output_width(spec, width, labels, _shape(out))
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                 if p in onnxruntime.get_available_providers()]  # fmt: skip
    try:
        session = onnxruntime.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # onnxruntime's own exception types (InvalidGraph, Fail) derive from RuntimeError
        raise ExternalModelError(f"{path}: onnxruntime cannot load the model ({exc})") from None
    assert width is not None
    return ExternalModel(spec, width, session=session, input_name=inputs[0].name)


def load_torchscript(spec: ExternalModelSpec, labels: Sequence[str]) -> ExternalModel:
    path = spec.file
    try:
        module = torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, ValueError) as exc:
        raise ExternalModelError(f"{path}: not a TorchScript model ({' '.join(str(exc).split())[:200]})") from None
    return ExternalModel(spec, _probe_module(spec, module, labels), module=module)


def _probe_module(spec: ExternalModelSpec, module: torch.nn.Module, labels: Sequence[str]) -> int:
    """The output width of ``module``, checked on a zero batch: no image is read before the model is known to fit."""
    path, size = spec.file, spec.size
    try:
        with torch.inference_mode():
            probe = module(torch.zeros(2, 3, size, size))
    except (RuntimeError, AssertionError) as exc:  # timm's fixed-size models assert on the input size
        raise ExternalModelError(
            f"{path}: input shape does not fit: expected [N, 3, {size}, {size}] (input_size: {size}); the model "
            f"fails on it ({' '.join(str(exc).split())[:200]})"
        ) from None
    if not isinstance(probe, torch.Tensor) or probe.dim() != 2 or probe.shape[0] != 2:
        found = _shape(list(probe.shape)) if isinstance(probe, torch.Tensor) else type(probe).__name__
        raise ExternalModelError(
            f"{path}: output shape {found} does not fit: expected [N, K] for [N, 3, {size}, {size}]"
        )
    return _check_output_width(spec, int(probe.shape[1]), labels, _shape(list(probe.shape)))


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or of a torch state dict (``weights_only``; one wrapper unwrapped)."""
    from cxrgen.models.registry import _read_weights

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as exc:
            raise ExternalModelError(f"{path}: not a safetensors file ({exc})") from None
    try:
        return _read_weights(path, None)
    except CxrgenError as exc:
        raise ExternalModelError(f"{path}: not a torch state dict ({exc})") from None


def _dims(tensor: torch.Tensor) -> str:
    return "[" + ", ".join(str(d) for d in tensor.shape) + "]"


def load_timm(spec: ExternalModelSpec, labels: Sequence[str]) -> ExternalModel:
    """The timm architecture ``spec.timm`` with the file's full state dict, loaded strictly."""
    import timm

    from cxrgen.models.registry import get_arch

    path, arch = spec.file, get_arch(spec.timm or "")
    state = _read_state(path)
    config = timm.get_pretrained_cfg(arch.timm_name)
    heads = getattr(config, "classifier", None) or "classifier"
    head = heads if isinstance(heads, str) else heads[0]  # a distilled model names two heads: the first is its own
    key = f"{head}.weight"
    if key not in state or state[key].dim() < 1:
        raise ExternalModelError(
            f"{path}: no classifier {key!r} for timm model {spec.timm!r}: expected a full state dict (backbone and "
            f"classifier); found {len(state)} tensors (e.g. {list(state)[:3]})"
        )
    classes = int(state[key].shape[0])
    model = timm.create_model(arch.timm_name, pretrained=False, num_classes=classes).eval()
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: expected {_dims(expected[k])}, found {_dims(v)}"
              for k, v in state.items() if k in expected and v.shape != expected[k].shape]  # fmt: skip
    if missing or unexpected or shapes:
        parts = [f"{len(shapes)} shapes differ ({'; '.join(shapes[:3])})"] if shapes else []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        raise ExternalModelError(
            f"{path}: the state dict does not fit timm model {spec.timm!r} with {classes} classes: " + ", ".join(parts)
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ExternalModelError(f"{path}: the state dict does not fit timm model {spec.timm!r}: {exc}") from None
    return ExternalModel(spec, _probe_module(spec, model, labels), module=model)


def load_external(spec: ExternalModelSpec, labels: Sequence[str]) -> ExternalModel:
    """Check the file's SHA-256 and its input and output shapes, then load it; no image is read."""
    check_sha256(spec)
    loaders = {"onnx": load_onnx, "torchscript": load_torchscript, "timm": load_timm}
    return loaders[spec.kind](spec, labels)


def normalize(images: torch.Tensor, spec: ExternalModelSpec) -> np.ndarray:
    """uint8 [B, 1, S, S] -> float32 [B, 3, S, S]: x / 255, the entry's normalization, replicated to 3 channels."""
    gray = images.float().div_(255.0)
    if spec.normalize == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    else:
        mean, std = torch.tensor(spec.normalize[0]), torch.tensor(spec.normalize[1])
    return ((gray.expand(-1, 3, -1, -1) - mean) / std).contiguous().numpy().astype(np.float32)


def predict_model(model: ExternalModel, dataset: Any, labels: Sequence[str], batch_size: int) -> np.ndarray:
    """Probabilities [N, L] of every item of ``dataset`` in order; a study label the model lacks is NaN."""
    spec = model.spec
    columns = label_outputs(spec, labels)
    lacking = [label for label in labels if label not in columns]
    if lacking:
        warnings.warn(
            f"{spec.file}: model {spec.name!r} has no output for {lacking}; their predictions are NaN", stacklevel=2
        )
    n = len(dataset)
    probs = np.full((n, len(labels)), np.nan)
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        raw = model.run(normalize(batch["image"], spec))
        p = 1.0 / (1.0 + np.exp(-raw)) if spec.output == "logits" else raw
        rows = batch["index"].numpy()
        for j, label in enumerate(labels):
            if label in columns:
                probs[rows, j] = p[:, columns[label]]
    return probs


def predict_external_run(
    study: Study, configuration_name: str, arch: str, datamodule: CXRDataModule | None = None, seed: int | None = None
) -> list[str]:
    """Predict every test set of the configuration with the model from elsewhere ``arch``; returns their names.

    A predictions file made from the same model file and the same test rows is kept.
    """
    config = study.config
    spec = config.external_model(arch)
    if spec is None:
        raise ExternalModelError(
            f"architecture {arch!r} is no model from elsewhere (onnx:, torchscript:, timm: with weights:)"
        )
    labels = list(config.labels)
    model = load_external(spec, labels)  # refuses a wrong file before any image is read
    configuration = config.configuration(configuration_name)
    run = study.run(configuration_name, arch, seed)
    if datamodule is None:
        datamodule = CXRDataModule.from_study(study, configuration_name, spec.size)
    done = []
    lacking = [label for label in labels if label not in label_outputs(spec, labels)]
    for test_set in configuration.test_sets():
        parts = [datamodule.test_dataset(name) for name in test_set.datasets]
        dataset = parts[0] if len(parts) == 1 else UnionDataset(parts)
        out, rows = run.predictions(test_set.name), test_rows_digest(dataset)
        recorded = parquet_metadata(out) if out.is_file() else {}
        if recorded.get("model_sha256") != spec.sha256.lower() or recorded.get("test_rows_sha256") != rows:
            p = predict_model(model, dataset, labels, config.train.batch_size)
            frame = predictions_frame(dataset.image_ids, dataset.patient_ids, labels, p, np.asarray(dataset.targets))
            metadata = {"model_sha256": spec.sha256.lower(), "test_rows_sha256": rows, "test_set": test_set.name,
                        "arch": arch, "configuration": configuration_name, "external": spec.kind,
                        UNPREDICTED_KEY: json.dumps(lacking)}  # fmt: skip
            write_parquet(frame, out, metadata=metadata)
        done.append(test_set.name)
    write_text(run.done, json.dumps({"external": spec.kind, "file": str(spec.file), "sha256": spec.sha256.lower()}))
    return done
