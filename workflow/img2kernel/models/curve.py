"""The curve model: a kernel, then a learned pointwise curve, optionally with a linear skip path.

``out = g(k * in + b)`` or ``out = k_skip * in + g(k * in + b)``, with ``g`` piecewise linear
through ``knots`` (its end segments extended beyond the outer knots). Gamma after a blur, a clipped or
thresholded edge map, the absolute value of a derivative and a tone curve after sharpening
are the first form; unsharp masking with a threshold is the second.
"""

from __future__ import annotations

import numpy as np

from img2kernel.models.affine import OUTPUT_WORDS, correlate_valid
from img2kernel.models.base import PlaneModel

KNOTS = 24


def piecewise(z: np.ndarray, knots: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The curve through (knots, values) at z: linear between the knots, the first and last
    segments extended beyond them (an edge map's strongest responses keep rising to the file's
    clipping)."""
    z = np.asarray(z, dtype=np.float64)
    y = np.interp(z, knots, values)
    low, high = z < knots[0], z > knots[-1]
    y[low] = values[0] + (z[low] - knots[0]) * (values[1] - values[0]) / (knots[1] - knots[0])
    y[high] = values[-1] + (z[high] - knots[-1]) * (values[-1] - values[-2]) / (knots[-1] - knots[-2])
    return y


def power_words(knots: np.ndarray, values: np.ndarray) -> str | None:
    """'a power curve (gamma 0.44)' when the monotone curve's inner knots follow ``c * z ** gamma``
    within 2% of its range, else None."""
    z, g = np.asarray(knots, dtype=np.float64), np.asarray(values, dtype=np.float64)
    span = float(np.ptp(g)) or 1.0
    positive = (z > 0) & (g > 0)
    positive[[0, -1]] = False  # the outer knots hold few pixels (and the clamped tails)
    if positive.sum() < 4:
        return None
    slope, intercept = np.polyfit(np.log(z[positive]), np.log(g[positive]), 1)
    fitted = np.exp(intercept) * z[positive] ** slope
    if np.max(np.abs(fitted - g[positive])) <= 0.02 * span and abs(slope - 1) > 0.05:
        return f"a power curve (gamma {slope:.2f})"
    return None


class CurveModel(PlaneModel):
    """A (K, K) kernel, a bias, a curve through (knots, values) and an optional (K, K) skip
    kernel, applied alike to each of ``channels`` planes."""

    name = "curve"
    rung = "curve"
    layout = "kernel (K, K), bias (1,), knots (M,), values (M,), skip (K, K) optional, channels (1,); out[c] = skip * in[c] + interp(kernel * in[c] + bias, knots, values)"

    def __init__(self, kernel, bias: float, knots, values, skip=None, channels: int = 1, output: str = "float"):
        super().__init__(output)
        kernel = np.asarray(kernel, dtype=np.float64)
        knots, values = np.asarray(knots, dtype=np.float64).reshape(-1), np.asarray(values, dtype=np.float64).reshape(-1)
        if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
            raise ValueError(f"kernel must be (K, K) with K odd, got {kernel.shape}")
        if knots.shape != values.shape or knots.size < 2 or np.any(np.diff(knots) <= 0):
            raise ValueError("knots must increase strictly and match values one for one (at least 2)")
        if skip is not None and np.asarray(skip).shape != kernel.shape:
            raise ValueError(f"skip kernel must be {kernel.shape}, got {np.asarray(skip).shape}")
        self.kernel, self.bias, self.knots, self.values = kernel, float(bias), knots, values
        self.skip = None if skip is None else np.asarray(skip, dtype=np.float64)
        self.channels = int(channels)

    @property
    def ksize(self) -> int:
        return self.kernel.shape[0]

    def respond_plane(self, plane, dtype):
        y = self.curve(correlate_valid(plane, self.kernel, np.float64) + self.bias)
        if self.skip is not None:
            y = y + correlate_valid(plane, self.skip, np.float64)
        return y.astype(dtype, copy=False)

    def curve(self, z: np.ndarray) -> np.ndarray:
        """g(z) (:func:`piecewise`)."""
        return piecewise(z, self.knots, self.values)

    def tensors(self):
        tensors = {"kernel": self.kernel, "bias": np.array([self.bias]), "knots": self.knots, "values": self.values,
                   "channels": np.array([float(self.channels)])}
        if self.skip is not None:
            tensors["skip"] = self.skip
        return tensors

    @classmethod
    def from_tensors(cls, tensors, output="float"):
        return cls(tensors["kernel"], float(tensors["bias"].reshape(-1)[0]), tensors["knots"], tensors["values"],
                   tensors.get("skip"), int(tensors["channels"].reshape(-1)[0]), output)


    @property
    def n_parameters(self) -> int:
        # The knots' positions are fixed from the data's range; their values are learned.
        return int(self.kernel.size + 1 + self.values.size + (0 if self.skip is None else self.skip.size))

    def curve_words(self) -> str:
        """What the curve looks like: monotone, a power law (gamma), V-shaped (an absolute value)."""
        z, g = self.knots, self.values
        steps = np.diff(g)
        span = float(np.ptp(g)) or 1.0
        if np.all(steps >= -1e-3 * span) or np.all(steps <= 1e-3 * span):
            return power_words(z, g) or "a monotone curve"
        lowest = int(np.argmin(g))
        inner = steps[1:-1]  # outer knots: few pixels
        if 1 < lowest < len(g) - 2 and np.all(inner[: lowest - 1] <= 0.01 * span) and np.all(inner[lowest - 1 :] >= -0.01 * span):
            return "a V-shaped curve (an absolute value)"
        return "a learned curve"

    def describe(self) -> str:
        k = self.ksize
        text = f"{k}x{k} kernel, then {self.curve_words()} ({len(self.knots)} knots)"
        if self.skip is not None:
            text = f"{k}x{k} kernel plus a {k}x{k} kernel through {self.curve_words()} ({len(self.knots)} knots)"
        return text + (" on each channel" if self.channels > 1 else "") + OUTPUT_WORDS[self.output]
