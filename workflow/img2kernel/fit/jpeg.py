"""Fitting through a JPEG file's compression (docs/design.md, "JPEG files").

A JPEG decoder returns, for each 8x8 block of the file's grid, the inverse DCT of the
stored coefficients times the file's quantization steps q, rounded. So the tool's own
output had, at each coefficient, a value within q/2 of the decoded pixels' coefficient:
comparing pixels treats every coefficient the compression zeroed as a true zero, and a
block where the tool clipped (its ringing moved off 0 and 255 by the compression) as
linear. Here the fit runs in the file's DCT domain instead:

- **rows** are the coefficients of whole blocks of the file's grid (a valid-mode output's
  grid starts at its margin), blocks with a pixel within ``clip_margin`` of the range left
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

DCT = dct(np.eye(8), norm="ortho", axis=0)  # DCT @ v is the codec's orthonormal DCT-II of v
ROUNDINGS = 2  # the tool's 8-bit rounding before encoding and the decoder's after, in units of 1/12
# A colour file's luma adds the RGB roundings of the tool and of the decoder (each 0.447 of one
# rounding's variance through JFIF_LUMA) and the encoder's rounding of Y.
COLOUR_ROUNDINGS = 3 + 2 * float(np.sum(np.square(JFIF_LUMA)))
CLIP_DEVIATIONS = 3.0  # blocks with a pixel this many compression-error RMS from 0 or 255 are left out
INTERVAL_SLACK = 0.5  # the intervals are narrowed by this (levels): the pixel roundings' part of the error
NEWTON_STEPS = 30
REFINE_BUDGET = 3e7  # rows x features held for the interval refinement (240 MB of float64)


@dataclass(frozen=True)
class JpegGrid:
    """One output file's 8x8 grid and quantization.

    Attributes:
        steps: (8, 8) quantization steps of its (luma) plane, natural order.
        row, col: where the file's pixel (0, 0) sits in the output array.
        quality, quality_estimate: the IJG quality of its table (None: not an IJG table), the nearest one.
    """

    steps: np.ndarray
    row: int
    col: int
    quality: int | None
    quality_estimate: int
    roundings: float = ROUNDINGS  # 8-bit roundings besides the quantization, in units of 1/12

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


def _grids(facts: list, margins: list) -> list[JpegGrid]:
    return [JpegGrid(np.asarray(f["luma_table"], dtype=np.float64).reshape(8, 8), m, m, f.get("quality"),
                     f["quality_estimate"], ROUNDINGS if f["components"] == 1 else COLOUR_ROUNDINGS)
            for f, m in zip(facts, margins or [0] * len(facts))]


def _all_jpeg(pairs) -> bool:
    """Every output of ``pairs`` (:class:`img2kernel.fit.pairs.Pairs`) is an 8-bit JPEG file."""
    facts = pairs.output_jpeg
    return pairs.output_storage == "uint8" and bool(facts) and all(f is not None for f in facts)


def grids_of(pairs) -> list[JpegGrid] | None:
    """Each output's grid when every output of ``pairs`` is the luma plane of an 8-bit JPEG: gray
    files, or :func:`luma_pairs` of colour ones; else None."""
    if pairs.c_out != 1 or not _all_jpeg(pairs):
        return None
    return _grids(pairs.output_jpeg, pairs.margins)


def luma_pairs(pairs):
    """RGB-to-RGB ``pairs`` whose outputs are all colour JPEGs -> the same inputs with each output's
    JFIF luma (float, NaN where unknown or where a channel is within the grid's clip margin of 0
    or 255: there the decoder clamped, or the tool clipped); else None."""
    if not (pairs.c_in == pairs.c_out == 3 and _all_jpeg(pairs) and all(f["components"] == 3 for f in pairs.output_jpeg)):
        return None
    outputs = []
    for y, grid in zip(pairs.outputs, _grids(pairs.output_jpeg, pairs.margins)):
        y = np.asarray(y, dtype=np.float64)
        luma = y @ JFIF_LUMA
        filled = np.nan_to_num(y, nan=0.0)  # unknown pixels: NaN luma anyway
        low, high = filled.min(axis=2), filled.max(axis=2)
        luma[~((low > grid.clip_margin) & (high < 255 - grid.clip_margin))] = np.nan
        outputs.append(luma[..., None])
    return type(pairs)(pairs.keys, pairs.inputs, outputs, pairs.splits, pairs.input_storage, "uint8",
                       pairs.output_jpeg, pairs.margins)


def gray_of(luma):
    """:func:`luma_pairs` with each input's JFIF luma in place of its RGB (float64): a tool that
    applies one kernel to every channel maps the input's luma to the output's with it."""
    inputs = [(np.asarray(x, dtype=np.float64) @ JFIF_LUMA)[..., None] for x in luma.inputs]
    return type(luma)(luma.keys, inputs, luma.outputs, luma.splits, "float64", "uint8", luma.output_jpeg, luma.margins)


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
    rows, cols = (height - grid.row) // 8, (width - grid.col) // 8
    if rows <= 0 or cols <= 0:
        return np.zeros((0, 0), dtype=bool)
    area = (slice(grid.row, grid.row + 8 * rows), slice(grid.col, grid.col + 8 * cols))
    values, margin = sample.y[area][..., 0], grid.clip_margin
    bad = ~use[area] | (values <= margin) | (values >= 255 - margin)  # NaN (unknown) is not usable
    return ~bad.reshape(rows, 8, cols, 8).any(axis=3).any(axis=1)  # the contiguous axis first: fast


def dct_blocks(values: np.ndarray) -> np.ndarray:
    """(..., 8, n, 8) pixel blocks (rows, block, columns) -> (..., n, 8, 8) DCT coefficients."""
    out = np.tensordot(values, DCT, axes=([-3], [1]))  # (..., n, 8c, 8u)
    out = np.tensordot(out, DCT, axes=([-2], [1]))  # (..., n, 8u, 8v)
    return out


def block_mask(ok_row: np.ndarray, grid: JpegGrid, width: int, halo: int) -> np.ndarray:
    """(8, width - 2 halo) bool: the pixels of one block row's usable blocks, in valid-mode columns."""
    mask = np.zeros((8, width - 2 * halo), dtype=bool)
    starts = grid.col + 8 * np.flatnonzero(ok_row) - halo
    mask[:, (starts[:, None] + np.arange(8)).ravel()] = True
    return mask


