"""The colour spaces tools convert 8-bit RGB into, in one place: gray weights and YCbCr.

Each space is ``s = M @ rgb + offset`` on 0..255 values; a tool that works in it stores ``s``
rounded to 8 bits (docs/design.md, "Roundings inside the tool").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Gray from R, G, B: Rec. 601 is what Pillow's convert("L"), cv2.cvtColor and JPEG's luma use.
GRAY_WEIGHTS = {"Rec. 601 (OpenCV, Pillow)": (0.299, 0.587, 0.114), "Rec. 709": (0.2126, 0.7152, 0.0722)}
JFIF_LUMA = np.array(GRAY_WEIGHTS["Rec. 601 (OpenCV, Pillow)"])


@dataclass(frozen=True)
class Space:
    """An 8-bit working space: ``s = matrix @ rgb + offset``, (C_s, 3) and (C_s,)."""

    name: str
    matrix: np.ndarray
    offset: np.ndarray

    channel_names: tuple[str, ...]

    @property
    def channels(self) -> int:
        return self.matrix.shape[0]

    def kernel_within(self, kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """An RGB-to-RGB affine kernel ((3, 3, K, K), (3,)) as the same map from this (three-channel)
        space to itself: t = K_s * s + c where s and t are the input and output in the space."""
        inverse = np.linalg.inv(self.matrix)
        within = np.einsum("ao,oikl,ic->ackl", self.matrix, kernel, inverse)
        return within, self.matrix @ bias + self.offset - within.sum(axis=(2, 3)) @ self.offset

    def kernel_to_rgb(self, within: np.ndarray) -> np.ndarray:
        """The (3, 3, K, K) RGB kernel M^-1 K_s M of a kernel K_s between this (three-channel) space's
        channels (offsets aside: the inverse of :meth:`kernel_within`'s kernel)."""
        return np.einsum("ao,oikl,ic->ackl", np.linalg.inv(self.matrix), within, self.matrix)

    def of(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, C_s) float64 values of (H, W, 3) ``rgb`` in this space, before any rounding."""
        return np.asarray(rgb, dtype=np.float64) @ self.matrix.T + self.offset


def _ycbcr(name: str, kr: float, kb: float, limited: bool) -> Space:
    """YCbCr of the luma weights (kr, 1 - kr - kb, kb): full range (JFIF: Y 0..255, chroma
    128 +- 127.5) or limited range (studio swing: Y 16..235, chroma 16..240)."""
    kg = 1 - kr - kb
    luma = np.array([kr, kg, kb])
    cb = (np.array([0, 0, 1.0]) - luma) / (2 * (1 - kb))
    cr = (np.array([1.0, 0, 0]) - luma) / (2 * (1 - kr))
    scales = np.array([219, 224, 224]) / 255 if limited else np.ones(3)
    return Space(name, np.stack([luma, cb, cr]) * scales[:, None], np.array([16.0 if limited else 0.0, 128.0, 128.0]),
                 ("Y", "Cb", "Cr"))


GRAY_SPACE_NAMES = {"Rec. 601 (OpenCV, Pillow)": "gray with Rec. 601 weights (Pillow, OpenCV)", "Rec. 709": "gray with Rec. 709 weights"}
SPACES = [Space(GRAY_SPACE_NAMES[name], np.array([weights]), np.zeros(1), ("gray",)) for name, weights in GRAY_WEIGHTS.items()] + [
    _ycbcr("YCbCr, BT.601 full range (JFIF, Pillow)", 0.299, 0.114, limited=False),
    _ycbcr("YCbCr, BT.601 limited range (ffmpeg's yuv444p)", 0.299, 0.114, limited=True),
    _ycbcr("YCbCr, BT.709 limited range", 0.2126, 0.0722, limited=True),
]


def space_named(name: str) -> Space:
    """The space of :data:`SPACES` called ``name``."""
    return next(s for s in SPACES if s.name == name)


# The sRGB transfer function (IEC 61966-2-1) on values scaled to 0..1: tools that "work in linear
# light" decode with it, filter, and encode again. Both extend beyond 0..1 (a sharpened value
# below 0 encodes along the linear segment), so the encode inverts the decode everywhere.
SRGB_KNEE, SRGB_SLOPE, SRGB_GAMMA, SRGB_OFFSET = 0.04045, 12.92, 2.4, 0.055


def srgb_decode(values: np.ndarray) -> np.ndarray:
    """Linear light from sRGB-encoded values in 0..1 (float64)."""
    v = np.asarray(values, dtype=np.float64)
    return np.where(v <= SRGB_KNEE, v / SRGB_SLOPE, ((np.maximum(v, SRGB_KNEE) + SRGB_OFFSET) / (1 + SRGB_OFFSET)) ** SRGB_GAMMA)


def srgb_encode(values: np.ndarray) -> np.ndarray:
    """sRGB-encoded values from linear light (float64), the inverse of :func:`srgb_decode`."""
    z = np.asarray(values, dtype=np.float64)
    knee = SRGB_KNEE / SRGB_SLOPE
    return np.where(z <= knee, z * SRGB_SLOPE, (1 + SRGB_OFFSET) * np.maximum(z, knee) ** (1 / SRGB_GAMMA) - SRGB_OFFSET)


def srgb_encode_slope(values: np.ndarray) -> np.ndarray:
    """d encode / d z: how much an error in linear light moves the encoded value."""
    z = np.asarray(values, dtype=np.float64)
    knee = SRGB_KNEE / SRGB_SLOPE
    return np.where(z <= knee, SRGB_SLOPE, (1 + SRGB_OFFSET) / SRGB_GAMMA * np.maximum(z, knee) ** (1 / SRGB_GAMMA - 1))
