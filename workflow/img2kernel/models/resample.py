"""The resampling model: a resize by any ratio, with a continuous kernel per axis.

A separable resampler's output pixel i (on one axis) is centred on the input position
``c_i = (i + 0.5) * N / n - 0.5`` (the pixel-centre convention, which Pillow, OpenCV and
ImageMagick share) or ``c_i = i * (N - 1) / (n - 1)`` (corners aligned), for an axis of N
input and n output pixels, and is ``sum_p f(p - c_i) in[p]``: the 1-D function ``f`` (in input
pixels) sampled at the offsets of that output pixel's phase. Where the ratio is not an
integer every output pixel has its own phase, so ``f`` is held as a continuous function:
values at knots, linearly interpolated (docs/design.md, "Geometry"). Tools normalise each
output pixel's weights to sum 1 (``normalised``); with the ``zero`` border rule the weights
that fall outside the image are dropped before that, which is how Pillow and ImageMagick
treat the edge. ``between_passes`` is the 8-bit rounding a tool makes between its horizontal
and vertical passes (Pillow stores the first pass in an 8-bit image).

The output's size is the input's times ``factor`` (rows, columns), rounded: an input of the
fitted size gives the tool's size, and a photo of any other size is resized by the same ratio.
"""

from __future__ import annotations

import numpy as np

from img2kernel import borders
from img2kernel.models.affine import OUTPUT_WORDS
from img2kernel.models.base import Model, output_step, planes, round_levels, stack
from img2kernel.thresholds import STORAGE_RANGE, TRUNCATION_TOLERANCE

CONVENTIONS = ("centre", "corner")  # where output pixel i is centred on the input (see the module's docstring)
# Which pass a tool rounds to 8 bits after: none, the horizontal one (Pillow: columns first), the vertical one.
BETWEEN_PASSES = ("none", "horizontal first", "vertical first")


def centres(size_in: int, size_out: int, convention: str) -> np.ndarray:
    """(size_out,) input positions the output pixels are centred on."""
    i = np.arange(size_out, dtype=np.float64)
    if convention == "corner":
        return i * ((size_in - 1) / (size_out - 1)) if size_out > 1 else np.full(1, (size_in - 1) / 2)
    return (i + 0.5) * (size_in / size_out) - 0.5


def output_size(size_in: int, factor: float) -> int:
    """The output's size on an axis of ``size_in`` pixels resized by ``factor`` (at least 1)."""
    return max(1, int(round(size_in * factor)))


def window(c: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, R) input positions that output pixels centred at ``c`` (n,) may read, and their offsets
    from the centres: every whole pixel within the knots' reach, a pixel more on each side."""
    reach = np.arange(int(np.floor(offsets[0])) - 1, int(np.ceil(offsets[-1])) + 2)
    positions = np.floor(c)[:, None].astype(np.int64) + reach[None, :]
    return positions, positions - c[:, None]


def _border_index(positions: np.ndarray, size: int, rule: str) -> np.ndarray:
    """Input indices for ``positions`` (any integers) by a border rule; -1 where the rule reads zero.
    ``padded``: the input already carries its border, so positions are indices as they are."""
    if rule == "padded":
        return positions
    if rule in ("zero", "unfiltered"):  # unfiltered has no meaning off the input's grid: nothing is read there
        return np.where((positions >= 0) & (positions < size), positions, -1)
    reach = int(max(0, -positions.min(), positions.max() - size + 1))
    _, np_mode = borders.PADDED_RULES[rule]
    table = np.pad(np.arange(size), reach, mode=np_mode)
    return table[positions + reach]


def axis_matrix(offsets: np.ndarray, taps: np.ndarray, size_in: int, size_out: int, convention: str, normalised: bool,
                rule: str = "zero", halo: int = 0):
    """The (size_out, size_in + 2 halo) sparse weights of one axis: ``taps`` at knot ``offsets``
    (input pixels, increasing), linearly interpolated, at each output pixel's phase; out-of-image
    taps by ``rule`` (``padded``: read from the ``halo`` the input carries); each row divided by
    its sum when ``normalised``."""
    import scipy.sparse

    positions, offset = window(centres(size_in, size_out, convention), offsets)
    weights = np.interp(offset, offsets, taps, left=0.0, right=0.0)
    index = _border_index(positions, size_in, rule) + halo
    weights = np.where((index >= 0) & (index < size_in + 2 * halo), weights, 0.0)
    if normalised:
        sums = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(np.abs(sums) > 1e-12, sums, 1.0)
    rows = np.broadcast_to(np.arange(size_out)[:, None], positions.shape)
    keep = (index >= 0) & (index < size_in + 2 * halo) & (weights != 0)
    return scipy.sparse.csr_matrix((weights[keep], (rows[keep], index[keep])), shape=(size_out, size_in + 2 * halo))


