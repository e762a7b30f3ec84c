"""LearnableKernel: one or two learnable K x K kernels, the model that recovers a filter."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from img2kernel.sources.filters import UINT8_MAX
from img2kernel.fit.convolve import FFT_MIN_KSIZE, correlate, correlate_valid_fft


class LearnableKernel(nn.Module):
    """Learnable correlation kernels, fully convolutional (any image size).

    The output is ``k * x`` (combine ``none``), or ``sqrt((k1 * x)^2 + (k2 * x)^2 + eps)``
    (combine ``magnitude``), optionally saturated as ``cv2.convertScaleAbs`` does
    (``clamp(|y|, 0, 255)``, without the rounding, which has no gradient).

    Args:
        ksize: kernel side K (odd).
        n_kernels: 1, or 2 for ``magnitude``.
        combine: ``none`` or ``magnitude``.
        saturate: apply the uint8 saturation of the absolute value.
        bias: learn an additive bias (off: none of the supported filters has one).
        seed: seed of the random normal initial kernel.
        dtype: parameter dtype.
        eps: inside the square root of ``magnitude``, keeps its gradient finite at zero.
    """

    def __init__(
        self,
        ksize: int,
        n_kernels: int = 1,
        combine: str = "none",
        saturate: bool = False,
        bias: bool = False,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        eps: float = 1e-6,
    ):
        super().__init__()
        if ksize < 1 or ksize % 2 == 0:
            raise ValueError(f"ksize must be odd and positive, got {ksize}")
        if combine not in ("none", "magnitude"):
            raise ValueError(f"combine must be 'none' or 'magnitude', got {combine!r}")
        if combine == "magnitude" and n_kernels != 2:
            raise ValueError("combine 'magnitude' needs n_kernels=2")
        if combine == "none" and n_kernels != 1:
            raise ValueError("combine 'none' needs n_kernels=1")
        generator = torch.Generator().manual_seed(seed)
        # Unit-variance output for unit-variance input: std 1/K per tap.
        init = torch.randn(n_kernels, 1, ksize, ksize, generator=generator, dtype=torch.float64) / ksize
        self.weight = nn.Parameter(init.to(dtype))
        self.bias = nn.Parameter(torch.zeros(1, dtype=dtype)) if bias else None
        self.ksize, self.combine, self.saturate, self.eps = ksize, combine, saturate, eps

    @property
    def halo(self) -> int:
        """Pixels lost on each side by a valid correlation."""
        return self.ksize // 2

    def _combine(self, responses: torch.Tensor) -> torch.Tensor:
        if self.combine == "magnitude":
            out = torch.sqrt(responses.square().sum(dim=1, keepdim=True) + self.eps)
        else:
            out = responses
        if self.bias is not None:
            out = out + self.bias
        if self.saturate:
            out = out.abs().clamp(max=UINT8_MAX)
        return out

    def forward_valid(self, crops: torch.Tensor) -> torch.Tensor:
        """Valid correlation, no padding: (N, 1, H + 2h, W + 2h) -> (N, 1, H, W), h = K // 2.

        Training uses this on crops taken with a halo, so no border rule enters the loss.
        Kernels from ``FFT_MIN_KSIZE`` up correlate through the FFT (the same values, faster).
        """
        if self.ksize >= FFT_MIN_KSIZE:
            return self._combine(correlate_valid_fft(crops, self.weight))
        return self._combine(F.conv2d(crops, self.weight))

    def forward(self, images: torch.Tensor, border: str = "reflect") -> torch.Tensor:
        """Same-size output with OpenCV's border rule: (N, 1, H, W) -> (N, 1, H, W)."""
        return self._combine(correlate(images, self.weight, border))

    def kernels(self) -> np.ndarray:
        """The learned kernels as float64 (n, K, K)."""
        return self.weight.detach().to("cpu", torch.float64).numpy()[:, 0].copy()

    @classmethod
    def from_kernels(cls, kernels: np.ndarray, combine: str = "none", saturate: bool = False, dtype=torch.float32):
        """A model holding given (n, K, K) kernels, e.g. loaded from safetensors."""
        kernels = np.asarray(kernels)
        model = cls(kernels.shape[-1], kernels.shape[0], combine, saturate, dtype=dtype)
        with torch.no_grad():
            model.weight.copy_(torch.as_tensor(kernels[:, None], dtype=dtype))
        return model
