"""The two-curve model: a learned curve, a kernel, another learned curve (a tool that filters in
a space of its own).

``out = g(k * f(in) + b)`` on each plane, ``f`` and ``g`` piecewise linear (end segments
extended, :func:`img2kernel.models.curve.piecewise`). A tool that decodes a gamma other than
sRGB's (1.8, 2.2, a camera's log curve), filters, and encodes again is this model; the
linear-light model is its case with both curves fixed to the sRGB standard's, and is tried
first. The input curve's knots are spread evenly over the input's range and its values run
from 0 to 1 (the kernel's scale is the curve's), so its shape can be named: "a power curve
(gamma 1.80)", "the sRGB decode".
"""

from __future__ import annotations

import numpy as np

from img2kernel.models.affine import OUTPUT_WORDS, correlate_valid
from img2kernel.models.base import PlaneModel
from img2kernel.models.curve import piecewise, power_words


def srgb_words(knots: np.ndarray, values: np.ndarray, decode: bool) -> str | None:
    """'the sRGB decode' (or encode) when the curve is the standard's within 1% of its range."""
    from img2kernel.colour import srgb_decode, srgb_encode

    z, g = np.asarray(knots, dtype=np.float64), np.asarray(values, dtype=np.float64)
    low, high = (z[0], z[-1]) if decode else (g[0], g[-1])
    span_in, span_out = (z[-1] - z[0]) or 1.0, (g[-1] - g[0]) or 1.0
    unit_in, unit_out = (z - z[0]) / span_in, (g - g[0]) / span_out
    standard = srgb_decode(unit_in) if decode else srgb_encode(unit_in)
    if low >= 0 and high > low and np.max(np.abs(standard - unit_out)) <= 0.01:
        return "the sRGB decode" if decode else "the sRGB encode"
    return None


def unit_power_words(knots: np.ndarray, values: np.ndarray) -> str | None:
    """'a power curve (gamma 3.00)' when the curve, its ends taken as 0 and 1 on both axes, is
    u ** gamma within 1% (the gamma of the closest, by golden-section search), 'close to ...'
    within 5% (knots where few pixels fall are learned from few), else None."""
    from img2kernel.evaluate.identify import bounded_minimum

    z, g = np.asarray(knots, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if not g[-1] != g[0]:
        return None
    u, v = (z - z[0]) / (z[-1] - z[0]), (g - g[0]) / (g[-1] - g[0])
    gamma = bounded_minimum(lambda e: float(np.max(np.abs(u**e - v))), 0.1, 10.0, 1e-4)
    deviation = float(np.max(np.abs(u**gamma - v)))
    if deviation > 0.05 or abs(gamma - 1) <= 0.05:
        return None
    return ("" if deviation <= 0.01 else "close to ") + f"a power curve (gamma {gamma:.2f})"


def shape_words(knots: np.ndarray, values: np.ndarray, decode: bool) -> str:
    """A curve's shape in words: the sRGB standard, a power curve, or monotone / learned."""
    named = srgb_words(knots, values, decode) or unit_power_words(knots, values) or power_words(knots, values)
    if named:
        return named
    steps = np.diff(values)
    return "a monotone curve" if np.all(steps >= 0) or np.all(steps <= 0) else "a learned curve"


class TwoCurveModel(PlaneModel):
    """An input curve through (in_knots, in_values), a (K, K) kernel, a bias and an output curve
    through (knots, values), applied alike to each of ``channels`` planes."""

    name = "two_curves"
    rung = "two curves"
    layout = ("in_knots (M,), in_values (M,), kernel (K, K), bias (1,), knots (N,), values (N,), channels (1,); "
              "out[c] = interp(kernel * interp(in[c], in_knots, in_values) + bias, knots, values)")

    def __init__(self, in_knots, in_values, kernel, bias: float, knots, values, channels: int = 1, output: str = "float"):
        super().__init__(output)
        kernel = np.asarray(kernel, dtype=np.float64)
        if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
            raise ValueError(f"kernel must be (K, K) with K odd, got {kernel.shape}")
        curves = []
        for name, (k, v) in (("in_knots", (in_knots, in_values)), ("knots", (knots, values))):
            k, v = np.asarray(k, dtype=np.float64).reshape(-1), np.asarray(v, dtype=np.float64).reshape(-1)
            if k.shape != v.shape or k.size < 2 or np.any(np.diff(k) <= 0):
                raise ValueError(f"{name} must increase strictly and match their values one for one (at least 2)")
            curves += [k, v]
        self.in_knots, self.in_values, self.knots, self.values = curves
        self.kernel, self.bias, self.channels = kernel, float(bias), int(channels)

    @property
    def ksize(self) -> int:
        return self.kernel.shape[0]

    def respond_plane(self, plane, dtype):
        inner = piecewise(plane, self.in_knots, self.in_values)
        return piecewise(correlate_valid(inner, self.kernel, np.float64) + self.bias, self.knots, self.values).astype(dtype, copy=False)

    def tensors(self):
        return {"in_knots": self.in_knots, "in_values": self.in_values, "kernel": self.kernel, "bias": np.array([self.bias]),
                "knots": self.knots, "values": self.values, "channels": np.array([float(self.channels)])}

    @classmethod
    def from_tensors(cls, tensors, output="float"):
        return cls(tensors["in_knots"], tensors["in_values"], tensors["kernel"], float(tensors["bias"].reshape(-1)[0]),
                   tensors["knots"], tensors["values"], int(tensors["channels"].reshape(-1)[0]), output)

    @property
    def n_parameters(self) -> int:
        # Knot positions come from the data's range; the input curve's two ends are fixed (0 and 1).
        return int(self.in_values.size - 2 + self.kernel.size + 1 + self.values.size)

    def describe(self) -> str:
        from img2kernel.evaluate.identify import identify_shape

        k = self.ksize
        named = identify_shape(self.kernel)
        before = shape_words(self.in_knots, self.in_values, decode=True)
        after = shape_words(self.knots, self.values, decode=False)
        return (f"{k}x{k} kernel ({named}) between two curves: {before} before it, {after} after"
                + (" on each channel" if self.channels > 1 else "") + OUTPUT_WORDS[self.output])
