"""Models whose response depends on where a pixel lies: a gain map and a kernel map.

A lens darkens the corners (vignetting) and blurs more towards them; a camera's shading
correction or an editor's vignette filter multiplies by a smooth field. One kernel cannot say
this, and a network would only fit it. Both models here place ``nodes`` x ``nodes`` control
points evenly over the image (corners included) and blend between them with bilinear weights,
which sum to one at every pixel, as the PSF-mode models of shift-variant deblurring do:

- :class:`GainMapModel`: ``out = gain(p) * (k * in)(p) + b``, one kernel times a smooth gain
  (a gain per node); with a 1x1 kernel, a pure gain map (vignetting).
- :class:`KernelMapModel`: ``out = sum_j w_j(p) (k_j * in)(p) + b``, a kernel per node, so the
  kernel itself changes across the field (a blur that grows with the radius).

Positions are fractions of the image, pixel (r, c) of an H x W image at
``((r + 0.5) / H, (c + 0.5) / W)``, so a map fitted on one image size applies to another
image of the same framing. Blocks say where they lie with a :class:`Location`.
"""

from __future__ import annotations

import math

import numpy as np

from img2kernel.models.affine import OUTPUT_WORDS, correlate_valid
from img2kernel.models.base import Location, PlaneModel

# Where the description looks across the field: a 9 x 9 grid of positions, corners included.
SURVEY = 9


def position(index, size):
    """Where pixel ``index`` of ``size`` lies, as a fraction 0..1 of the image (its centre)."""
    return (index + 0.5) / size


def fractions(start: int, count: int, size: int) -> np.ndarray:
    """(count,) positions of the pixels ``start .. start + count - 1`` of ``size``."""
    return position(start + np.arange(count), size)


def hat_weights(position: np.ndarray, nodes: int) -> np.ndarray:
    """(n, nodes) bilinear weights of positions in 0..1 on nodes at i / (nodes - 1); rows sum to one."""
    t = np.clip(np.asarray(position, dtype=np.float64), 0.0, 1.0) * (nodes - 1)
    left = np.minimum(np.floor(t).astype(int), nodes - 2)
    frac = t - left
    weights = np.zeros((len(t), nodes))
    rows = np.arange(len(t))
    weights[rows, left] = 1 - frac
    weights[rows, left + 1] = frac
    return weights


def node_weights(rows: np.ndarray, columns: np.ndarray, nodes: int) -> np.ndarray:
    """(n, nodes * nodes) weights of n pixels at positions (rows, columns) in 0..1, node (a, b) at a * nodes + b."""
    return (hat_weights(rows, nodes)[:, :, None] * hat_weights(columns, nodes)[:, None, :]).reshape(len(rows), -1)


def place_words(row: float, column: float) -> str:
    """'the centre', 'the corners', 'the top edge'... for a position in 0..1."""
    def side(t: float) -> int:
        return -1 if t < 0.2 else 1 if t > 0.8 else 0

    r, c = side(row), side(column)
    if r == 0 and c == 0:
        return "the centre"
    if r and c:
        return "the corners"
    return {(-1, 0): "the top edge", (1, 0): "the bottom edge", (0, -1): "the left edge", (0, 1): "the right edge"}[(r, c)]


def blur_sigma(kernel: np.ndarray) -> float | None:
    """The width of a blur kernel: the sigma of its second moment about its centre, in pixels (a
    Gaussian's own sigma, less its truncation); None for a kernel that is not a blur (taps that
    do not sum to a positive total, or negative taps of more than a fifth of it)."""
    kernel = np.asarray(kernel, dtype=np.float64)
    total, negative = float(kernel.sum()), float(-kernel[kernel < 0].sum())
    if kernel.shape[0] == 1 or total <= 0 or negative > 0.2 * total:
        return None
    h = kernel.shape[0] // 2
    rows, columns = np.mgrid[-h : h + 1, -h : h + 1]
    moment = float(np.sum(kernel * (rows**2 + columns**2)) / (2 * total))
    return math.sqrt(moment) if moment >= 0 else None  # a near-identity's small negative taps can outweigh it


