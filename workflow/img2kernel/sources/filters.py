"""The filters to learn: a registry of kinds, their exact kernels, and OpenCV to apply them.

Every kind builds a :class:`Filter` from its spec (one entry of config/filters.yaml).
A linear kind exposes its true kernel(s) in correlation orientation, the orientation of
both ``cv2.filter2D`` and ``torch.nn.functional.conv2d``, so a learned kernel compares
with it tap for tap. Targets are computed by OpenCV with its default border
(BORDER_REFLECT_101), which torch's ``padding_mode="reflect"`` reproduces exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from img2kernel.errors import FilterSpecError  # noqa: F401  (re-exported: raised by the kinds below)
from img2kernel.models.base import UINT8_MAX, saturate_uint8  # noqa: F401  (re-exported: one definition)

# A filter's ``output`` by its older spelling: ``uint8`` meant the saturated |y| (``abs_uint8``),
# and ``uint8`` now means only rounding and clipping, as a model's output step.
OUTPUT_SPELLINGS = {"uint8": "abs_uint8"}


def filter_output(spec: dict) -> str:
    """A filter entry's ``output`` in its one spelling (``float`` when it has none)."""
    output = spec.get("output", "float")
    return OUTPUT_SPELLINGS.get(output, output)


JPEG_QUALITY = 90  # ``output: jpeg`` without a ``quality``
# The model's output step (models.base.OUTPUTS) for each filter output: a JPEG target's model
# rounds and clips to 8 bits as the file's pixels are; the compression itself is not modelled.
MODEL_OUTPUT = {"jpeg": "uint8"}


def save_as_jpeg(values: np.ndarray, quality: int) -> tuple[np.ndarray, dict]:
    """(H, W) values rounded and clipped to 8 bits, saved as a gray JPEG of ``quality`` by Pillow and
    decoded again: (the decoded float32 pixels, the file's facts, :func:`img2kernel.images.jpeg_facts`)."""
    import io

    from PIL import Image

    from img2kernel.images import jpeg_facts

    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(values), 0, UINT8_MAX).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    facts = jpeg_facts(buffer)
    with Image.open(buffer) as image:
        return np.asarray(image, dtype=np.float32), facts


@dataclass(frozen=True)
class Filter:
    """A filter ready to apply.

    Attributes:
        name: the entry's name (a path component).
        kind: registry key, e.g. ``sobel``.
        ksize: side of the (square) true kernel, or the window of a nonlinear filter.
        kernels: true kernels, float64 (ksize, ksize) in correlation orientation, or
            None when no kernel reproduces the filter (median).
        combine: ``none`` (one kernel) or ``magnitude`` (sqrt of the sum of squares of two).
        output: ``float``, ``abs_uint8`` (the absolute value saturated to 0..255, as
            ``cv2.convertScaleAbs``: the model's output step of the same name) or ``jpeg``
            (rounded and clipped to 8 bits and saved as a gray JPEG of ``quality``).
        quality: the JPEG quality of ``output: jpeg``, else None.
        spec: the spec it was built from.
        then: a pointwise step after the kernel (``abs`` or ``gamma``), or None.
        structure: what the filter is, in words, and the ladder rung that should explain
            it (``linear``, ``curve``, ``magnitude``, ``rank``): the report says whether
            the ladder found it.
    """

    name: str
    kind: str
    ksize: int
    kernels: tuple[np.ndarray, ...] | None
    combine: str
    output: str
    spec: dict = field(repr=False)
    _apply: Callable[[np.ndarray], np.ndarray] = field(repr=False, compare=False)
    then: dict | None = None
    expected_rung: str = "linear"
    # The edge rule of the OpenCV call: BORDER_REFLECT_101, except cv2.medianBlur (replicate).
    border: str = "reflect101"
    quality: int | None = None

    @property
    def model_output(self) -> str:
        """The output step of this filter's model (:data:`img2kernel.models.base.OUTPUTS`)."""
        return MODEL_OUTPUT.get(self.output, self.output)

    def jpeg_facts(self) -> dict | None:
        """The JPEG facts of this filter's targets (one quality, one table for every image), or None."""
        return save_as_jpeg(np.zeros((8, 8)), self.quality)[1] if self.output == "jpeg" else None

    def model_of(self, kernels: np.ndarray):
        """The model (:mod:`img2kernel.models`) with this filter's structure holding (n, K, K)
        kernels: an affine kernel, or the magnitude of a pair; |y| saturated for ``uint8``."""
        from img2kernel.models import AffineKernel, MagnitudeModel

        kernels = np.asarray(kernels, dtype=np.float64)
        if self.combine == "magnitude":
            return MagnitudeModel(kernels[:, None], self.model_output)
        return AffineKernel(kernels[:1, None], None, self.model_output)

    @property
    def reference_kernels(self) -> np.ndarray | None:
        """(n, K, K): the kernels a model of this filter's structure should learn, or None
        (a median; a kernel followed by a `then` step, which no kernel model holds)."""
        if self.kernels is None or self.then is not None:
            return None
        return np.stack(self.kernels)

    @property
    def linear(self) -> bool:
        """True when the target is exactly one correlation of the input with one kernel."""
        return self.kernels is not None and self.combine == "none" and self.output == "float" and self.then is None

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Filter a 2-D float32 image (H, W) with OpenCV; returns float32 (H, W)."""
        if image.ndim != 2:
            raise ValueError(f"filter {self.name!r}: expected a 2-D image (H, W), got shape {image.shape}")
        result = self._apply(np.ascontiguousarray(image, dtype=np.float32))
        if self.then is not None:
            result = pointwise(result, self.then)
        if self.output == "abs_uint8":
            result = cv2.convertScaleAbs(result)
        elif self.output == "jpeg":
            result, _ = save_as_jpeg(result, self.quality)
        return result.astype(np.float32, copy=False)


def _centered(kernel: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad a (h, w) kernel with odd sides to (size, size), keeping its centre."""
    out = np.zeros((size, size), dtype=np.float64)
    h, w = kernel.shape
    top, left = (size - h) // 2, (size - w) // 2
    out[top : top + h, left : left + w] = kernel
    return out