class ResampleModel(Model):
    """A separable resize: per axis a continuous kernel (``row_taps`` down the rows, ``column_taps``
    along them, at knots ``row_offsets`` and ``column_offsets`` in input pixels), the size
    ``factor`` (rows, columns), the centre convention and normalisation, an optional 8-bit rounding
    between the passes, and an offset per channel; the same kernel on each of ``channels`` planes."""

    name = "resample"
    rung = "linear"
    layout = ("row_offsets (M,), row_taps (M,), column_offsets (N,), column_taps (N,) (a fitted kernel per axis), or "
              "row_function (3,), column_function (3,) [index in RESAMPLERS, centre, widening] (a named one), factor (2,) "
              "out/in rows and columns, bias (C,), channels (1,), flags (3,) [corner convention, normalised, between "
              "passes]; out = R(row kernel) in C(column kernel)^T + bias")
    resamples = True

    def __init__(self, row_offsets, row_taps, column_offsets, column_taps, factor, bias=None, channels: int = 1,
                 convention: str = "centre", normalised: bool = True, between_passes: str = "none",
                 output: str = "float"):
        super().__init__(output)
        self.row_offsets, self.row_taps = np.asarray(row_offsets, np.float64), np.asarray(row_taps, np.float64)
        self.column_offsets, self.column_taps = np.asarray(column_offsets, np.float64), np.asarray(column_taps, np.float64)
        for name, knots, taps in (("row", self.row_offsets, self.row_taps), ("column", self.column_offsets, self.column_taps)):
            if knots.ndim != 1 or knots.shape != taps.shape or knots.size < 1 or np.any(np.diff(knots) <= 0):
                raise ValueError(f"{name} offsets must be increasing and as many as the {name} taps, got "
                                 f"{knots.shape} and {taps.shape}")
        self.factor = tuple(float(f) for f in np.asarray(factor, np.float64).ravel())
        if len(self.factor) != 2 or min(self.factor) <= 0:
            raise ValueError(f"factor must be two positive ratios (rows, columns), got {factor!r}")
        if convention not in CONVENTIONS or between_passes not in BETWEEN_PASSES:
            raise ValueError(f"convention must be one of {CONVENTIONS} and between_passes one of {BETWEEN_PASSES}")
        self.channels = int(channels)
        self.bias = np.zeros(self.channels) if bias is None else np.asarray(bias, np.float64).ravel()
        if self.bias.shape != (self.channels,):
            raise ValueError(f"bias must hold one offset per channel ({self.channels}), got {self.bias.shape}")
        self.convention, self.normalised, self.between_passes = convention, bool(normalised), between_passes
        self._naming = None
        self.functions = None  # per axis (index in RESAMPLERS, centre, widening) of a named model (:meth:`named`)

    NAMED_STEP = 1 / 64  # knot spacing of a named function's taps, in input pixels: linear between them is exact to 1e-4
    NAMED_REACH = 3  # widened pixels a named function's knots reach: the widest's support (Lanczos 3)

    @classmethod
    def named(cls, functions, factor, bias=None, channels: int = 1, convention: str = "centre", normalised: bool = True,
              between_passes: str = "none", output: str = "float") -> "ResampleModel":
        """A resize by catalogue functions: per axis (rows, columns) ``(index in RESAMPLERS, centre,
        widening)``, the function at offset d being ``RESAMPLERS[index]((d - centre) / widening)``."""
        from img2kernel.evaluate.resamplers import RESAMPLERS

        catalogue = list(RESAMPLERS.values())
        profiles = []
        for index, centre, widening in functions:
            if not (float(index).is_integer() and 0 <= index < len(catalogue)) or not widening >= 1:
                raise ValueError(f"a named function is (index 0..{len(catalogue) - 1}, centre, widening >= 1), got "
                                 f"({index}, {centre}, {widening})")
            steps = int(np.ceil((cls.NAMED_REACH * widening + abs(centre)) / cls.NAMED_STEP))
            offsets = np.arange(-steps, steps + 1) * cls.NAMED_STEP
            profiles += [offsets, catalogue[int(index)]((offsets - centre) / widening)]
        model = cls(*profiles, factor, bias, channels, convention, normalised, between_passes, output)
        model.functions = tuple((int(i), float(c), float(w)) for i, c, w in functions)
        return model

    # -- the interface
    @property
    def ksize(self) -> int:
        reach = max(np.abs(self.row_offsets).max(), np.abs(self.column_offsets).max())
        return 2 * int(np.ceil(reach)) + 1

    @property
    def c_in(self) -> int:
        return self.channels

    @property
    def c_out(self) -> int:
        return self.channels

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return output_size(height, self.factor[0]), output_size(width, self.factor[1])

    def matrices(self, shape: tuple[int, int], border: str, size: tuple[int, int] | None = None):
        """The sparse (rows, columns) weight matrices for an input of ``shape`` (H, W) and an output
        of ``size`` (default: :meth:`output_size`)."""
        size = size or self.output_size(*shape)
        return (axis_matrix(self.row_offsets, self.row_taps, shape[0], size[0], self.convention, self.normalised, border),
                axis_matrix(self.column_offsets, self.column_taps, shape[1], size[1], self.convention, self.normalised,
                            border))

    def resample(self, channels: list[np.ndarray], border: str, dtype: type, size: tuple[int, int] | None = None):
        """The planes resized (before the bias and the output step)."""
        rows, columns = self.matrices(channels[0].shape, border, size)
        low, high = STORAGE_RANGE["uint8"]
        out = []
        for plane in channels:
            plane = np.asarray(plane, dtype=np.float64)
            if self.between_passes == "vertical first":
                out.append(np.clip(round_levels(rows @ plane), low, high) @ columns.T)
            else:
                across = (columns @ plane.T).T  # the horizontal pass
                if self.between_passes == "horizontal first":
                    across = np.clip(round_levels(across), low, high)
                out.append(rows @ across)
        return [o.astype(dtype, copy=False) for o in out]

    def respond(self, padded, dtype):
        """The resize of planes that carry a halo (their border already applied): the output grid
        of the unpadded image."""
        halo = self.halo
        inner = (padded[0].shape[0] - 2 * halo, padded[0].shape[1] - 2 * halo)
        size = self.output_size(*inner)
        rows, columns = (axis_matrix(knots, taps, inner[axis], size[axis], self.convention, self.normalised, "padded", halo)
                         for axis, (knots, taps) in enumerate(((self.row_offsets, self.row_taps),
                                                               (self.column_offsets, self.column_taps))))
        return [((rows @ np.asarray(p, np.float64)) @ columns.T).astype(dtype, copy=False) + b
                for p, b in zip(padded, self.bias)]

    def predict(self, image, border: str = borders.DEFAULT, dtype: type = np.float64, output: str | None = None,
                size: tuple[int, int] | None = None):
        """The resized image (h, w[, C]) of an (H, W[, C]) image; ``size``: the output's (h, w)
        where it is known (a tool that resizes to a fixed size), else the input's times ``factor``."""
        channels = planes(np.asarray(image))
        if len(channels) != self.c_in:
            raise ValueError(f"{self.name} model takes {self.c_in} channel(s), the image has {len(channels)}")
        borders.check_rule(border)
        resized = self.resample(channels, border, np.float64, size)
        step = self.output if output is None else output
        return stack([output_step(r + b, step).astype(dtype, copy=False) for r, b in zip(resized, self.bias)])

    def tensors(self):
        kernels = ({"row_function": np.array(self.functions[0], np.float64),
                    "column_function": np.array(self.functions[1], np.float64)} if self.functions else
                   {"row_offsets": self.row_offsets, "row_taps": self.row_taps, "column_offsets": self.column_offsets,
                    "column_taps": self.column_taps})
        return {**kernels, "factor": np.array(self.factor), "bias": self.bias, "channels": np.array([float(self.channels)]),
                "flags": np.array([float(self.convention == "corner"), float(self.normalised),
                                   float(BETWEEN_PASSES.index(self.between_passes))])}

    @classmethod
    def from_tensors(cls, tensors, output="float"):
        flags = np.asarray(tensors["flags"], np.float64)
        if flags.shape != (3,) or int(flags[2]) not in range(len(BETWEEN_PASSES)):
            raise ValueError(f"flags must be [corner, normalised, between passes 0..2], got {flags!r}")
        rest = (tensors["factor"], tensors["bias"], int(np.asarray(tensors["channels"]).ravel()[0]),
                CONVENTIONS[int(flags[0])], bool(flags[1]), BETWEEN_PASSES[int(flags[2])], output)
        if "row_function" in tensors:
            functions = [np.asarray(tensors[f"{axis}_function"], np.float64) for axis in ("row", "column")]
            if any(f.shape != (3,) for f in functions):
                raise ValueError("row_function and column_function must each be (index, centre, widening)")
            return cls.named([tuple(f) for f in functions], *rest)
        return cls(tensors["row_offsets"], tensors["row_taps"], tensors["column_offsets"], tensors["column_taps"], *rest)

    def with_between_passes(self, between_passes: str) -> "ResampleModel":
        """The same resize with another 8-bit rounding between its passes (a copy)."""
        flags = self.tensors()["flags"].copy()
        flags[2] = BETWEEN_PASSES.index(between_passes)
        return type(self).from_tensors({**self.tensors(), "flags": flags}, self.output)

    def with_channels(self, channels: int) -> "ResampleModel":
        bias = np.resize(self.bias, channels)
        return type(self).from_tensors({**self.tensors(), "bias": bias, "channels": np.array([float(channels)])},
                                       self.output)

    @property
    def n_parameters(self) -> int:
        """The fitted values: each knot's tap, or a named function's centre per axis; and the offsets."""
        kernels = 2 if self.functions else self.row_taps.size + self.column_taps.size
        return int(kernels + self.bias.size)

    def naming(self) -> dict:
        """The catalogue resampler that matches each axis's kernel (evaluate.resamplers.match_profile)."""
        from img2kernel.evaluate.resamplers import describe_profiles, match_profile

        if self._naming is not None:
            return self._naming

        found = [match_profile(knots, taps, 1 / f, self.normalised) for knots, taps, f in
                 ((self.row_offsets, self.row_taps, self.factor[0]), (self.column_offsets, self.column_taps, self.factor[1]))]
        self._naming = {"axes": found, "text": describe_profiles(found, self.convention)}
        return self._naming

    @property
    def identifies(self) -> bool:
        return all(axis["identified"] for axis in self.naming()["axes"])

    def profiles(self) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
        """(title, offsets, taps, the named resampler's taps or None) per axis, for the report: the taps
        normalised phase by phase where the tool normalises (what an output pixel of that phase applies)."""
        from img2kernel.evaluate.resamplers import per_phase_normalised, profile_template
        from img2kernel.thresholds import CLOSE

        shown = []
        for axis_name, knots, taps, found in zip(("down the rows", "along the rows"),
                                                 (self.row_offsets, self.column_offsets),
                                                 (self.row_taps, self.column_taps), self.naming()["axes"]):
            # a normalising tool's taps as each output pixel applies them
            taps = per_phase_normalised(knots, taps) if self.normalised else taps
            template = profile_template(found, knots) if found["relative_residual"] <= CLOSE else None
            shown.append((f"kernel {axis_name}: {found['name']}" if template is not None else f"kernel {axis_name}",
                          knots, taps, template))
        return shown

    def describe(self) -> str:
        channels = "" if self.channels == 1 else ", the same kernel on each colour channel"
        passes = "" if self.between_passes == "none" else f", rounded to 8 bits after the {self.between_passes.split()[0]} pass"
        offset = "" if not np.any(np.abs(self.bias) > 1e-3) else ", offset " + ", ".join(f"{b:+.3g}" for b in self.bias)
        if self.output in STORAGE_RANGE and np.all(np.abs(self.bias + 0.5) <= TRUNCATION_TOLERANCE):
            offset += ": the tool truncates to integers instead of rounding"
        return f"resampled with {self.naming()['text']}{channels}{passes}{offset}{OUTPUT_WORDS.get(self.output, '')}"