def dct_windows(band: np.ndarray, col: int, blocks: np.ndarray, ksize: int) -> np.ndarray:
    """(F, n*64) DCT coefficients of every window feature over the ``blocks`` of one block row.

    Feature (c, dy, dx), as :func:`img2kernel.fit.lstsq.window_columns`, of block j's pixel (r, x) is
    ``band[r + dy, col - K//2 + 8 j + x + dx, c]``: for each (c, dy) the eight band rows are
    transformed once (the DCT over r), and every dx and block are then a strided view of that,
    transformed over x; no window is copied before its transform.
    """
    channels = band.shape[2]
    first = int(blocks[0])
    count = int(blocks[-1]) - first + 1  # the blocks from the first usable to the last are transformed
    start = col - ksize // 2 + 8 * first  # the first one's first window column, inside the band
    out = np.empty((channels, ksize, ksize, len(blocks), 8, 8))
    for c in range(channels):
        for dy in range(ksize):
            rows = np.ascontiguousarray(DCT @ band[dy : dy + 8, start:, c])  # (8u, columns)
            step = rows.strides[1]
            view = as_strided(rows, shape=(ksize, 8, count, 8), strides=(step, rows.strides[0], 8 * step, step))
            coefficients = view @ DCT.T  # (dx, u, block, v)
            out[c, dy] = coefficients[:, :, blocks - first].transpose(0, 2, 1, 3)
    return out.reshape(channels * ksize * ksize, -1)


def band_rows(sample: FitSample, grid: JpegGrid, ok: np.ndarray, ksize: int, x_offset, y_offset):
    """Per block row of the grid holding usable blocks: (features (F, n*64), targets (n*64, C_out),
    steps (n*64,)) in the DCT domain, not weighted; feature (c, dy, dx) as :func:`img2kernel.fit.lstsq.window_columns`,
    coefficients in (block, u, v) order."""
    h = ksize // 2
    width = sample.y.shape[1]
    for i in np.flatnonzero(ok.any(axis=1)):
        r0 = grid.row + 8 * i
        blocks = np.flatnonzero(ok[i])
        mask = block_mask(ok[i], grid, width, h)
        band = np.asarray(sample.x[r0 - h : r0 + 8 + h], dtype=np.float64) - x_offset
        target = np.asarray(sample.y[r0 : r0 + 8, h : width - h][mask], dtype=np.float64) - y_offset
        target = np.moveaxis(target.reshape(8, len(blocks), 8, -1), 3, 0)
        steps = np.broadcast_to(grid.steps, (len(blocks), 8, 8)).reshape(-1)
        yield dct_windows(band, grid.col, blocks, ksize), dct_blocks(target).reshape(target.shape[0], -1).T, steps


