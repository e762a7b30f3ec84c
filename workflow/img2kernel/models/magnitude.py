"""The magnitude model: ``out = sqrt(sum_j (k_j * in)^2)``, the edge strength of n kernels."""

from __future__ import annotations

import numpy as np

from img2kernel.models.affine import OUTPUT_WORDS, correlate_valid
from img2kernel.models.base import KernelModel


class MagnitudeModel(KernelModel):
    """n kernels (n, C_in, K, K) whose responses are combined by the Euclidean norm.

    The kernels are unique only up to an orthogonal transform of the n-tuple (a rotation
    or reflection leaves the norm unchanged): compare them after Procrustes alignment
    (:func:`img2kernel.evaluate.kernels.align`). The norm is computed in float64 and rounded once,
    so it has the same bits on every run and thread.
    """

    name = "magnitude"
    rung = "magnitude"
    layout = "kernel (n, C_in, K, K) correlation orientation; out = sqrt(sum_j (sum_i k[j,i] * in[i])^2)"

    def __init__(self, kernel: np.ndarray, output: str = "float"):
        kernel = np.asarray(kernel, dtype=np.float64)
        super().__init__(kernel[:, None] if kernel.ndim == 3 else kernel, "(n, C_in, K, K)", output)

    @property
    def c_out(self) -> int:
        return 1

    def respond(self, padded, dtype):
        total = None
        for j in range(self.kernel.shape[0]):
            response = sum(correlate_valid(padded[i], self.kernel[j, i], dtype) for i in range(self.c_in))
            square = np.square(response, dtype=np.float64)
            total = square if total is None else total + square
        return [np.sqrt(total).astype(dtype, copy=False)]

    def tensors(self):
        return {"kernel": self.kernel}

    @classmethod
    def from_tensors(cls, tensors, output="float"):
        return cls(tensors["kernel"], output)

    def describe(self) -> str:
        k, n = self.ksize, self.kernel.shape[0]
        if n == 1:
            text = f"absolute value of one {k}x{k} kernel's response, |k * x|"
        else:
            text = f"magnitude of {n} {k}x{k} kernels, sqrt(sum of squares)"
        return text + OUTPUT_WORDS[self.output]
