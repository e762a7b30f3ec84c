"""Fitting through a JPEG file's compression (docs/design.md, "JPEG files").

A JPEG decoder returns, for each 8x8 block of the file's grid, the inverse DCT of the
stored coefficients times the file's quantization steps q, rounded. So the tool's own
output had, at each coefficient, a value within q/2 of the decoded pixels' coefficient:
comparing pixels treats every coefficient the compression zeroed as a true zero, and a
block where the tool clipped (its ringing moved off 0 and 255 by the compression) as
linear. Here the fit runs in the file's DCT domain instead:

- **rows** are the coefficients of whole blocks of the file's grid (a cropped or valid-mode
  output's grid starts at its placement's origin), blocks with a pixel within ``clip_margin`` of the range left
  out (the compression error reaches a few of its RMS; a clipped block would pass 0 or 255
  by less);
- **weights**: each coefficient is divided by sqrt(q^2 + 2), its error's deviation (a
  uniform step q, the tool's 8-bit rounding and the decoder's) in units of one rounding, so
  a linear tool leaves at most 1/sqrt(12) RMS (the 8-bit floor, :mod:`img2kernel.thresholds`)
  and the size, structure and linear tests read the same thresholds as a lossless file;
- **intervals**: at the chosen size the kernel is refined so that each predicted coefficient
  falls in its quantization interval (damped Gauss-Newton on the squared distance to the
  intervals, narrowed by the pixel rounding), which uses what a zeroed coefficient says
  (|value| < q/2) instead of pulling it to 0.

These are the same :class:`~img2kernel.fit.lstsq.NormalEquations` as pixel rows, so one
solver serves both. A colour JPEG's luma is its file's Y plane up to the decoder's RGB
rounding (the JFIF luma of the decoded RGB cancels the chroma exactly, whatever the chroma
subsampling), so :func:`luma_pairs` makes gray-output pairs of it: a tool that applies one
kernel to every channel is found from them (:func:`gray_of`, and
:func:`img2kernel.fit.pairs.fit_shared_from_luma`); other colour tools are fitted on their
decoded pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided
from scipy.fft import dct

from img2kernel.colour import JFIF_LUMA  # the encoder's Y from R, G, B (JFIF, ITU-R BT.601)
from img2kernel.fit.lstsq import FitSample, NormalEquations, centring, interior, solve_normal
from img2kernel.models.affine import AffineKernel
from img2kernel.models.base import Location
from img2kernel.sources.geometry import Placement

DCT = dct(np.eye(8), norm="ortho", axis=0)  # DCT @ v is the codec's orthonormal DCT-II of v
ROUNDINGS = 2  # the tool's 8-bit rounding before encoding and the decoder's after, in units of 1/12
# A colour file's luma adds the RGB roundings of the tool and of the decoder (each 0.447 of one
# rounding's variance through JFIF_LUMA) and the encoder's rounding of Y.
COLOUR_ROUNDINGS = 3 + 2 * float(np.sum(np.square(JFIF_LUMA)))
CLIP_DEVIATIONS = 3.0  # blocks with a pixel this many compression-error RMS from 0 or 255 are left out
INTERVAL_SLACK = 0.5  # the intervals are narrowed by this (levels): the pixel roundings' part of the error
NEWTON_STEPS = 30
REFINE_BUDGET = 3e7  # rows x features held for the interval refinement (240 MB of float64)
# Coefficients held for the refinement: those within this many levels of leaving their interval,
# and rounds of adding those that came within it.
WORKING_MARGIN = 1.0
WORKING_ROUNDS = 4


@dataclass(frozen=True)
class JpegGrid:
    """One output file's 8x8 grid and quantization.

    Attributes:
        steps: (8, 8) quantization steps of its (luma) plane, natural order.
        row, col: where the file's pixel (0, 0) sits in the output array.
        row_step, col_step: the spacing of the file's pixels there (a resize's stride; 1 otherwise).
        quality, quality_estimate: the IJG quality of its table (None: not an IJG table), the nearest one.
    """

    steps: np.ndarray
    row: int
    col: int
    quality: int | None
    quality_estimate: int
    roundings: float = ROUNDINGS  # 8-bit roundings besides the quantization, in units of 1/12
    row_step: int = 1
    col_step: int = 1

    def area(self, rows: int, cols: int) -> tuple[slice, slice]:
        """The output array's pixels of the file's first ``rows`` x ``cols`` blocks."""
        return (slice(self.row, self.row + 8 * rows * self.row_step, self.row_step),
                slice(self.col, self.col + 8 * cols * self.col_step, self.col_step))

    @property
    def scale(self) -> np.ndarray:
        """(8, 8) weights: one over each coefficient's error deviation, in rounding units."""
        return 1.0 / np.sqrt(np.square(self.steps) + self.roundings)

    @property
    def expected_rms(self) -> float:
        """The RMS pixel error this table allows at most (every coefficient a full step off)."""
        return math.sqrt(float(np.mean(np.square(self.steps) + self.roundings)) / 12)

    @property
    def clip_margin(self) -> float:
        return math.ceil(CLIP_DEVIATIONS * self.expected_rms)

    def quality_text(self) -> str:
        return f"q{self.quality}" if self.quality is not None else f"q~{self.quality_estimate}"