class FieldModel(PlaneModel):
    """What a gain map and a kernel map share: nodes over the field and the bilinear blend.

    Subclasses implement :meth:`respond_field` (one plane, the block's row and column
    weights) and :meth:`kernel_at` (the kernel that applies at a position)."""

    varies = True
    rung = "spatially varying"
    nodes: int
    bias: float

    def respond_plane(self, plane, dtype):
        return self.respond_plane_at(plane, dtype, Location.whole(plane.shape[0] - 2 * self.halo, plane.shape[1] - 2 * self.halo))

    def respond_at(self, padded, dtype, at):
        return [self.respond_plane_at(plane, dtype, at) for plane in padded]

    def respond_plane_at(self, plane: np.ndarray, dtype: type, at: Location) -> np.ndarray:
        """One plane (H + 2h, W + 2h) whose outputs lie ``at`` -> (H, W) in ``dtype``."""
        height, width = plane.shape[0] - 2 * self.halo, plane.shape[1] - 2 * self.halo
        row_weights = hat_weights(fractions(at.top, height, at.height), self.nodes)
        column_weights = hat_weights(fractions(at.left, width, at.width), self.nodes)
        return self.respond_field(np.asarray(plane, dtype=np.float64), row_weights, column_weights).astype(dtype, copy=False)

    def respond_field(self, plane: np.ndarray, row_weights: np.ndarray, column_weights: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def kernel_at(self, row: float, column: float) -> np.ndarray:
        """(K, K) the kernel that applies at a position (fractions of the image's height and width)."""
        raise NotImplementedError

    def survey(self, points: int = SURVEY) -> dict:
        """The field as the report draws it: positions (points,), the gain (sum of the kernel's
        taps) at each (points, points), and the kernels at the corners, edges and centre (3, 3, K, K)."""
        positions = np.linspace(0.0, 1.0, points)
        gains = np.array([[self.kernel_at(r, c).sum() for c in positions] for r in positions])
        kernels = np.array([[self.kernel_at(r, c) for c in (0.0, 0.5, 1.0)] for r in (0.0, 0.5, 1.0)])
        return {"positions": positions, "gains": gains, "kernels": kernels}

    def gain_words(self) -> str:
        """The gain across the field in words: its range and where it is highest and lowest."""
        gains = self.survey()["gains"]
        positions = np.linspace(0.0, 1.0, SURVEY)
        high, low = np.unravel_index(np.argmax(gains), gains.shape), np.unravel_index(np.argmin(gains), gains.shape)
        if gains.max() - gains.min() <= 0.01 * max(abs(gains.max()), 1e-12):
            return f"gain {gains.mean():.3g} everywhere"
        return (f"gain {gains[high]:.3g} at {place_words(positions[high[0]], positions[high[1]])} "
                f"to {gains[low]:.3g} at {place_words(positions[low[0]], positions[low[1]])}")

    def channel_words(self) -> str:
        return (" on each channel" if self.channels > 1 else "") + OUTPUT_WORDS[self.output]


class GainMapModel(FieldModel):
    """One (K, K) kernel times a gain map of ``nodes`` x ``nodes`` control points, plus a bias."""

    name = "gain_map"
    layout = ("gains (G, G) at rows/columns i / (G - 1) of the image, kernel (K, K), bias (1,), channels (1,); "
              "out[c] = bilinear(gains)(p) * (kernel * in[c])(p) + bias")

    def __init__(self, gains, kernel, bias: float = 0.0, channels: int = 1, output: str = "float"):
        super().__init__(output)
        gains, kernel = np.asarray(gains, dtype=np.float64), np.asarray(kernel, dtype=np.float64)
        if gains.ndim != 2 or gains.shape[0] != gains.shape[1] or gains.shape[0] < 2:
            raise ValueError(f"gains must be (G, G) with G >= 2, got {gains.shape}")
        if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
            raise ValueError(f"kernel must be (K, K) with K odd, got {kernel.shape}")
        self.gains, self.kernel, self.bias, self.channels = gains, kernel, float(bias), int(channels)

    @property
    def nodes(self) -> int:
        return self.gains.shape[0]

    @property
    def ksize(self) -> int:
        return self.kernel.shape[0]

    def respond_field(self, plane, row_weights, column_weights):
        gain = row_weights @ self.gains @ column_weights.T
        return gain * correlate_valid(plane, self.kernel, np.float64) + self.bias

    def kernel_at(self, row, column):
        weight = float(hat_weights([row], self.nodes)[0] @ self.gains @ hat_weights([column], self.nodes)[0])
        return weight * self.kernel

    def tensors(self):
        return {"gains": self.gains, "kernel": self.kernel, "bias": np.array([self.bias]),
                "channels": np.array([float(self.channels)])}

    @classmethod
    def from_tensors(cls, tensors, output="float"):
        return cls(tensors["gains"], tensors["kernel"], float(tensors["bias"].reshape(-1)[0]),
                   int(tensors["channels"].reshape(-1)[0]), output)

    @property
    def n_parameters(self) -> int:
        return int(self.gains.size + self.kernel.size)  # the gain's scale and the kernel's are one parameter

    def describe(self) -> str:
        from img2kernel.evaluate.identify import identify_shape

        k, g = self.ksize, self.nodes
        kernel = "the input" if k == 1 else f"a {k}x{k} kernel ({identify_shape(self.kernel)})"
        return (f"gain map ({g}x{g} nodes, bilinear) times {kernel}: {self.gain_words()}"
                + (f", offset {self.bias:+.3g}" if abs(self.bias) > 1e-6 else "") + self.channel_words())


class KernelMapModel(FieldModel):
    """A (K, K) kernel at each of ``nodes`` x ``nodes`` control points, blended bilinearly, plus a bias."""

    name = "kernel_map"
    layout = ("kernels (G, G, K, K) at rows/columns i / (G - 1) of the image, bias (1,), channels (1,); "
              "out[c] = sum_ab w_a(row) w_b(column) (kernels[a, b] * in[c])(p) + bias")

    def __init__(self, kernels, bias: float = 0.0, channels: int = 1, output: str = "float"):
        super().__init__(output)
        kernels = np.asarray(kernels, dtype=np.float64)
        if (kernels.ndim != 4 or kernels.shape[0] != kernels.shape[1] or kernels.shape[0] < 2
                or kernels.shape[2] != kernels.shape[3] or kernels.shape[2] % 2 == 0):
            raise ValueError(f"kernels must be (G, G, K, K) with G >= 2 and K odd, got {kernels.shape}")
        self.kernels, self.bias, self.channels = kernels, float(bias), int(channels)

    @property
    def nodes(self) -> int:
        return self.kernels.shape[0]

    @property
    def ksize(self) -> int:
        return self.kernels.shape[-1]

    def respond_field(self, plane, row_weights, column_weights):
        out = np.full((len(row_weights), len(column_weights)), self.bias)
        for a in np.flatnonzero(row_weights.any(axis=0)):  # a block meets only the nodes around it
            for b in np.flatnonzero(column_weights.any(axis=0)):
                out += np.outer(row_weights[:, a], column_weights[:, b]) * correlate_valid(plane, self.kernels[a, b], np.float64)
        return out

    def kernel_at(self, row, column):
        return np.einsum("a,b,abkl->kl", hat_weights([row], self.nodes)[0], hat_weights([column], self.nodes)[0], self.kernels)

    def tensors(self):
        return {"kernels": self.kernels, "bias": np.array([self.bias]), "channels": np.array([float(self.channels)])}

    @classmethod
    def from_tensors(cls, tensors, output="float"):
        return cls(tensors["kernels"], float(tensors["bias"].reshape(-1)[0]), int(tensors["channels"].reshape(-1)[0]), output)

    @property
    def n_parameters(self) -> int:
        return int(self.kernels.size + 1)

    def describe(self) -> str:
        from img2kernel.evaluate.identify import identify_shape

        k, g = self.ksize, self.nodes
        corners = np.mean([self.kernel_at(r, c) for r in (0.0, 1.0) for c in (0.0, 1.0)], axis=0)
        centre = self.kernel_at(0.5, 0.5)
        widths = blur_sigma(centre), blur_sigma(corners)
        if None not in widths:
            change = f"a blur of sigma {widths[0]:.2f} px at the centre, {widths[1]:.2f} px at the corners (second moments)"
        else:
            change = f"{identify_shape(centre)} at the centre, {identify_shape(corners)} at the corners (their mean)"
        return (f"kernel map ({k}x{k} kernels on {g}x{g} nodes, blended bilinearly): {change}; {self.gain_words()}"
                + (f", offset {self.bias:+.3g}" if abs(self.bias) > 1e-6 else "") + self.channel_words())