def deriv_kernel(dx: int, dy: int, ksize: int) -> np.ndarray:
    """The 2-D kernel of ``cv2.Sobel(dx, dy, ksize)`` (ksize=-1: Scharr), correlation orientation."""
    kx, ky = cv2.getDerivKernels(dx, dy, ksize, normalize=False, ktype=cv2.CV_64F)
    kernel = np.outer(ky.ravel(), kx.ravel())  # rows follow y, columns follow x
    return _centered(kernel, max(kernel.shape))


def _require_order(spec: dict, ksize: int) -> tuple[int, int]:
    dx, dy = int(spec["dx"]), int(spec["dy"])
    if dx + dy < 1:
        raise FilterSpecError("dx", "dx + dy must be at least 1 (a derivative of order zero is no filter)")
    if ksize == 1:
        if dx and dy:
            raise FilterSpecError("dy", "with ksize 1 only one of dx, dy may be non-zero (cv2.Sobel's rule)")
        if max(dx, dy) > 2:
            raise FilterSpecError("dx" if dx > 2 else "dy", "with ksize 1 the derivative order must be 1 or 2")
    else:
        for name, order in (("dx", dx), ("dy", dy)):
            if order >= ksize:
                raise FilterSpecError(name, f"{name}={order} must be smaller than ksize={ksize} (cv2.Sobel's rule)")
    return dx, dy


def _sobel(spec: dict) -> tuple:
    ksize = int(spec["ksize"])
    dx, dy = _require_order(spec, ksize)
    kernel = deriv_kernel(dx, dy, ksize)
    return (kernel,), "none", lambda img: cv2.Sobel(img, cv2.CV_32F, dx, dy, ksize=ksize)


def magnitude(gx: np.ndarray, gy: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """``sqrt(gx^2 + gy^2)`` as ``dtype``, (H, W) from two (H, W) responses.

    Computed in float64 with plain IEEE operations and rounded once to ``dtype``: the
    same bits on every run, thread and machine, and no float32 overflow or rounding of the
    squares (a 7x7 Sobel's squares pass 2^24). cv2.magnitude is faster, but its last bit
    varies from run to run (on the sample photos, 25,000 of 7.6 million target pixels
    differed between two identical runs, and so did the kernels learned from them).
    """
    out = np.square(gx, dtype=np.float64)
    out += np.square(gy, dtype=np.float64)
    return np.sqrt(out, out=out).astype(dtype, copy=False)


def _sobel_magnitude(spec: dict) -> tuple:
    ksize = int(spec["ksize"])
    kx, ky = deriv_kernel(1, 0, ksize), deriv_kernel(0, 1, ksize)

    def apply(img):
        gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=ksize)
        gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=ksize)
        return magnitude(gx, gy)

    return (kx, ky), "magnitude", apply


