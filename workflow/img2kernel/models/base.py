"""The one model interface (docs/design.md, "Models").

A model is built from its parameters (or a spec), predicts on a whole image with a border
rule, saves and loads with safetensors, and describes itself for the report. Training,
the least-squares fit, evaluation, ``img2kernel apply`` and the report all go through it:
no stage writes a model's arithmetic again.

Images are (H, W) for one channel or (H, W, C) for several; values as stored (8-bit
0..255, 16-bit 0..65535, float as held), nothing rescaled. Every model's arithmetic lives
in :meth:`Model.respond_valid`, the *valid* response of an image that already carries a
halo of ``halo`` pixels; whole-image prediction pads by the border rule first, and tiled
``apply`` pads each tile, so both run the same code.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from img2kernel import borders
from img2kernel.thresholds import STORAGE_RANGE, WIDENED_8BIT_STEP

UINT8_MAX = 255.0
# The step between the model's function and the stored file: none, an edge map's |y|
# saturated as cv2.convertScaleAbs does, rounding and clipping to an integer file type, or
# 8-bit levels widened to a 16-bit file (multiples of 257).
OUTPUTS = ("float", "abs_uint8", "uint8", "uint16", "uint16_x257")
# The file type each output step writes, where it is not its own name.
STORED_AS = {"abs_uint8": "float", "uint16_x257": "uint16"}


def stored_as(output: str) -> str:
    """The type an output step's values are stored in: ``uint8``, ``uint16`` or ``float``."""
    return STORED_AS.get(output, output)


def planes(image: np.ndarray) -> list[np.ndarray]:
    """The channel planes of an (H, W) or (H, W, C) image, as 2-D views."""
    if image.ndim == 2:
        return [image]
    if image.ndim == 3:
        return [image[..., c] for c in range(image.shape[2])]
    raise ValueError(f"expected an image of shape (H, W) or (H, W, C), got {image.shape}")


def stack(channels: list[np.ndarray]) -> np.ndarray:
    """(H, W) for one channel, (H, W, C) for several: the inverse of :func:`planes`."""
    return channels[0] if len(channels) == 1 else np.stack(channels, axis=-1)


# Values are snapped to this many decimals before rounding: sums that differ only in their last
# bits (another summation order, another tile) then round alike, at ties (x.5) included.
ROUNDING_DECIMALS = 7


def round_levels(values: np.ndarray) -> np.ndarray:
    """Round to whole levels, the same way for values equal up to summation order."""
    return np.rint(np.round(values, ROUNDING_DECIMALS))


def saturate_uint8(values: np.ndarray) -> np.ndarray:
    """What ``cv2.convertScaleAbs`` stores, kept in ``values``' float dtype: |x| saturated
    to 0..255 and rounded."""
    return round_levels(np.minimum(np.abs(values), UINT8_MAX))


def output_step(values: np.ndarray, output: str) -> np.ndarray:
    """Apply an output step (see ``OUTPUTS``) to float values, keeping their dtype."""
    if output == "float":
        return values
    if output == "abs_uint8":
        return saturate_uint8(values)
    if output == "uint16_x257":
        return np.clip(round_levels(values / WIDENED_8BIT_STEP), 0, UINT8_MAX) * WIDENED_8BIT_STEP
    low, high = STORAGE_RANGE[output]
    return np.clip(round_levels(values), low, high)


@dataclass(frozen=True)
class Location:
    """Where a block's first output pixel lies: row ``top``, column ``left`` of an image of
    ``height`` x ``width`` outputs. Only a model whose response depends on the place
    (:attr:`Model.varies`) reads it."""

    top: int
    left: int
    height: int
    width: int

    @classmethod
    def whole(cls, height: int, width: int) -> "Location":
        """A block that is the whole image."""
        return cls(0, 0, height, width)

    def below(self, rows: int) -> "Location":
        """The location of a block ``rows`` further down."""
        return Location(self.top + rows, self.left, self.height, self.width)