def constant_rows(steps: np.ndarray) -> np.ndarray:
    """The DCT of a constant 1 over the blocks of ``steps``: 8 at each block's DC coefficient."""
    ones = np.zeros(steps.shape)
    ones[::64] = 8.0
    return ones


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
        scale = grid.scale.reshape(-1)
        for features, target, steps in band_rows(sample, grid, ok, ksize, x_offset, y_offset):
            weight = np.tile(scale, len(steps) // 64)
            features *= weight
            target *= weight[:, None]
            constant = constant_rows(steps) * weight
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


def jpeg_residual(model, pairs, grids: list[JpegGrid], split: str | None, halo: int) -> float:
    """RMS of the weighted DCT residual (prediction - output) over ``split``'s usable blocks at
    least ``halo`` inside: the same units and floor as a lossless file's pixel RMS."""
    total, count = 0.0, 0
    h = model.halo
    for index, grid in enumerate(grids):
        sample = FitSample(pairs.inputs[index], pairs.outputs[index], pairs.usable(index, split))
        ok = usable_blocks(sample, grid, halo)
        width = sample.y.shape[1]
        for i in np.flatnonzero(ok.any(axis=1)):
            r0 = grid.row + 8 * i
            prediction = model.predict_valid(np.asarray(sample.x[r0 - h : r0 + 8 + h], dtype=np.float64), output="float")
            mask = block_mask(ok[i], grid, width, h)
            blocks = int(ok[i].sum())
            difference = prediction.reshape(8, width - 2 * h, -1)[mask] - sample.y[r0 : r0 + 8, h : width - h][mask]
            coefficients = dct_blocks(np.moveaxis(difference.reshape(8, blocks, 8, -1), 3, 0)) * grid.scale
            total += float(np.sum(np.square(coefficients)))
            count += coefficients.size
    return math.sqrt(total / count) if count else math.inf


def refine_in_intervals(kernel: np.ndarray, bias: np.ndarray, samples: list[FitSample], grids: list[JpegGrid],
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """The kernel whose predicted coefficients lie nearest their quantization intervals, from the
    least-squares one (the module doc); a seeded subset of blocks when they exceed REFINE_BUDGET.

    Args:
        kernel: (1, C_in, K, K), bias: (1,), the weighted least-squares solution.

    Returns:
        (kernel, bias, {"newton_steps", "blocks", "outside_before", "outside_after"}), the last
        two the RMS distance of the coefficients to their intervals (levels).
    """
    ksize = kernel.shape[-1]
    c_in = kernel.shape[1]
    f = c_in * ksize * ksize
    x_offset, y_offset = np.full(c_in, 128.0), np.full(1, 128.0)
    blocks_ok = [usable_blocks(s, g, ksize // 2) for s, g in zip(samples, grids)]
    total = sum(int(ok.sum()) for ok in blocks_ok)
    keep = min(1.0, REFINE_BUDGET / max(total * 64 * (f + 1), 1))
    rng = np.random.default_rng(seed)
    if keep < 1.0:
        blocks_ok = [ok & (rng.random(ok.shape) < keep) for ok in blocks_ok]
    count = 64 * sum(int(ok.sum()) for ok in blocks_ok)
    if count == 0:
        return kernel, bias, {"newton_steps": 0, "blocks": 0}
    # Rows written in place: (coefficient, feature + constant), their targets and half-widths.
    design, target, half = np.empty((count, f + 1)), np.empty(count), np.empty(count)
    at = 0
    for sample, grid, ok in zip(samples, grids, blocks_ok):
        for features, band_target, steps in band_rows(sample, grid, ok, ksize, x_offset, y_offset):
            end = at + len(steps)
            design[at:end, :f], design[at:end, f] = features.T, constant_rows(steps)
            target[at:end], half[at:end] = band_target[:, 0], np.maximum(steps / 2 - INTERVAL_SLACK, 0.0)
            at = end
    low, high = target - half, target + half
    theta = np.append(kernel.reshape(-1), bias[0] - y_offset[0] + x_offset[0] * kernel.sum())
    gram = design.T @ design
    outside_before = None
    steps = 0
    for steps in range(1, NEWTON_STEPS + 1):
        prediction = design @ theta
        nearest = np.clip(prediction, low, high)
        outside = prediction != nearest
        if outside_before is None:
            outside_before = math.sqrt(float(np.mean(np.square(prediction - nearest))))
        active = design[outside]
        # The active rows' Gauss-Newton step, damped by a trace of every row so that it is
        # defined when few coefficients leave their intervals.
        step = solve_normal(active.T @ active + 1e-4 * gram, active.T @ (prediction[outside] - nearest[outside]))
        theta = theta - step
        if np.max(np.abs(step)) < 1e-9 * max(1.0, float(np.max(np.abs(theta)))):
            break
    prediction = design @ theta
    outside_after = math.sqrt(float(np.mean(np.square(prediction - np.clip(prediction, low, high)))))
    refined = theta[:f].reshape(kernel.shape)
    refined_bias = np.array([theta[f] + y_offset[0] - x_offset[0] * refined.sum()])
    return refined, refined_bias, {"newton_steps": steps, "blocks": len(target) // 64,
                                   "outside_before": outside_before, "outside_after": outside_after}