def _grids(facts: list, placements: list) -> list[JpegGrid]:
    """The grid of each file, from its placement's origin and stride (the pairs store keeps no
    JPEG facts for a file turned off its input's grid: its blocks would be turned too)."""
    placements = placements or [Placement()] * len(facts)
    return [JpegGrid(np.asarray(f["luma_table"], dtype=np.float64).reshape(8, 8), p.origin[0], p.origin[1], f.get("quality"),
                     f["quality_estimate"], ROUNDINGS if f["components"] == 1 else COLOUR_ROUNDINGS, *p.stride)
            for f, p in zip(facts, placements)]


def _all_jpeg(pairs) -> bool:
    """Every output of ``pairs`` (:class:`img2kernel.fit.pairs.Pairs`) is an 8-bit JPEG file."""
    facts = pairs.output_jpeg
    return pairs.output_storage == "uint8" and bool(facts) and all(f is not None for f in facts)


def grids_of(pairs) -> list[JpegGrid] | None:
    """Each output's grid when every output of ``pairs`` is the luma plane of an 8-bit JPEG: gray
    files, or :func:`luma_pairs` of colour ones; else None."""
    if pairs.c_out != 1 or not _all_jpeg(pairs):
        return None
    return _grids(pairs.output_jpeg, pairs.placements)


def luma_pairs(pairs):
    """RGB-to-RGB ``pairs`` whose outputs are all colour JPEGs -> the same inputs with each output's
    JFIF luma (float, NaN where unknown or where a channel is within the grid's clip margin of 0
    or 255: there the decoder clamped, or the tool clipped); else None."""
    if not (pairs.c_in == pairs.c_out == 3 and _all_jpeg(pairs) and all(f["components"] == 3 for f in pairs.output_jpeg)):
        return None
    outputs = []
    for y, grid in zip(pairs.outputs, _grids(pairs.output_jpeg, pairs.placements)):
        y = np.asarray(y, dtype=np.float64)
        luma = y @ JFIF_LUMA
        filled = np.nan_to_num(y, nan=0.0)  # unknown pixels: NaN luma anyway
        low, high = filled.min(axis=2), filled.max(axis=2)
        luma[~((low > grid.clip_margin) & (high < 255 - grid.clip_margin))] = np.nan
        outputs.append(luma[..., None])
    return type(pairs)(pairs.keys, pairs.inputs, outputs, pairs.splits, pairs.input_storage, "uint8",
                       pairs.output_jpeg, pairs.placements)