class Model(ABC):
    """Base of every model. Subclasses set ``name`` and implement the abstract methods.

    Attributes:
        output: ``float``; ``abs_uint8`` (|y| saturated to 0..255 and rounded, as
            ``cv2.convertScaleAbs`` stores an edge map); ``uint8`` or ``uint16`` (rounded
            and clipped as an integer image file stores it); ``uint16_x257`` (8-bit levels
            in a 16-bit file: rounded to multiples of 257).
    """

    name: ClassVar[str]
    # its step on the ladder (linear, rank, linear light, curve, magnitude, two curves, spatially varying, cnn)
    rung: ClassVar[str]
    layout: ClassVar[str]  # its tensors and formula, for the model file's metadata
    # Whether its description says what the tool does (a median, a kernel then a curve); a
    # generic network's says only what was fitted.
    identifies: ClassVar[bool] = True
    # Whether the response depends on where a pixel lies in its image (a gain map, a kernel map:
    # models.field); such a model reads each block's Location, every other model ignores it.
    varies: ClassVar[bool] = False
    # Whether its output has a grid of its own (a resize: models.resample); such a model predicts
    # whole images only, at :meth:`output_size`, and its ``predict`` takes the output's size.
    resamples: ClassVar[bool] = False

    def __init__(self, output: str = "float"):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.output = output

    # -- what every model declares
    @property
    @abstractmethod
    def ksize(self) -> int:
        """Side K of the (square, odd) window the model reads around each pixel."""

    @property
    @abstractmethod
    def c_in(self) -> int: ...

    @property
    @abstractmethod
    def c_out(self) -> int: ...

    @abstractmethod
    def respond(self, padded: list[np.ndarray], dtype: type) -> list[np.ndarray]:
        """The model's function before the output step, on the valid region.

        Args:
            padded: ``c_in`` planes (H + 2h, W + 2h), h = ``halo``.
            dtype: float type of the arithmetic (float64 for evaluation, float32 for speed).
        Returns:
            ``c_out`` planes (H, W).
        """

    def respond_at(self, padded: list[np.ndarray], dtype: type, at: Location) -> list[np.ndarray]:
        """:meth:`respond` of a block whose outputs lie ``at`` in their image; the same
        response anywhere unless the model :attr:`varies`."""
        return self.respond(padded, dtype)

    @abstractmethod
    def tensors(self) -> dict[str, np.ndarray]:
        """The parameters as named float64 arrays (the safetensors file's tensors)."""

    @classmethod
    @abstractmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], output: str = "float") -> "Model": ...

    @abstractmethod
    def describe(self) -> str:
        """One line for the report: what the model is, in words."""

    # -- shared behaviour
    @property
    def halo(self) -> int:
        return self.ksize // 2

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(rows, columns) of the output of a ``height`` x ``width`` input: the same, but for a resize."""
        return height, width

    def profiles(self) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
        """1-D functions the model is made of, for the report: (title, x, values, a named reference's
        values or None); none but a resize's kernels."""
        return []

    @property
    def ladder_rung(self) -> str:
        """The ladder step this model stands on (docs/design.md, "The ladder")."""
        return self.rung

    def with_output(self, output: str) -> "Model":
        """The same model with another output step (a copy)."""
        return type(self).from_tensors(self.tensors(), output)

    @property
    def n_parameters(self) -> int:
        return int(sum(t.size for t in self.tensors().values()))

    def structure(self) -> str:
        """How channels are used: gray, per-channel, RGB to gray, gray to RGB (a model whose
        weights can mix channels, :class:`AffineKernel`, also tells cross-channel)."""
        if self.c_in == 1 and self.c_out == 1:
            return "gray"
        if self.c_in == 1:
            return "gray to RGB"
        if self.c_out == 1:
            return "RGB to gray"
        return "per-channel"

    def predict_valid(self, padded: np.ndarray, dtype: type = np.float64, output: str | None = None,
                      at: Location | None = None) -> np.ndarray:
        """(H + 2h, W + 2h[, C_in]) -> (H, W[, C_out]) in ``dtype``: no border rule involved.

        ``output`` overrides the model's output step (``"float"``: the values before it);
        ``at``: where the (H, W) outputs lie in their image (None: they are the whole image).
        """
        channels = planes(np.asarray(padded))
        if len(channels) != self.c_in:
            raise ValueError(f"{self.name} model takes {self.c_in} channel(s), the image has {len(channels)}")
        if min(channels[0].shape) < self.ksize:
            raise ValueError(f"a {channels[0].shape} block is smaller than the {self.ksize}x{self.ksize} window")
        step = self.output if output is None else output
        if at is None:
            at = Location.whole(channels[0].shape[0] - 2 * self.halo, channels[0].shape[1] - 2 * self.halo)
        return stack([output_step(o, step) for o in self.respond_at(channels, dtype, at)])

    def predict(
        self, image: np.ndarray, border: str = borders.DEFAULT, dtype: type = np.float64, output: str | None = None
    ) -> np.ndarray:
        """Same-size output (H, W[, C_out]) of a whole image, outside pixels by ``border``."""
        image = np.asarray(image)
        work = image.astype(dtype, copy=False)
        out = self.predict_valid(borders.pad(work, self.halo, border), dtype, output)
        if border == "unfiltered":
            borders.restore_unfiltered_ring(out, stack(planes(work)), self.halo)
        return out

    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> None:
        """safetensors with :meth:`tensors`, the model's name and output step, and ``metadata``
        (values JSON-encoded unless already strings); written whole or not at all."""
        from safetensors.numpy import save_file

        from img2kernel.pipeline.files import written_whole

        tensors = self.tensors()
        if not all(np.all(np.isfinite(t)) for t in tensors.values()):
            raise ValueError(f"{path}: refusing to write a {self.name} model with non-finite parameters")
        meta = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}
        meta.update(model=self.name, output=self.output)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with written_whole(path) as partial:
            save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in tensors.items()}, str(partial), metadata=meta)


