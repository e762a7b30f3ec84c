"""The affine kernel model: ``out[o] = sum_i k[o, i] * in[i] + b[o]``, correlation orientation."""

from __future__ import annotations

import cv2
import numpy as np

from img2kernel.models.base import KernelModel

CHANNEL_NAMES = {1: "gray", 3: "RGB"}
OUTPUT_WORDS = {
    "float": "",
    "abs_uint8": ", |y| saturated to 8 bits",
    "uint8": ", rounded and clipped to 8 bits",
    "uint16": ", rounded and clipped to 16 bits",
    "uint16_x257": ", rounded to 8-bit levels stored as 16 bits (x257)",
}


def correlate_valid(plane: np.ndarray, kernel: np.ndarray, dtype: type) -> np.ndarray:
    """Valid correlation of a 2-D plane (H + 2h, W + 2h) with a (K, K) kernel: (H, W) in ``dtype``.

    ``cv2.filter2D`` correlates (no flip); BORDER_ISOLATED because the halo is already there.
    """
    h = kernel.shape[-1] // 2
    depth = cv2.CV_64F if dtype == np.float64 else cv2.CV_32F
    full = cv2.filter2D(np.ascontiguousarray(plane, dtype=dtype), depth, np.asarray(kernel, dtype=dtype),
                        borderType=cv2.BORDER_ISOLATED)
    return full[h : full.shape[0] - h, h : full.shape[1] - h]


class AffineKernel(KernelModel):
    """A (C_out, C_in, K, K) kernel and a (C_out,) bias.

    Gray (1 -> 1), per-channel or cross-channel colour (3 -> 3), colour to gray (3 -> 1)
    and gray to colour (1 -> 3) are all this model; a filter of our own is the 1 -> 1,
    zero-bias case. Zero kernel blocks (per-channel filters) cost nothing at prediction.
    """

    name = "affine"
    rung = "linear"
    layout = "kernel (C_out, C_in, K, K) correlation orientation, bias (C_out,); out[o] = sum_i k[o,i] * in[i] + b[o]"

    @property
    def ladder_rung(self) -> str:
        # |y| saturated to 8 bits is a fixed pointwise curve after the kernel.
        return "curve" if self.output == "abs_uint8" else "linear"

    def __init__(self, kernel: np.ndarray, bias: np.ndarray | None = None, output: str = "float"):
        kernel = np.asarray(kernel, dtype=np.float64)
        super().__init__(kernel[None, None] if kernel.ndim == 2 else kernel, "(C_out, C_in, K, K)", output)
        c_out = self.kernel.shape[0]
        bias = np.zeros(c_out) if bias is None else np.asarray(bias, dtype=np.float64).reshape(-1)
        if bias.shape != (c_out,):
            raise ValueError(f"bias must have one value per output channel ({c_out}), got {bias.shape}")
        self.bias = bias

    @property
    def c_out(self) -> int:
        return self.kernel.shape[0]

    def respond(self, padded, dtype):
        h = self.halo
        shape = (padded[0].shape[0] - 2 * h, padded[0].shape[1] - 2 * h)
        out = []
        for o in range(self.c_out):
            acc = np.full(shape, self.bias[o], dtype=dtype)
            for i in range(self.c_in):
                if np.any(self.kernel[o, i]):
                    acc += correlate_valid(padded[i], self.kernel[o, i], dtype)
            out.append(acc)
        return out

    def tensors(self):
        return {"kernel": self.kernel, "bias": self.bias}

    @classmethod
    def from_tensors(cls, tensors, output="float"):
        return cls(tensors["kernel"], tensors.get("bias"), output)

    def structure(self) -> str:
        """How channels are used: the base's answer, with per-channel told from cross-channel."""
        if self.c_in != self.c_out or self.c_in == 1:
            return super().structure()
        off_diagonal = max(
            (np.max(np.abs(self.kernel[o, i])) for o in range(self.c_out) for i in range(self.c_in) if o != i),
            default=0.0,
        )
        return "per-channel" if off_diagonal <= 1e-9 * (np.max(np.abs(self.kernel)) or 1.0) else "cross-channel"

    def describe(self) -> str:
        k = self.ksize
        text = f"{k}x{k} affine kernel, {CHANNEL_NAMES.get(self.c_in, self.c_in)} -> {CHANNEL_NAMES.get(self.c_out, self.c_out)}"
        structure = self.structure()
        if structure not in ("gray",):
            text += f" ({structure})"
        if np.any(self.bias):
            text += ", bias " + ", ".join(f"{b:+.4g}" for b in self.bias)
        return text + OUTPUT_WORDS[self.output]