def gray_of(luma):
    """:func:`luma_pairs` with each input's JFIF luma in place of its RGB (float64): a tool that
    applies one kernel to every channel maps the input's luma to the output's with it."""
    inputs = [(np.asarray(x, dtype=np.float64) @ JFIF_LUMA)[..., None] for x in luma.inputs]
    return type(luma)(luma.keys, inputs, luma.outputs, luma.splits, "float64", "uint8", luma.output_jpeg, luma.placements)


def describe(grids: list[JpegGrid], plane: str = "luma") -> dict:
    """The compression as the fit's evidence records it."""
    qualities = sorted({g.quality_text() for g in grids})
    return {"kind": "jpeg", "quality": ", ".join(qualities), "plane": plane,
            "expected_error_rms": max(g.expected_rms for g in grids), "clip_margin": max(g.clip_margin for g in grids)}


def usable_blocks(sample: FitSample, grid: JpegGrid, halo: int) -> np.ndarray:
    """(rows, cols) bool over the file's whole blocks: every pixel usable, at least ``halo`` inside
    the image, none within the grid's clip margin of 0 or 255."""
    use = interior(sample.use, halo)
    height, width = use.shape
    rows = -(-(height - grid.row) // grid.row_step) // 8  # whole blocks of the file's pixels
    cols = -(-(width - grid.col) // grid.col_step) // 8
    if rows <= 0 or cols <= 0:
        return np.zeros((0, 0), dtype=bool)
    area = grid.area(rows, cols)
    values, margin = sample.y[area][..., 0], grid.clip_margin
    bad = ~use[area] | (values <= margin) | (values >= 255 - margin)  # NaN (unknown) is not usable
    return ~bad.reshape(rows, 8, cols, 8).any(axis=3).any(axis=1)  # the contiguous axis first: fast


def dct_windows(band: np.ndarray, col: int, blocks: np.ndarray, ksize: int, row_step: int = 1, col_step: int = 1) -> np.ndarray:
    """(F, 8 * n * 8) DCT coefficients of every window feature over the ``blocks`` of one block
    row, in :func:`band_rows` order.

    Feature (c, dy, dx), as :func:`img2kernel.fit.lstsq.window_columns`, of block j's pixel (r, x) is
    ``band[sr r + dy, col - K//2 + sc (8 j + x) + dx, c]`` (``sr``, ``sc``: the steps; 1 unless
    the file is a resize): for each (c, dy) the eight band rows are
    transformed once (the DCT over r), and every dx and block are then a strided view of that,
    transformed over x straight into place; no window is copied before its transform.
    """
    channels = band.shape[2]
    first = int(blocks[0])
    count = int(blocks[-1]) - first + 1  # the blocks from the first usable to the last are transformed
    start = col - ksize // 2 + 8 * col_step * first  # the first one's first window column, inside the band
    out = np.empty((channels, ksize, ksize, 8, len(blocks), 8))
    breaks = list(np.flatnonzero(np.diff(blocks) > 1) + 1)
    runs = list(zip([0] + breaks, breaks + [len(blocks)]))  # consecutive blocks
    for c in range(channels):
        for dy in range(ksize):
            rows = DCT @ band[dy : dy + 8 * row_step : row_step, start:, c]  # (8u, columns)
            step = rows.strides[1]
            # every index stays inside: a usable block's pixels are at least K // 2 inside the image
            view = as_strided(rows, shape=(ksize, 8, count, 8),
                              strides=(step, rows.strides[0], 8 * col_step * step, col_step * step))
            for a, b in runs:
                at = int(blocks[a]) - first
                np.matmul(view[:, :, at : at + b - a], DCT.T, out=out[c, dy, :, :, a:b])  # (dx, u, block, v)
    return out.reshape(channels * ksize * ksize, -1)


def band_order(per_coefficient: np.ndarray, blocks: int) -> np.ndarray:
    """(8, 8) values, one per coefficient of a block -> (8 * blocks * 8,) for ``blocks`` blocks in
    :func:`band_rows` order."""
    return np.broadcast_to(per_coefficient[:, None, :], (8, blocks, 8)).reshape(-1)


def to_band_order(coefficients: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """(n, 8, 8) coefficients of the ``ok`` blocks (row-major, :func:`file_blocks`) -> (n * 64,) in
    :func:`band_rows` order."""
    counts = ok.sum(axis=1)
    rows = np.split(coefficients, np.cumsum(counts[counts > 0])[:-1])
    return np.concatenate([row.transpose(1, 0, 2).reshape(-1) for row in rows])


def band_rows(sample: FitSample, grid: JpegGrid, ok: np.ndarray, ksize: int, x_offset, y_offset):
    """Per block row of the grid holding usable blocks: (features (F, n*64), targets (n*64, C_out),
    steps (n*64,)) in the DCT domain, not weighted; feature (c, dy, dx) as :func:`img2kernel.fit.lstsq.window_columns`,
    coefficients in (u, block, v) order (the order the features are transformed in)."""
    h = ksize // 2
    for i in np.flatnonzero(ok.any(axis=1)):
        sr, sc = grid.row_step, grid.col_step
        r0 = grid.row + 8 * sr * i
        blocks = np.flatnonzero(ok[i])
        band = np.asarray(sample.x[r0 - h : r0 + 8 * sr - sr + 1 + h], dtype=np.float64) - x_offset
        first, last = grid.col + 8 * sc * int(blocks[0]), grid.col + 8 * sc * (int(blocks[-1]) + 1)
        target = np.asarray(sample.y[r0 : r0 + 8 * sr : sr, first:last:sc], dtype=np.float64) - y_offset
        target = np.moveaxis(target.reshape(8, -1, 8, target.shape[2])[:, blocks - blocks[0]], 3, 0)  # (C, rows, block, columns)
        coefficients = DCT @ (target @ DCT.T).reshape(target.shape[0], 8, -1)  # (C, u, block * v)
        yield dct_windows(band, grid.col, blocks, ksize, sr, sc), coefficients.reshape(target.shape[0], -1).T, band_order(
            grid.steps, len(blocks))


DC = np.zeros((8, 8))
DC[0, 0] = 8.0  # the DCT of a constant 1 over a block


def constant_rows(blocks: int) -> np.ndarray:
    """The DCT of a constant 1 over ``blocks`` blocks, in :func:`band_rows` order."""
    return band_order(DC, blocks)


def jpeg_normal_equations(samples: list[FitSample], grids: list[JpegGrid], ksize: int, *, input_storage: str = "uint8",
                          cross_channel: bool = True) -> NormalEquations:
    """The weighted normal equations of a ``ksize`` affine kernel over the files' usable blocks
    (the module doc), as :func:`img2kernel.fit.lstsq.normal_equations` returns them for pixels."""
    if ksize < 1 or ksize % 2 == 0:
        raise ValueError(f"ksize must be odd and positive, got {ksize}")
    c_in, c_out = samples[0].x.shape[2], samples[0].y.shape[2]
    x_offset, y_offset = centring(samples, input_storage == "uint8")
    f = c_in * ksize * ksize
    taps = ksize * ksize
    groups = [slice(0, f)] if cross_channel or c_in == 1 else [slice(c * taps, (c + 1) * taps) for c in range(c_in)]
    xx, x1, xy = np.zeros((f, f)), np.zeros(f), np.zeros((f, c_out))
    y1, yy, ones, rows, eligible = np.zeros(c_out), np.zeros(c_out), 0.0, 0, 0
    for sample, grid in zip(samples, grids):
        ok = usable_blocks(sample, grid, ksize // 2)
        eligible += int(interior(sample.use, ksize // 2).sum())
        for features, target, steps in band_rows(sample, grid, ok, ksize, x_offset, y_offset):
            weight = band_order(grid.scale, len(steps) // 64)
            features *= weight
            target *= weight[:, None]
            constant = constant_rows(len(steps) // 64) * weight
            for g in groups:
                xx[g, g] += features[g] @ features[g].T
            x1 += features @ constant
            xy += features @ target
            y1 += constant @ target
            yy += np.square(target).sum(axis=0)
            ones += float(constant @ constant)
            rows += len(steps)
    return NormalEquations(ksize, c_in, c_out, xx, x1, xy, y1, yy, rows, eligible, x_offset, y_offset, False,
                           cross_channel or c_in == 1, ones)


def file_blocks(values: np.ndarray, grid: JpegGrid, ok: np.ndarray) -> np.ndarray:
    """(H, W, C) values in the output's frame -> (C, n, 8, 8) DCT coefficients of the ``ok`` blocks
    (:func:`usable_blocks`) of the file's grid."""
    rows, cols = ok.shape
    area = values[grid.area(rows, cols)]
    blocks = area.reshape(rows, 8, cols, 8, -1).transpose(4, 0, 2, 1, 3)[:, ok]  # (C, n, 8 rows, 8 columns)
    return DCT @ blocks @ DCT.T


def residual_coefficients(model, x: np.ndarray, y: np.ndarray, grid: JpegGrid, ok: np.ndarray) -> np.ndarray:
    """(C, n, 8, 8) DCT coefficients of (prediction - output) over the ``ok`` blocks (:func:`file_blocks`),
    from one whole-image prediction (defined ``model.halo`` inside, where every usable block is)."""
    h = model.halo
    difference = np.zeros(y.shape)
    inner = (slice(h, y.shape[0] - h), slice(h, y.shape[1] - h))
    difference[inner] = model.predict_valid(np.asarray(x, dtype=np.float64), output="float",
                                            at=Location(h, h, *y.shape[:2])).reshape(difference[inner].shape) - y[inner]
    return file_blocks(difference, grid, ok)


def half_widths(steps: np.ndarray) -> np.ndarray:
    """Half the quantization intervals of coefficients of these ``steps``, narrowed by INTERVAL_SLACK."""
    return np.maximum(steps / 2 - INTERVAL_SLACK, 0.0)


def jpeg_residual(model, pairs, grids: list[JpegGrid], split: str | None, halo: int) -> float:
    """RMS of the weighted DCT residual (prediction - output) over ``split``'s usable blocks at
    least ``halo`` inside: the same units and floor as a lossless file's pixel RMS."""
    total, count = 0.0, 0
    for index, grid in enumerate(grids):
        x, y = pairs.inputs[index], pairs.outputs[index]
        ok = usable_blocks(FitSample(x, y, pairs.usable(index, split)), grid, halo)
        if not ok.any():
            continue
        coefficients = residual_coefficients(model, x, y, grid, ok) * grid.scale
        total += float(np.sum(np.square(coefficients)))
        count += coefficients.size
    return math.sqrt(total / count) if count else math.inf


def interval_margins(kernel: np.ndarray, bias: np.ndarray, samples: list[FitSample], grids: list[JpegGrid],
                     blocks_ok: list[np.ndarray]) -> np.ndarray:
    """(rows,) how far inside its quantization interval (narrowed by INTERVAL_SLACK) the affine
    kernel's predicted coefficient lies, for every coefficient of the ``blocks_ok`` blocks in
    :func:`band_rows` order; negative outside. From whole-image predictions: no features."""
    model = AffineKernel(kernel, bias)
    margins = [to_band_order(half_widths(grid.steps) - np.abs(residual_coefficients(model, sample.x, sample.y, grid, ok)[0]), ok)
               for sample, grid, ok in zip(samples, grids, blocks_ok) if ok.any()]
    return np.concatenate(margins) if margins else np.zeros(0)


def refine_in_intervals(kernel: np.ndarray, bias: np.ndarray, samples: list[FitSample], grids: list[JpegGrid],
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """The kernel whose predicted coefficients lie nearest their quantization intervals, from the
    least-squares one (the module doc).

    Only coefficients within WORKING_MARGIN of leaving their interval can move the solution
    (a coefficient well inside has no gradient), so the Newton steps run on those rows alone
    (a seeded subset when they exceed REFINE_BUDGET); every coefficient is then checked again
    from whole-image predictions, and the rows that came within the margin are added until
    none outside was left out.

    Args:
        kernel: (1, C_in, K, K), bias: (1,), the weighted least-squares solution.

    Returns:
        (kernel, bias, {"newton_steps", "blocks", "rows_held", "outside_before", "outside_after"}),
        the last two the RMS distance of every coefficient to its interval (levels).
    """
    ksize = kernel.shape[-1]
    c_in = kernel.shape[1]
    f = c_in * ksize * ksize
    x_offset, y_offset = np.full(c_in, 128.0), np.full(1, 128.0)
    blocks_ok = [usable_blocks(s, g, ksize // 2) for s, g in zip(samples, grids)]
    margins = interval_margins(kernel, bias, samples, grids, blocks_ok)
    if not len(margins):
        return kernel, bias, {"newton_steps": 0, "blocks": 0}
    outside_before = math.sqrt(float(np.mean(np.square(np.minimum(margins, 0.0)))))
    held = margins < WORKING_MARGIN
    rng = np.random.default_rng(seed)
    theta = np.append(kernel.reshape(-1), bias[0] - y_offset[0] + x_offset[0] * kernel.sum())
    steps = 0
    for _ in range(WORKING_ROUNDS):
        rows = held & (rng.random(held.shape) < min(1.0, REFINE_BUDGET / max(int(held.sum()) * (f + 1), 1)))
        design, low, high = _held_rows(samples, grids, blocks_ok, rows, ksize, x_offset, y_offset)
        theta, taken = _newton_in_intervals(theta, design, low, high)
        steps += taken
        kernel = theta[:f].reshape(kernel.shape)
        bias = np.array([theta[f] + y_offset[0] - x_offset[0] * kernel.sum()])
        margins = interval_margins(kernel, bias, samples, grids, blocks_ok)
        if not np.any((margins < 0) & ~rows) or rows.sum() < held.sum():  # a subset stands for the rest
            break
        held = held | (margins < WORKING_MARGIN)
    outside_after = math.sqrt(float(np.mean(np.square(np.minimum(margins, 0.0)))))
    return kernel, bias, {"newton_steps": steps, "blocks": len(margins) // 64, "rows_held": int(rows.sum()),
                          "outside_before": outside_before, "outside_after": outside_after}


def _held_rows(samples, grids, blocks_ok, rows: np.ndarray, ksize: int, x_offset, y_offset):
    """The ``rows`` (bool over every coefficient, :func:`band_rows` order): their design
    (features + constant, rows), feature-major as band_rows makes them, and interval bounds."""
    f = len(x_offset) * ksize * ksize
    count = int(rows.sum())
    design, target, half = np.empty((f + 1, count)), np.empty(count), np.empty(count)
    at = seen = 0
    for sample, grid, ok in zip(samples, grids, blocks_ok):
        for features, band_target, steps in band_rows(sample, grid, ok, ksize, x_offset, y_offset):
            take = rows[seen : seen + len(steps)]
            seen += len(steps)
            end = at + int(take.sum())
            design[:f, at:end], design[f, at:end] = features[:, take], constant_rows(len(steps) // 64)[take]
            target[at:end], half[at:end] = band_target[take, 0], half_widths(steps[take])
            at = end
    return design, target - half, target + half


def _newton_in_intervals(theta: np.ndarray, design: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, int]:
    """Damped Gauss-Newton on the squared distance of ``theta @ design`` to [low, high]."""
    gram = design @ design.T
    steps = 0
    for steps in range(1, NEWTON_STEPS + 1):
        prediction = theta @ design
        nearest = np.clip(prediction, low, high)
        outside = prediction != nearest
        active = design[:, outside]
        # The active rows' Gauss-Newton step, damped by a trace of every held row so that it is
        # defined when few coefficients leave their intervals.
        step = solve_normal(active @ active.T + 1e-4 * gram, active @ (prediction[outside] - nearest[outside]))
        theta = theta - step
        if np.max(np.abs(step)) < 1e-9 * max(1.0, float(np.max(np.abs(theta)))):
            break
    return theta, steps