def _scharr(spec: dict) -> tuple:
    dx, dy = int(spec["dx"]), int(spec["dy"])
    if (dx, dy) not in ((1, 0), (0, 1)):
        raise FilterSpecError("dx", f"Scharr takes (dx, dy) = (1, 0) or (0, 1), got ({dx}, {dy})")
    return (deriv_kernel(dx, dy, cv2.FILTER_SCHARR),), "none", lambda img: cv2.Scharr(img, cv2.CV_32F, dx, dy)


def _laplacian(spec: dict) -> tuple:
    ksize = int(spec["ksize"])
    if ksize == 1:
        kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64)
    else:
        kernel = deriv_kernel(2, 0, ksize) + deriv_kernel(0, 2, ksize)
    return (kernel,), "none", lambda img: cv2.Laplacian(img, cv2.CV_32F, ksize=ksize)


def _gaussian(spec: dict) -> tuple:
    ksize, sigma = int(spec["ksize"]), float(spec["sigma"])
    # OpenCV filters float32 images with a float32 kernel: the true kernel is that one.
    taps = cv2.getGaussianKernel(ksize, sigma, ktype=cv2.CV_32F).astype(np.float64).ravel()
    return (np.outer(taps, taps),), "none", lambda img: cv2.GaussianBlur(img, (ksize, ksize), sigma, sigmaY=sigma)


def _box(spec: dict) -> tuple:
    ksize, normalized = int(spec["ksize"]), bool(spec["normalized"])
    kernel = np.full((ksize, ksize), 1.0 / (ksize * ksize) if normalized else 1.0)
    return (kernel,), "none", lambda img: cv2.boxFilter(img, cv2.CV_32F, (ksize, ksize), normalize=normalized)


def random_kernel(ksize: int, seed: int, distribution: str, normalization: str) -> np.ndarray:
    """A seeded random kernel, rounded to float32 (the precision OpenCV applies it in)."""
    rng = np.random.default_rng(seed)
    if distribution == "normal":
        kernel = rng.standard_normal((ksize, ksize))
    elif distribution == "uniform":
        kernel = rng.uniform(-1.0, 1.0, (ksize, ksize))
    else:
        raise FilterSpecError("distribution", f"unknown distribution {distribution!r}; use normal or uniform")
    if normalization == "sum":
        total = kernel.sum()
        if abs(total) < 1e-3 * np.abs(kernel).sum():
            raise FilterSpecError(
                "normalization", f"seed {seed} gives a kernel that sums to {total:.2e}; pick another seed"
            )
        kernel = kernel / total
    elif normalization == "unit_norm":
        kernel = kernel / np.linalg.norm(kernel)
    elif normalization != "none":
        raise FilterSpecError("normalization", f"unknown normalization {normalization!r}")
    return kernel.astype(np.float32).astype(np.float64)