class KernelModel(Model):
    """A model whose parameters include a (n, C_in, K, K) kernel: its window and input
    channels come from that kernel's shape."""

    def __init__(self, kernel: np.ndarray, layout: str, output: str = "float"):
        super().__init__(output)
        kernel = np.asarray(kernel, dtype=np.float64)
        if kernel.ndim != 4 or kernel.shape[2] != kernel.shape[3] or kernel.shape[2] % 2 == 0 or 0 in kernel.shape:
            raise ValueError(f"kernel must be {layout} with K odd and nothing empty, got {kernel.shape}")
        self.kernel = kernel

    @property
    def ksize(self) -> int:
        return self.kernel.shape[-1]

    @property
    def c_in(self) -> int:
        return self.kernel.shape[1]


class PlaneModel(Model):
    """A model applied alike to each of ``channels`` planes (the ladder's rungs after
    ``linear``: a colour tool's median is a median of each channel). Subclasses implement
    :meth:`respond_plane` and keep ``channels`` among their tensors."""

    channels: int

    @property
    def c_in(self) -> int:
        return self.channels

    @property
    def c_out(self) -> int:
        return self.channels

    @abstractmethod
    def respond_plane(self, plane: np.ndarray, dtype: type) -> np.ndarray:
        """One plane (H + 2h, W + 2h) -> its valid response (H, W) in ``dtype``."""

    def respond(self, padded, dtype):
        return [self.respond_plane(plane, dtype) for plane in padded]

    def with_channels(self, channels: int) -> "PlaneModel":
        """The same model for ``channels`` planes (a copy)."""
        return type(self).from_tensors({**self.tensors(), "channels": np.array([float(channels)])}, self.output)
