"""Models: one interface (:class:`Model`), a registry, and loading from safetensors.

Adding a model: write its module here (a :class:`Model` subclass) and add one line to
``MODELS``; every stage then trains, evaluates, applies and reports it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from img2kernel.models.affine import AffineKernel
from img2kernel.models.base import Model, planes, stack
from img2kernel.models.cnn import CnnModel
from img2kernel.models.curve import CurveModel
from img2kernel.models.curves import TwoCurveModel
from img2kernel.models.field import GainMapModel, KernelMapModel
from img2kernel.models.light import LinearLightModel
from img2kernel.models.magnitude import MagnitudeModel
from img2kernel.models.rank import RankModel
from img2kernel.models.resample import ResampleModel

# In the order of the ladder (docs/design.md, "The ladder"): each rung the simplest
# explanation at its step, the CNN the last resort.
MODELS: dict[str, type[Model]] = {
    AffineKernel.name: AffineKernel,
    ResampleModel.name: ResampleModel,
    LinearLightModel.name: LinearLightModel,
    CurveModel.name: CurveModel,
    MagnitudeModel.name: MagnitudeModel,
    RankModel.name: RankModel,
    TwoCurveModel.name: TwoCurveModel,
    GainMapModel.name: GainMapModel,
    KernelMapModel.name: KernelMapModel,
    CnnModel.name: CnnModel,
}

__all__ = ["MODELS", "AffineKernel", "CnnModel", "CurveModel", "GainMapModel", "KernelMapModel", "LinearLightModel", "MagnitudeModel", "Model", "RankModel", "ResampleModel", "TwoCurveModel",
           "load_model",
           "planes", "stack"]


def load_model(path: str | os.PathLike) -> tuple[Model, dict]:
    """(model, metadata) from a safetensors model file; nothing is unpickled.

    Metadata values written as JSON are decoded; every error names the file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file (results/models/NAME.safetensors)")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except SafetensorError as err:
        raise ValueError(f"{path}: not a safetensors model file ({err})") from None
    name = metadata.get("model")
    if name not in MODELS:
        raise ValueError(
            f"{path}: metadata 'model' is {name!r}, not one of {', '.join(MODELS)} "
            "(a model file written by an older img2kernel: rerun its train job)"
        )
    for key, value in tensors.items():
        if value.size == 0:
            raise ValueError(f"{path}: tensor {key!r} is empty (shape {value.shape})")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{path}: tensor {key!r} holds NaN or infinite values; refusing to use it")
    try:
        model = MODELS[name].from_tensors(tensors, metadata.get("output", "float"))
    except (KeyError, ValueError) as err:
        raise ValueError(f"{path}: {name} model with tensors {', '.join(f'{k} {v.shape}' for k, v in tensors.items())}: {err}") from None
    # The file's tensors must be the model's own, every one and in its shapes: a file relabelled
    # as another model (an affine file called `magnitude` would lose its bias) is refused.
    own = model.tensors()
    if set(own) != set(tensors) or any(np.shape(own[k]) != tensors[k].shape for k in own):
        written = ", ".join(f"{k} {tensors[k].shape}" for k in sorted(tensors))
        expected = ", ".join(f"{k} {np.shape(own[k])}" for k in sorted(own))
        raise ValueError(f"{path}: its metadata says {name!r}, whose tensors would be {expected}, but the file holds {written}; "
                         f"the metadata does not match the tensors")
    decoded = {}
    for key, value in metadata.items():
        try:
            decoded[key] = json.loads(value)
        except (TypeError, ValueError):
            decoded[key] = value
    from img2kernel import borders

    if "border" in decoded and decoded["border"] not in borders.RULES:
        raise ValueError(f"{path}: metadata 'border' is {decoded['border']!r}, not one of {', '.join(borders.RULES)}")
    if "placement" in decoded:
        from img2kernel.sources.geometry import Placement

        try:
            Placement.from_dict(decoded["placement"])
        except ValueError as err:
            raise ValueError(f"{path}: metadata 'placement': {err}") from None
    return model, decoded
