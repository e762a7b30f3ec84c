"""Where a pair's output sits on its input's pixel grid (docs/design.md, "Geometry").

A tool's output file need not be the input's grid: it may be cropped (a valid-mode filter's
margin, or any crop), sampled every s-th pixel (a resize by an integer factor), or turned (a
flip, a 90-degree rotation, a transpose). A :class:`Placement` says which. The pairs store puts
each output back on its input's grid (NaN where the tool wrote nothing), so the fit, the border
rule, the ladder and the evaluation read the same arrays as for a same-size output; the model
file keeps the placement, and ``img2kernel apply`` writes the tool's size and orientation.

:func:`candidates` reads the sizes alone (the config check, before any job; light imports).
:func:`locate` decides among them by the evidence: the least-squares residual of a small
window at every candidate placement, on a sample of output pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# How the output file is the tool's output on the input's grid turned, and its inverse.
# "rot90" is clockwise, as viewers name it.
TRANSFORM_WORDS = {
    "none": "",
    "rot90": "rotated 90 degrees clockwise",
    "rot180": "rotated 180 degrees",
    "rot270": "rotated 90 degrees counter-clockwise",
    "flip_lr": "flipped left to right",
    "flip_ud": "flipped upside down",
    "transpose": "transposed (rows become columns)",
    "antitranspose": "transposed across the other diagonal",
}
INVERSE = {"rot90": "rot270", "rot270": "rot90"}  # the others undo themselves
SWAPS_AXES = {"rot90", "rot270", "transpose", "antitranspose"}
MAX_CROP = 64  # the widest crop searched on an axis, in pixels (every offset is tried)
MAX_STRIDE = 8  # the largest integer resize factor
SEARCH_PIXELS = 2048  # output pixels sampled for the evidence
# The plain placement (as stored, centred) is kept unless another explains the pixels with a
# residual this many times smaller: a flat or symmetric image must not turn a pair around.
CLEARLY_BETTER = 0.5


def turn(array, transform: str):
    """``array`` (H, W[, C]) turned by ``transform`` (numpy views where possible)."""
    import numpy as np

    if transform == "none":
        return array
    if transform == "rot90":
        return np.rot90(array, -1)
    if transform == "rot180":
        return array[::-1, ::-1]
    if transform == "rot270":
        return np.rot90(array, 1)
    if transform == "flip_lr":
        return array[:, ::-1]
    if transform == "flip_ud":
        return array[::-1]
    if transform == "transpose":
        return array.swapaxes(0, 1)
    if transform == "antitranspose":
        return array[::-1, ::-1].swapaxes(0, 1)
    raise ValueError(f"unknown transform {transform!r}; one of {', '.join(TRANSFORM_WORDS)}")


def source_cells(transform: str, sampled: tuple[int, int], rows, cols):
    """The (row, column) arrays of the sampled cells that file pixels (``rows``, ``cols``) come from,
    for a file that is the ``sampled`` (R, C) array turned by ``transform`` (no index grid built)."""
    last_r, last_c = sampled[0] - 1, sampled[1] - 1
    return {"none": (rows, cols), "rot90": (last_r - cols, rows), "rot180": (last_r - rows, last_c - cols),
            "rot270": (cols, last_c - rows), "flip_lr": (rows, last_c - cols), "flip_ud": (last_r - rows, cols),
            "transpose": (cols, rows), "antitranspose": (last_r - cols, last_c - rows)}[transform]


@dataclass(frozen=True)
class Placement:
    """An output file on its input's grid.

    The tool's output on the input's grid is sampled at rows ``origin[0] + stride[0] * i`` and
    columns ``origin[1] + stride[1] * j``, leaving ``end`` rows and columns after the last
    sample, then turned by ``transform`` into the file. The plain placement (all zeros, stride
    1) is a same-size output; ``origin == end == (m, m)`` a valid-mode margin m.

    ``scale`` (output pixels per input pixel, rows and columns) marks a resize by a ratio that no
    integer stride gives (3/4, an enlargement): its output keeps its own grid, and the model
    (:class:`img2kernel.models.resample.ResampleModel`) computes that grid itself.
    """

    transform: str = "none"
    origin: tuple[int, int] = (0, 0)
    stride: tuple[int, int] = (1, 1)
    end: tuple[int, int] = (0, 0)
    scale: tuple[float, float] | None = None

    @classmethod
    def from_dict(cls, value: dict | None) -> "Placement":
        """The placement a store manifest or a model file holds; ValueError saying which field is wrong."""
        if not value:
            return cls()
        if not isinstance(value, dict) or set(value) - {"transform", "origin", "stride", "end", "scale"}:
            raise ValueError(f"a placement is {{transform, origin, stride, end, scale}}, got {value!r}")
        if value.get("transform", "none") not in TRANSFORM_WORDS:
            raise ValueError(f"placement transform {value.get('transform')!r} is not one of {', '.join(TRANSFORM_WORDS)}")
        pairs = {}
        for name, default, low in (("origin", (0, 0), 0), ("stride", (1, 1), 1), ("end", (0, 0), 0)):
            pair = value.get(name, default)
            if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v >= low for v in pair)):
                raise ValueError(f"placement {name} must be two integers of at least {low}, got {pair!r}")
            pairs[name] = tuple(pair)
        scale = value.get("scale")
        if scale is not None and (not isinstance(scale, (list, tuple)) or len(scale) != 2 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= MAX_STRIDE for v in scale)):
            raise ValueError(f"placement scale must be two ratios in (0, {MAX_STRIDE}], got {scale!r}")
        return cls(value.get("transform", "none"), pairs["origin"], pairs["stride"], pairs["end"],
                   None if scale is None else (float(scale[0]), float(scale[1])))

    def to_dict(self) -> dict:
        """The placement as a store manifest and a model file hold it (``scale`` only for a resize)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
                if not (k == "scale" and v is None)}

    @property
    def plain(self) -> bool:
        """Same size, same orientation: nothing to place."""
        return self == Placement()

    @property
    def margin(self) -> int | None:
        """m for a valid-mode output (the same margin m on every side, nothing turned or sampled)."""
        m = self.origin[0]
        return (m if self.transform == "none" and self.stride == (1, 1) and self.scale is None
                and self.origin == self.end == (m, m) else None)

    @property
    def off_grid(self) -> bool:
        """Whether output pixels are not one to one with input pixels (a resize): previews show each
        output pixel over the input pixels it stands for."""
        return self.stride != (1, 1) or self.scale is not None

    def sampled_shape(self, input_shape: tuple[int, ...]) -> tuple[int, int]:
        """(rows, columns) sampled from an input of ``input_shape``, before turning."""
        if self.scale is not None:
            from img2kernel.models.resample import output_size

            return output_size(input_shape[0], self.scale[0]), output_size(input_shape[1], self.scale[1])
        counts = []
        for axis in (0, 1):
            span = input_shape[axis] - self.end[axis] - self.origin[axis]
            if span < 1:
                raise ValueError(f"an input of {input_shape[1]}x{input_shape[0]} is too small for this placement "
                                 f"({self.describe()})")
            counts.append(-(-span // self.stride[axis]))
        return counts[0], counts[1]

    def file_shape(self, input_shape: tuple[int, ...]) -> tuple[int, int]:
        """(height, width) of the file the tool writes from an input of ``input_shape``."""
        rows, cols = self.sampled_shape(input_shape)
        return (cols, rows) if self.transform in SWAPS_AXES else (rows, cols)

    def cells(self, input_shape: tuple[int, ...]) -> tuple[slice, slice]:
        """The (rows, columns) slices of the input's grid that the output samples, before turning."""
        rows, cols = self.sampled_shape(input_shape)
        (r0, c0), (sr, sc) = self.origin, self.stride
        return slice(r0, r0 + sr * (rows - 1) + 1, sr), slice(c0, c0 + sc * (cols - 1) + 1, sc)

    def sample(self, full):
        """The file's array from the tool's output on the input's grid (H, W[, C]); a resize's output
        on its own grid is only turned."""
        if self.scale is not None:
            return turn(full, self.transform)
        return turn(full[self.cells(full.shape)], self.transform)

    def place(self, output, input_shape: tuple[int, ...]):
        """(H, W, C) float of the input's grid with the file's pixels where the tool wrote them, NaN
        elsewhere (float32, or float64 for a float64 file)."""
        import numpy as np

        turned_back = turn(output, INVERSE.get(self.transform, self.transform))
        rows, cols = self.sampled_shape(input_shape)
        if turned_back.shape[:2] != (rows, cols):
            raise ValueError(f"an output of {turned_back.shape[1]}x{turned_back.shape[0]} does not fit this placement "
                             f"of an input of {input_shape[1]}x{input_shape[0]} ({self.describe()})")
        # float32 holds every 8- and 16-bit value exactly: the input's size in float64 would double it
        dtype = np.float64 if output.dtype == np.float64 else np.float32
        if self.scale is not None:  # its own grid: every pixel known
            return np.ascontiguousarray(turned_back, dtype=dtype)
        full = np.full(tuple(input_shape[:2]) + turned_back.shape[2:], np.nan, dtype=dtype)
        full[self.cells(input_shape)] = turned_back
        return full

    def numpy_code(self, name: str = "out") -> str:
        """A line of numpy that turns the tool's output on the input's grid, ``name``, into its file
        ("" for the plain placement): the reproduction snippets end with it."""
        if self.plain or (self.scale is not None and self.transform == "none"):  # a resize's model writes its own grid
            return ""
        (r0, c0), (sr, sc), (r1, c1) = self.origin, self.stride, self.end

        def bound(end: int, axis: int) -> str:
            return f"{name}.shape[{axis}]" + (f" - {end}" if end else "")

        def step(s: int) -> str:
            return f":{s}" if s > 1 else ""

        sampled = (name if (r0, c0, r1, c1, sr, sc) == (0, 0, 0, 0, 1, 1) or self.scale is not None else
                   f"{name}[{r0 or ''}:{bound(r1, 0)}{step(sr)}, {c0 or ''}:{bound(c1, 1)}{step(sc)}]")
        turned = {"none": "{}", "rot90": "np.rot90({}, -1)", "rot180": "{}[::-1, ::-1]", "rot270": "np.rot90({}, 1)",
                  "flip_lr": "{}[:, ::-1]", "flip_ud": "{}[::-1]", "transpose": "{}.swapaxes(0, 1)",
                  "antitranspose": "{}[::-1, ::-1].swapaxes(0, 1)"}[self.transform]
        return f"{name} = {turned.format(sampled)}  # {self.describe()}\n"

    def nearest_sample(self, full, input_shape: tuple[int, ...] | None = None):
        """Every pixel of the input's grid (H, W[, C]) given the value of its nearest sample: a
        resize's output and its prediction, seen at the input's size (the report's previews); a
        resize on its own grid (``full`` its output) needs the ``input_shape``."""
        import numpy as np

        if self.scale is not None:
            index = [np.minimum((np.arange(input_shape[a]) * full.shape[a]) // input_shape[a], full.shape[a] - 1)
                     for a in (0, 1)]
            return full[index[0][:, None], index[1][None, :]]
        counts = self.sampled_shape(full.shape)
        index = [self.origin[a] + self.stride[a] * np.clip(np.rint((np.arange(full.shape[a]) - self.origin[a]) / self.stride[a]),
                                                           0, counts[a] - 1).astype(np.int64) for a in (0, 1)]
        return full[index[0][:, None], index[1][None, :]]

    def describe(self) -> str:
        """The geometry in words ("" for the plain placement)."""
        parts = []
        if self.scale is not None:
            rows, cols = (_ratio(s) for s in self.scale)
            parts.append(f"resized by {rows}" if rows == cols else f"resized by {cols} across and {rows} down")
        elif self.stride != (1, 1):
            sr, sc = self.stride
            factor = f"1/{sr}" if sr == sc else f"1/{sc} across and 1/{sr} down"
            parts.append(f"resized by {factor} (every {_nth(sr)} row and {_nth(sc)} column from row {self.origin[0]}, "
                         f"column {self.origin[1]})")
        elif self.margin:
            parts.append(f"a valid-mode output ({self.margin} pixels smaller on every side)")
        elif self.origin != (0, 0) or self.end != (0, 0):
            (top, left), (bottom, right) = self.origin, self.end
            parts.append(f"cropped: {left} columns off the left, {right} off the right, {top} rows off the top, "
                         f"{bottom} off the bottom")
        if self.transform != "none":
            parts.append(TRANSFORM_WORDS[self.transform])
        return ", then ".join(parts)


def geometry_of(placements: list) -> dict:
    """The outputs' geometry for a fit's record and its model file: the first pair's placement
    (which ``img2kernel apply`` reproduces), in words, and the others' where they differ (crops
    at other offsets: a tool's fixed rule has one placement)."""
    first = placements[0] if placements else Placement()
    others = sorted({p.describe() or "as stored" for p in placements if p != first})
    return {"placement": first.to_dict(), "text": first.describe(), "other_placements": others}


def _ratio(value: float) -> str:
    """A resize factor in words: ``3/4``, ``2``, or ``0.6665`` where no small fraction is it."""
    from fractions import Fraction

    near = Fraction(value).limit_denominator(MAX_STRIDE * 2)
    if abs(float(near) - value) > 1e-6:
        return f"{value:.4g}"
    return str(near.numerator) if near.denominator == 1 else f"{near.numerator}/{near.denominator}"


def _small_fraction(value: float) -> bool:
    """Whether ``value`` is p/q with p and q at most MAX_STRIDE (3/4, 2/3, 5/8, 3): a factor a user sets."""
    from fractions import Fraction

    near = Fraction(value).limit_denominator(MAX_STRIDE)
    return abs(float(near) - value) <= 1e-9 and near.numerator <= MAX_STRIDE


def resample_placement(input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> Placement | None:
    """A resize on the output's own grid, where the sizes allow no integer placement: the two axes
    resized alike (to a pixel's rounding: an aspect-keeping resize) or each by a small fraction
    other than 1 (p/q with p, q <= MAX_STRIDE: a fixed factor per axis), by 1/MAX_STRIDE to
    MAX_STRIDE. A wider crop, or padding of a photo that is not square, passes neither test."""
    (h, w), (oh, ow) = input_shape[:2], output_shape[:2]
    if (h, w) == (oh, ow) or min(h, w, oh, ow) < 1:
        return None
    ratios = (oh / h, ow / w)
    if not all(1 / MAX_STRIDE <= r <= MAX_STRIDE for r in ratios):
        return None
    alike = abs(oh - h * ow / w) <= 1 or abs(ow - w * oh / h) <= 1
    simple = all(_small_fraction(r) and r != 1 for r in ratios)  # one axis alone changed: a crop, not a resize
    if not (alike or simple):
        return None
    return Placement(scale=ratios)


def allowed(input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> bool:
    """Whether any placement fits the sizes (the config check, before any pixel is read)."""
    return bool(candidates(input_shape, output_shape)) or resample_placement(input_shape, output_shape) is not None


def _nth(n: int) -> str:
    return {1: "", 2: "2nd", 3: "3rd"}.get(n, f"{n}th") if n > 1 else "every"


@dataclass(frozen=True)
class Candidate:
    """A family of placements the sizes allow: one transform and stride, origins in ranges."""

    transform: str
    stride: tuple[int, int]
    origins: tuple[range, range]
    sampled: tuple[int, int]  # (rows, columns) of the output before turning

    def placement(self, origin: tuple[int, int], input_shape: tuple[int, ...]) -> Placement:
        end = tuple(input_shape[a] - (origin[a] + self.stride[a] * (self.sampled[a] - 1)) - 1 for a in (0, 1))
        return Placement(self.transform, tuple(origin), self.stride, end)

    def centred(self) -> tuple[int, int]:
        """The middle origin: a valid-mode margin, the centre of a resize's s-pixel cell."""
        return tuple(r[len(r) // 2] for r in self.origins)


def _axis_options(size_in: int, size_out: int) -> list[tuple[int, range]]:
    """(stride, origins) for one axis: the input sampled every stride-th pixel gives ``size_out``."""
    options = []
    if size_out <= size_in and size_in - size_out <= MAX_CROP:
        options.append((1, range(0, size_in - size_out + 1)))
    stride = round(size_in / size_out) if size_out else 0
    if 2 <= stride <= MAX_STRIDE and stride * (size_out - 1) < size_in:
        # every origin that fits, at most one stride past the ones an exact factor allows
        room = size_in - stride * (size_out - 1)
        if room <= 2 * stride:
            options.append((stride, range(0, room)))
    return options


def candidates(input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> list[Candidate]:
    """Every placement family the two sizes ((height, width) first) allow; [] when none does
    (an output larger than its input, a ratio that is not an integer, a crop wider than MAX_CROP)."""
    (h, w), (oh, ow) = input_shape[:2], output_shape[:2]
    found = []
    for transform in TRANSFORM_WORDS:
        rows, cols = (ow, oh) if transform in SWAPS_AXES else (oh, ow)
        for stride_r, origins_r in _axis_options(h, rows):
            for stride_c, origins_c in _axis_options(w, cols):
                found.append(Candidate(transform, (stride_r, stride_c), (origins_r, origins_c), (rows, cols)))
    return found


def _tried(found: list[Candidate], input_shape, output_shape) -> list[Candidate]:
    """The families worth pixels: the turns that keep the axes, and those that swap them where
    the sizes are swapped or everything is square (a same-size output of a non-square input
    cannot be transposed)."""
    (h, w), (oh, ow) = input_shape[:2], output_shape[:2]
    if (oh, ow) == (w, h) and h != w:
        return [c for c in found if c.transform in SWAPS_AXES]
    if (oh, ow) == (h, w) and h != w:
        return [c for c in found if c.transform not in SWAPS_AXES]
    return found


# The resize's evidence (sources.geometry._located_resize) at most this share of the output's
# standard deviation explains the pairs: a crop of the same sizes is not searched.
RESIZE_EXPLAINED = 0.02
COARSE_STEP = 3  # origins searched every third pixel first where a family has many
COARSE_PIXELS = 512  # of the sampled output pixels, those that score a coarse origin


def locate(x, y, input_ref: str = "input", output_ref: str = "output",
           prefer: Placement | None = None) -> tuple[Placement, dict]:
    """The placement of output ``y`` (h, w[, C]) on input ``x`` (H, W[, C]) by the evidence.

    Every candidate placement (:func:`candidates`: transforms, strides, origins) is scored by
    the RMS residual of the least-squares fit of the output's channel mean from the input's
    channel mean in a small window (5x5, or 2s + 1 for a stride s), on the same sampled output
    pixels. A family with many origins is searched every :data:`COARSE_STEP` pixels with a
    wider window (which absorbs the step), then at every pixel around its best. The plain
    placement (as stored, the output centred), or ``prefer`` where it fits these sizes (the
    placement of the filter's first pair: one tool, one phase), is kept unless another is
    :data:`CLEARLY_BETTER`. Where no integer factor gives the sizes, a resize on the output's own
    grid (:func:`resample_placement`) is scored too, by :func:`_located_resize` on the same
    pixels, and is chosen over a crop of the same sizes when the crop's residual is twice its own.
    Returns the placement and its evidence (the residuals).
    """
    import numpy as np

    found = _tried(candidates(x.shape, y.shape), x.shape, y.shape)
    # A resize on its own grid where no integer factor gives the sizes (those are placed on the grid);
    # the pixels then tell it from a crop of the same sizes.
    resizable = not any(c.stride != (1, 1) for c in found) and any(
        resample_placement(x.shape, shape) is not None for shape in (y.shape[:2], y.shape[1::-1]))
    if not found and not resizable:
        raise ValueError(size_mismatch(input_ref, x.shape[:2], output_ref, y.shape[:2]))
    rng = np.random.default_rng(0)
    n = min(SEARCH_PIXELS, y.shape[0] * y.shape[1])
    file_rows, file_cols = rng.integers(0, y.shape[0], n), rng.integers(0, y.shape[1], n)
    target = np.asarray(y[file_rows, file_cols], dtype=np.float64).reshape(n, -1).mean(axis=1)
    x = _channel_mean(x)  # every window fit reads the input's channel mean: computed once
    resize, resize_rms = _located_resize(x, y.shape, file_rows, file_cols, target, prefer) if resizable else (None, None)
    if not found and resize is not None and resize.transform == "none" and y.shape[0] > x.shape[0] and y.shape[1] > x.shape[1]:
        # The sizes of a square photo padded alike on every side are a resize's too: the input found
        # unchanged in the output's middle says padding.
        margin = ((y.shape[0] - x.shape[0]) // 2, (y.shape[1] - x.shape[1]) // 2)
        padded_rms, _ = _window_fit(x, file_rows - margin[0], file_cols - margin[1], target, 2)
        if padded_rms < CLEARLY_BETTER * resize_rms:
            raise ValueError(size_mismatch(input_ref, x.shape[:2], output_ref, y.shape[:2]))
    # A resize that leaves a fiftieth of the output's spread needs no crop search (on a square photo
    # every turn's crops at every offset: thousands of small fits).
    explained = resize_rms is not None and resize_rms <= RESIZE_EXPLAINED * float(np.std(target))
    if not found or explained or (prefer is not None and prefer.scale is not None):
        # no integer placement (or the filter's first pair is a resize): a resize on its own grid
        return resize, {"residual_rms": resize_rms, "plain_residual_rms": None, "placements_tried": 1, "window": 5}

    def scorer(candidate: Candidate):
        cell = np.stack(source_cells(candidate.transform, candidate.sampled, file_rows, file_cols), axis=1)

        def residual(origin: tuple[int, int], radius: int, kernel: bool = False, pixels: int | None = None):
            centre_r = origin[0] + candidate.stride[0] * cell[:pixels, 0]
            centre_c = origin[1] + candidate.stride[1] * cell[:pixels, 1]
            rms, theta = _window_fit(x, centre_r, centre_c, target[:pixels], radius)
            return (rms, theta) if kernel else rms

        return residual

    scores = []
    for candidate in found:
        residual = scorer(candidate)
        radius = max(2, *candidate.stride)
        rows, cols = candidate.origins
        if len(rows) * len(cols) > COARSE_STEP ** 2 * 4:
            def every_third(origins):  # an axis of few origins (one, where the sizes agree) is kept whole
                return origins[COARSE_STEP // 2 :: COARSE_STEP] if len(origins) > 2 * COARSE_STEP else origins

            coarse = [(residual((r, c), radius + COARSE_STEP // 2 + 1, pixels=COARSE_PIXELS), (r, c))
                      for r in every_third(rows) for c in every_third(cols)]
            best_r, best_c = min(coarse)[1]
            rows = [r for r in rows if abs(r - best_r) <= COARSE_STEP]
            cols = [c for c in cols if abs(c - best_c) <= COARSE_STEP]
        scores.extend((residual((r, c), radius), candidate, (r, c)) for r in rows for c in cols)
    unturned = [c for c in found if c.transform == "none"]
    plain = None  # as stored: not turned, the finest stride, centred
    if unturned:
        family = min(unturned, key=lambda c: c.stride)
        plain = (scorer(family)(family.centred(), max(2, *family.stride)), family, family.centred())
    if prefer is not None:
        for family in found:
            if (family.transform, family.stride) == (prefer.transform, prefer.stride) and all(
                    prefer.origin[a] in family.origins[a] for a in (0, 1)):
                plain = (scorer(family)(prefer.origin, max(2, *family.stride)), family, prefer.origin)
    best = min(scores, key=lambda s: s[0])
    kept = plain is not None and not best[0] < CLEARLY_BETTER * plain[0]
    chosen = plain if kept else best
    if not (kept and prefer is not None and plain[2] == prefer.origin):  # a preferred placement stays as it is
        chosen = _centred_on_kernel(chosen, scorer(chosen[1]))
    placement = chosen[1].placement(chosen[2], x.shape)
    evidence = {"residual_rms": chosen[0], "plain_residual_rms": None if plain is None else plain[0],
                "placements_tried": len(scores), "window": 2 * max(2, *chosen[1].stride) + 1}
    if resize_rms is not None and resize_rms < CLEARLY_BETTER * chosen[0]:  # the sizes allow a crop, the pixels say a resize
        return resize, {**evidence, "residual_rms": resize_rms, "crop_residual_rms": chosen[0],
                        "placements_tried": len(scores) + 1, "window": 5}
    return placement, evidence


def _window_fit(image, centre_r, centre_c, target, radius: int):
    """(RMS, kernel) of the least-squares fit of ``target`` from the channel mean of ``image`` in a
    (2 radius + 1)^2 window at each (``centre_r``, ``centre_c``) whose window lies inside; (inf,
    None) where too few do."""
    import numpy as np

    from img2kernel.fit.lstsq import least_squares

    inside = ((centre_r >= radius) & (centre_r < image.shape[0] - radius) & (centre_c >= radius)
              & (centre_c < image.shape[1] - radius) & np.isfinite(target))
    if inside.sum() < 4 * (2 * radius + 1) ** 2:
        return np.inf, None
    offsets = np.arange(-radius, radius + 1)
    rows = centre_r[inside, None, None] + offsets[None, :, None]
    cols = centre_c[inside, None, None] + offsets[None, None, :]
    design = np.asarray(image[rows, cols], dtype=np.float64).reshape(int(inside.sum()), (2 * radius + 1) ** 2, -1)
    design = np.hstack([design.mean(axis=2), np.ones((design.shape[0], 1))])  # a channel mean already: one channel
    theta = least_squares(iter([(design, target[inside])]))  # the normal equations: small and many
    rms = float(np.sqrt(np.mean(np.square(design @ theta - target[inside]))))
    return rms, theta[:-1].reshape(2 * radius + 1, 2 * radius + 1)


def _channel_mean(x):
    """(H, W) float32 mean of an (H, W[, C]) image's channels (float64 for a float64 image)."""
    import numpy as np

    dtype = np.float64 if x.dtype == np.float64 else np.float32
    return x.astype(dtype, copy=False) if x.ndim == 2 else np.mean(x, axis=2, dtype=dtype)


def _resized(mean, scale: tuple[float, float]):
    """The input's channel mean (H, W) resized by ``scale`` with an antialiased Keys cubic: the
    evidence for a resize, whose small-window fit absorbs another resampler's kernel."""
    from img2kernel.evaluate.resamplers import RESAMPLERS
    from img2kernel.models.resample import ResampleModel

    keys = list(RESAMPLERS).index("Keys cubic a = -0.5 (Catmull-Rom: Pillow's and ImageMagick's bicubic)")
    model = ResampleModel.named([(keys, 0.0, max(1.0, 1 / s)) for s in scale], scale)
    return model.predict(mean, "replicate")


def _located_resize(x, output_shape, file_rows, file_cols, target, prefer: Placement | None):
    """(placement, residual) of the best resize on the output's own grid: each turn the sizes allow
    scored by the same small-window fit as a placement's, on the input (its channel mean ``x``)
    resized to that grid (:func:`_resized`), each file pixel read where its turn puts it; the plain
    one, or the filter's first pair's turn, is kept unless another is :data:`CLEARLY_BETTER`.
    (None, None) where no resize gives the sizes."""
    from dataclasses import replace

    scored, resized = [], {}
    for transform in TRANSFORM_WORDS:
        sampled = tuple(output_shape[1::-1]) if transform in SWAPS_AXES else tuple(output_shape[:2])
        resize = resample_placement(x.shape, sampled)
        if resize is not None:
            resize = replace(resize, transform=transform)
            if sampled not in resized:  # the turns that keep the axes share one resized input, those that swap another
                resized[sampled] = _resized(x, resize.scale)
            rows, cols = source_cells(transform, sampled, file_rows, file_cols)
            scored.append((_window_fit(resized[sampled], rows, cols, target, 2)[0], resize))
    if not scored:
        return None, None
    kept = next((s for s in scored if s[1].transform == (prefer.transform if prefer is not None and prefer.scale
                                                          else "none")), None)
    best = min(scored, key=lambda s: s[0])
    chosen = kept if kept is not None and not best[0] < CLEARLY_BETTER * kept[0] else best
    return chosen[1], chosen[0]


def _centred_on_kernel(chosen, residual):
    """A window absorbs a placement a pixel or two off, with the same residual: the kernel then
    sits off the window's centre. Move the origin by the centroid of the kernel's energy (a wider window, to see all of it) where that explains the pixels as well."""
    import numpy as np

    rms, candidate, origin = chosen
    radius = max(2, *candidate.stride) + 2
    wide, kernel = residual(origin, radius, kernel=True)
    if kernel is None or not np.any(kernel):
        return chosen
    energy = np.square(kernel)
    offsets = np.arange(-radius, radius + 1)
    # Half-way centroids (an even resize factor's cell centre) go to the later pixel, with room for noise.
    shift = [int(np.floor(float(np.sum(energy.sum(axis=1 - a) * offsets) / energy.sum()) + 0.6)) for a in (0, 1)]
    moved = tuple(min(max(origin[a] + shift[a], candidate.origins[a][0]), candidate.origins[a][-1]) for a in (0, 1))
    if moved == origin:
        return chosen
    moved_rms = residual(moved, max(2, *candidate.stride))
    return (moved_rms, candidate, moved) if moved_rms <= rms * 1.25 + 1e-12 else chosen


def size_mismatch(input_ref: str, input_shape: tuple[int, int], output_ref: str, output_shape: tuple[int, int]) -> str:
    """Why a pair's sizes are refused, in the geometry they suggest (shapes are (height, width))."""
    (h, w), (oh, ow) = input_shape, output_shape
    said = f"sizes differ: input {input_ref} is {w}x{h}, output {output_ref} is {ow}x{oh} (width x height)"
    if max(oh / h, ow / w) > MAX_STRIDE or min(oh / h, ow / w) < 1 / MAX_STRIDE:
        geometry = f"the output is {ow / w:.3g} x {oh / h:.3g} times the input's size (a resize by more than {MAX_STRIDE}x)"
    elif oh >= h and ow >= w:
        geometry = f"the output is {ow - w} columns and {oh - h} rows larger (padding?)"
    else:
        geometry = (f"the output is {w - ow} columns and {h - oh} rows smaller, not in proportion (a crop wider than "
                    f"{MAX_CROP} pixels?)")
    return (f"{said}: {geometry}; img2kernel fits outputs cropped by at most {MAX_CROP} pixels on each axis or reduced "
            f"by an integer factor up to {MAX_STRIDE}, either of them flipped, rotated by 90 degrees or transposed, and "
            f"outputs resized by any ratio from 1/{MAX_STRIDE} to {MAX_STRIDE} (both axes alike, or each by a fraction "
            f"p/q with p and q up to {MAX_STRIDE})")
