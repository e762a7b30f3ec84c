"""The small CNN: the ladder's last resort, reported as a fit, never as an identification.

Fully convolutional: a 3x3 convolution to ``width`` channels, ReLU, a 3x3 convolution,
ReLU, a 1x1 convolution to one output, plus a 5x5 linear skip path (so it starts from the
best linear fit and can only add to it). Inputs are divided by ``scale`` and outputs
multiplied by it, which keeps the weights near 1 for 8-bit or float data alike. Prediction
is numpy and OpenCV (valid correlations), like every model; torch is needed only to fit.
"""

from __future__ import annotations

import numpy as np

from img2kernel.models.affine import OUTPUT_WORDS, correlate_valid
from img2kernel.models.base import PlaneModel

WIDTH = 8


class CnnModel(PlaneModel):
    """Weights ``w1`` (W, 3, 3), ``b1`` (W,), ``w2`` (W, W, 3, 3), ``b2`` (W,), ``w3`` (W,),
    ``b3`` (1,), ``skip`` (5, 5) and ``scale`` (1,), applied alike to each of ``channels`` planes."""

    name = "cnn"
    rung = "cnn"
    identifies = False
    layout = "w1 (W, 3, 3), b1 (W,), w2 (W, W, 3, 3), b2 (W,), w3 (W,), b3 (1,), skip (5, 5), scale (1,); x = in / scale; out = scale * (w3 . relu(w2 * relu(w1 * x + b1) + b2) + skip * x + b3)"

    def __init__(self, w1, b1, w2, b2, w3, b3, skip, scale: float, channels: int = 1, output: str = "float"):
        super().__init__(output)
        self.w1, self.b1 = np.asarray(w1, np.float64), np.asarray(b1, np.float64).reshape(-1)
        self.w2, self.b2 = np.asarray(w2, np.float64), np.asarray(b2, np.float64).reshape(-1)
        self.w3, self.b3 = np.asarray(w3, np.float64).reshape(-1), float(np.asarray(b3).reshape(-1)[0])
        self.skip, self.scale, self.channels = np.asarray(skip, np.float64), float(scale), int(channels)
        width = self.w1.shape[0]
        shapes = {"w1": (self.w1.shape, (width, 3, 3)), "b1": (self.b1.shape, (width,)),
                  "w2": (self.w2.shape, (width, width, 3, 3)), "b2": (self.b2.shape, (width,)),
                  "w3": (self.w3.shape, (width,)), "skip": (self.skip.shape, (5, 5))}
        for key, (got, want) in shapes.items():
            if got != want:
                raise ValueError(f"{key} must be {want}, got {got}")
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")

    @property
    def ksize(self) -> int:
        return 5

    def respond_plane(self, plane, dtype):
        x = np.asarray(plane, np.float64) / self.scale
        hidden = [np.maximum(correlate_valid(x, w, np.float64) + b, 0) for w, b in zip(self.w1, self.b1)]
        y = correlate_valid(x, self.skip, np.float64) + self.b3
        for o in range(len(self.w2)):
            h2 = sum(correlate_valid(hidden[i], self.w2[o, i], np.float64) for i in range(len(hidden))) + self.b2[o]
            y = y + self.w3[o] * np.maximum(h2, 0)
        return (y * self.scale).astype(dtype, copy=False)

    def tensors(self):
        return {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2, "w3": self.w3, "b3": np.array([self.b3]),
                "skip": self.skip, "scale": np.array([self.scale]), "channels": np.array([float(self.channels)])}

    @classmethod
    def from_tensors(cls, tensors, output="float"):
        return cls(tensors["w1"], tensors["b1"], tensors["w2"], tensors["b2"], tensors["w3"], tensors["b3"],
                   tensors["skip"], float(tensors["scale"].reshape(-1)[0]), int(tensors["channels"].reshape(-1)[0]), output)


    @property
    def n_parameters(self) -> int:
        return int(self.w1.size + self.b1.size + self.w2.size + self.b2.size + self.w3.size + 1 + self.skip.size)

    def describe(self) -> str:
        width = self.w1.shape[0]
        text = (f"small CNN, 3x3 conv to {width} channels, ReLU, 3x3 conv, ReLU, 1x1 conv, plus a 5x5 linear path "
                f"({self.n_parameters} weights; a fit, not an identification)")
        return text + (" on each channel" if self.channels > 1 else "") + OUTPUT_WORDS[self.output]
