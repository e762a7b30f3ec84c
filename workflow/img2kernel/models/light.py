"""The linear-light model: decode sRGB, a kernel, encode again (a tool that filters in linear light).

``out = s * encode(k * decode(in / s) + b)`` on each plane, with ``decode`` and ``encode`` the
sRGB transfer function (:func:`img2kernel.colour.srgb_decode`) and ``s`` the input's full scale
(255 for 8-bit files, 65535 for 16-bit, 1 for float images in 0..1). Editors and libraries that
blur or resize "in linear light" (GIMP's default, libvips' and ImageMagick's ``-colorspace RGB``
recipes) are this model: a kernel fitted on the encoded pixels leaves tens of noise floors.
"""

from __future__ import annotations

import numpy as np

from img2kernel.colour import srgb_decode, srgb_encode
from img2kernel.models.affine import OUTPUT_WORDS, correlate_valid
from img2kernel.models.base import PlaneModel


class LinearLightModel(PlaneModel):
    """A (K, K) kernel and a bias applied in linear light to each of ``channels`` planes."""

    name = "linear_light"
    rung = "linear light"
    layout = ("kernel (K, K), bias (1,), scale (1,), channels (1,); "
              "out[c] = scale * srgb_encode(kernel * srgb_decode(in[c] / scale) + bias)")

    def __init__(self, kernel, bias: float, scale: float, channels: int = 1, output: str = "float"):
        super().__init__(output)
        kernel = np.asarray(kernel, dtype=np.float64)
        if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
            raise ValueError(f"kernel must be (K, K) with K odd, got {kernel.shape}")
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.kernel, self.bias, self.scale, self.channels = kernel, float(bias), float(scale), int(channels)

    @property
    def ksize(self) -> int:
        return self.kernel.shape[0]

    def respond_plane(self, plane, dtype):
        light = srgb_decode(np.asarray(plane, dtype=np.float64) / self.scale)
        return (self.scale * srgb_encode(correlate_valid(light, self.kernel, np.float64) + self.bias)).astype(dtype, copy=False)

    def tensors(self):
        return {"kernel": self.kernel, "bias": np.array([self.bias]), "scale": np.array([self.scale]),
                "channels": np.array([float(self.channels)])}

    @classmethod
    def from_tensors(cls, tensors, output="float"):
        return cls(tensors["kernel"], float(tensors["bias"].reshape(-1)[0]), float(tensors["scale"].reshape(-1)[0]),
                   int(tensors["channels"].reshape(-1)[0]), output)

    @property
    def n_parameters(self) -> int:
        return int(self.kernel.size + 1)  # the scale is the file type's, not learned

    def describe(self) -> str:
        from img2kernel.evaluate.identify import identify_spatial

        k = self.ksize
        named = identify_spatial(self.kernel)["text"]
        return (f"{k}x{k} kernel in linear light ({named}; the sRGB decode before it, the encode after)"
                + (" on each channel" if self.channels > 1 else "") + OUTPUT_WORDS[self.output])