def _filter2d(kernel: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    kernel32 = kernel.astype(np.float32)
    return lambda img: cv2.filter2D(img, cv2.CV_32F, kernel32)


def _random(spec: dict) -> tuple:
    kernel = random_kernel(int(spec["ksize"]), int(spec["seed"]), spec["distribution"], spec["normalization"])
    return (kernel,), "none", _filter2d(kernel)


def _custom(spec: dict) -> tuple:
    rows = spec["kernel"]
    if not rows or not all(isinstance(r, list) and r for r in rows):
        raise FilterSpecError("kernel", "kernel must be a non-empty list of non-empty rows")
    size = len(rows)
    if any(len(r) != size for r in rows):
        raise FilterSpecError("kernel", f"kernel must be square: {size} rows of lengths {[len(r) for r in rows]}")
    if size % 2 == 0:
        raise FilterSpecError("kernel", f"kernel side must be odd (it has a centre tap), got {size}x{size}")
    values = [v for r in rows for v in r]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise FilterSpecError("kernel", "every kernel entry must be a finite number")
    kernel = np.asarray(rows, dtype=np.float64)
    # Inputs are on the 8-bit scale (up to 256): the largest target is at most 256 * sum|k|.
    if 256 * np.abs(kernel).sum() >= np.finfo(np.float32).max:
        raise FilterSpecError("kernel", f"taps this large (sum of |tap| {np.abs(kernel).sum():.3g}) would overflow the "
                                        "float32 targets; scale the kernel down")
    kernel = kernel.astype(np.float32).astype(np.float64)
    return (kernel,), "none", _filter2d(kernel)


def _median(spec: dict) -> tuple:
    ksize = int(spec["ksize"])
    return None, "none", lambda img: cv2.medianBlur(img, ksize)


def _morphology(operation: Callable) -> Callable[[dict], tuple]:
    """Grey erosion or dilation with a square window (the minimum or maximum of each window)."""

    def kind(spec: dict) -> tuple:
        ksize = int(spec["ksize"])
        window = np.ones((ksize, ksize), np.uint8)
        # Reflect101 at the edge, as every filter here: for a minimum or maximum it reads
        # only pixels the window already holds, so it equals OpenCV's own default there.
        return None, "none", lambda img: operation(img, window, borderType=cv2.BORDER_REFLECT_101)

    return kind


def pointwise(values: np.ndarray, then: dict) -> np.ndarray:
    """A filter's ``then`` step on its float32 response: ``abs``, or ``gamma`` on the 8-bit
    scale (255 * (clip(y, 0, 255) / 255) ** gamma), computed in float64 and rounded once."""
    y = np.asarray(values, dtype=np.float64)
    if then["step"] == "abs":
        out = np.abs(y)
    else:
        out = UINT8_MAX * (np.clip(y, 0.0, UINT8_MAX) / UINT8_MAX) ** float(then["gamma"])
    return out.astype(np.float32)


KINDS: dict[str, Callable[[dict], tuple]] = {
    "sobel": _sobel,
    "sobel_magnitude": _sobel_magnitude,
    "scharr": _scharr,
    "laplacian": _laplacian,
    "gaussian": _gaussian,
    "box": _box,
    "random": _random,
    "custom": _custom,
    "median": _median,
    "erosion": _morphology(cv2.erode),
    "dilation": _morphology(cv2.dilate),
}

# The ladder rung that explains each structure (the report says whether the ladder found it).
RANK_KINDS = {"median": "median", "erosion": "minimum (erosion)", "dilation": "maximum (dilation)"}


def build_filter(spec: dict) -> Filter:
    """Build a Filter from one (schema-validated) entry of config/filters.yaml."""
    kind = spec.get("kind")
    if kind not in KINDS:
        raise FilterSpecError("kind", f"unknown kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    kernels, combine, apply = KINDS[kind](spec)
    ksize = kernels[0].shape[0] if kernels is not None else int(spec["ksize"])
    then = spec.get("then")
    if then is not None:
        if kernels is None or combine != "none":
            raise FilterSpecError("then", f"a `then` step follows one kernel; kind {kind!r} has none")
        then = {"step": "abs"} if then == "abs" else {"step": "gamma", "gamma": float(then["gamma"])}
    output = filter_output(spec)
    if "quality" in spec and output != "jpeg":
        raise FilterSpecError("quality", f"a JPEG quality applies to `output: jpeg`; this entry's output is {output!r}")
    if kind in RANK_KINDS:
        expected = "rank"
    elif combine == "magnitude" or then == {"step": "abs"} and output in ("float", "jpeg"):  # |y| = sqrt(y^2), one kernel
        expected = "magnitude"
    elif then is not None or output not in ("float", "jpeg"):  # a JPEG of one kernel is linear within its compression
        expected = "curve"
    else:
        expected = "linear"
    return Filter(
        name=spec["name"],
        kind=kind,
        ksize=ksize,
        kernels=kernels,
        combine=combine,
        output=output,
        spec=dict(spec),
        _apply=apply,
        then=then,
        expected_rung=expected,
        border="replicate" if kind == "median" else "reflect101",
        quality=int(spec.get("quality", JPEG_QUALITY)) if output == "jpeg" else None,
    )


def model_ksize(filt: Filter, settings: dict) -> int:
    """The model's kernel side: the training setting ``ksize`` if given, else the filter's own."""
    return int(settings.get("ksize") or filt.ksize)
