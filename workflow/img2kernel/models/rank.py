"""The rank model: an order statistic over a footprint, per channel (median, erosion, dilation).

``out[c](p) = sorted(in[c] over footprint around p)[rank]``: rank 0 is the minimum (grey
erosion), the last is the maximum (dilation), the middle one the median. No learned
weights: the footprint and the rank are found from the pairs (:mod:`img2kernel.fit.ladder`).
"""

from __future__ import annotations

import numpy as np

from img2kernel.models.affine import OUTPUT_WORDS
from img2kernel.models.base import PlaneModel


def footprint_shape(footprint: np.ndarray) -> str:
    """``square``, ``disk`` (scikit-image's disk of radius K // 2) or ``custom``."""
    k = footprint.shape[0]
    if footprint.all():
        return "square"
    r = k // 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    if np.array_equal(footprint, (yy**2 + xx**2 <= r * r)):
        return "disk"
    return "custom"


def disk(radius: int) -> np.ndarray:
    """scikit-image's ``morphology.disk(radius)``: (2r + 1, 2r + 1) bool, x^2 + y^2 <= r^2."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return yy**2 + xx**2 <= radius * radius


class RankModel(PlaneModel):
    """A (K, K) 0/1 footprint and a rank in 0 .. n - 1 (n = taps in the footprint), applied to
    each of ``channels`` planes alone.

    Exact in any dtype: an order statistic picks one of the input values.
    """

    name = "rank"
    rung = "rank"
    layout = "footprint (K, K) 0/1, rank (1,), channels (1,), affine (2,); out[c] = affine[0] * sorted(in[c] over footprint)[rank] + affine[1]"

    def __init__(self, footprint: np.ndarray, rank: int, channels: int = 1, scale: float = 1.0, offset: float = 0.0,
                 output: str = "float"):
        super().__init__(output)
        footprint = np.asarray(footprint).astype(bool)
        if footprint.ndim != 2 or footprint.shape[0] != footprint.shape[1] or footprint.shape[0] % 2 == 0:
            raise ValueError(f"footprint must be (K, K) with K odd, got {footprint.shape}")
        n = int(footprint.sum())
        if not 0 <= rank < n:
            raise ValueError(f"rank must be in 0..{n - 1} for a footprint of {n} taps, got {rank}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.footprint, self.rank, self.channels = footprint, int(rank), int(channels)
        # The optional affine step after the order statistic: out = scale * rank_value + offset.
        self.scale, self.offset = float(scale), float(offset)

    @property
    def ksize(self) -> int:
        return self.footprint.shape[0]

    @property
    def taps(self) -> int:
        return int(self.footprint.sum())

    def respond_plane(self, plane, dtype):
        from scipy.ndimage import rank_filter

        h = self.halo
        filtered = rank_filter(np.asarray(plane, dtype=dtype), self.rank, footprint=self.footprint, mode="nearest")
        valid = filtered[h : filtered.shape[0] - h, h : filtered.shape[1] - h] if h else filtered
        return valid if (self.scale, self.offset) == (1.0, 0.0) else (self.scale * valid + self.offset).astype(dtype)

    def tensors(self):
        return {"footprint": self.footprint.astype(np.float64), "rank": np.array([float(self.rank)]),
                "channels": np.array([float(self.channels)]), "affine": np.array([self.scale, self.offset])}

    @classmethod
    def from_tensors(cls, tensors, output="float"):
        rank, channels = float(tensors["rank"].reshape(-1)[0]), float(tensors["channels"].reshape(-1)[0])
        if rank != int(rank) or channels != int(channels) or not set(np.unique(tensors["footprint"])) <= {0.0, 1.0}:
            raise ValueError("rank and channels must be integers and the footprint 0/1")
        scale, offset = tensors["affine"].reshape(-1)[:2] if "affine" in tensors else (1.0, 0.0)
        return cls(tensors["footprint"] > 0.5, int(rank), int(channels), float(scale), float(offset), output)


    @property
    def n_parameters(self) -> int:
        # The footprint and rank are found, not learned; the affine step, when used, is 2 weights.
        return 0 if (self.scale, self.offset) == (1.0, 0.0) else 2

    def statistic(self) -> str:
        """``median``, ``minimum (erosion)``, ``maximum (dilation)`` or ``rank r of n``."""
        n = self.taps
        if self.rank == 0:
            return "minimum (erosion)"
        if self.rank == n - 1:
            return "maximum (dilation)"
        if n % 2 == 1 and self.rank == n // 2:
            return "median"
        return f"rank {self.rank} of {n} (percentile {100 * self.rank / (n - 1):.0f})"

    def describe(self) -> str:
        k, shape = self.ksize, footprint_shape(self.footprint)
        where = f"{k}x{k}" + ("" if shape == "square" else f" {shape}")
        text = f"{where} {self.statistic()}" + (" on each channel" if self.channels > 1 else "")
        if (self.scale, self.offset) != (1.0, 0.0):
            text += f", then x {self.scale:.4g} {'+' if self.offset >= 0 else '-'} {abs(self.offset):.4g}"
        return text + OUTPUT_WORDS[self.output]
