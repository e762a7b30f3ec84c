"""The one set of metrics: a model's residual on held-out pixels, PSNR, SSIM.

Every score is the model's own prediction (:meth:`Model.predict_valid` on blocks that carry
their input margin, :meth:`Model.predict` on whole images), so the least-squares fit, the
ladder, gradient training and evaluation measure the same thing the same way. scikit-image
is imported only where SSIM is asked for: fitting stages load this module too.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

# SSIM is computed on at most this central window of a larger image: skimage's SSIM holds
# about ten float64 copies of the image, 8 GB for a 100-megapixel scan.
SSIM_MAX_SIDE = 2048
# Residuals are summed over row bands of about this many output pixels (a few MB of float64).
BAND_PIXELS = 1 << 18


def row_bands(height: int, width: int, pixels: int = BAND_PIXELS):
    """(row0, row1) of consecutive bands of about ``pixels`` pixels of an image ``width`` wide:
    what a large image is read in, so its float64 copies are a band's, not the image's."""
    rows = max(1, pixels // max(1, width))
    for r0 in range(0, height, rows):
        yield r0, min(r0 + rows, height)


def psnr_db(rms: float, peak: float) -> float:
    """PSNR of an RMS error against the output's peak range, in dB; inf for an exact fit."""
    if math.isnan(rms):
        return math.nan
    return math.inf if rms == 0 else 20 * math.log10(peak / rms)


def central_window(array: np.ndarray, side: int) -> np.ndarray:
    """The central at most ``side`` x ``side`` part of an (H, W[, C]) array (a view)."""
    height, width = array.shape[:2]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return array[top : top + side, left : left + side]


def residual_sums(model, blocks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
                  output: str | None = None) -> tuple[float, int, float]:
    """(sum of squared errors, pixels, sum of squared targets) of ``model`` over ``blocks``.

    Each block is (x, y, mask) or (x, y, mask, at): y (h, w[, C_out]) outputs, x the inputs
    with a margin of at least the model's halo on every side (cropped to it here), mask (h, w)
    the pixels that count (None: all), ``at`` where y lies in its image (a
    :class:`img2kernel.models.base.Location`; absent: y is a whole image). ``output``
    overrides the model's output step (``"float"``: before it).
    """
    from img2kernel.models.base import Location

    sse, pixels, power = 0.0, 0, 0.0
    for x, y, mask, *where in blocks:
        at = where[0] if where else Location.whole(*y.shape[:2])
        cut = (x.shape[0] - y.shape[0]) // 2 - model.halo
        if cut < 0:
            raise ValueError(f"a block with a {(x.shape[0] - y.shape[0]) // 2}-pixel margin is too small for a {model.ksize}x{model.ksize} model")
        block = x[cut : x.shape[0] - cut, cut : x.shape[1] - cut] if cut else x
        halo = model.halo
        for r0, r1 in row_bands(*y.shape[:2]):
            keep = None if mask is None else mask[r0:r1]
            if keep is not None and not keep.any():
                continue
            target = np.asarray(y[r0:r1], dtype=np.float64)
            inputs = np.asarray(block[r0 : r1 + 2 * halo], dtype=np.float64)
            diff = model.predict_valid(inputs, output=output, at=at.below(r0)).reshape(target.shape) - target
            if keep is not None:
                diff, target = diff[keep], target[keep]
            sse += float(np.sum(np.square(diff)))
            pixels += diff.size
            power += float(np.sum(np.square(target)))
    return sse, pixels, power


def heldout_rms(model, blocks, output: str | None = None) -> float:
    """RMS of (prediction - output) over the blocks' masked pixels, in output units; NaN when none."""
    sse, pixels, _ = residual_sums(model, blocks, output)
    return math.sqrt(sse / pixels) if pixels else math.nan


def relative_residual(inputs: np.ndarray, targets: np.ndarray, model, output: str | None = "float") -> float:
    """||model(inputs) - targets|| / ||targets|| over (N, S + K - 1, S + K - 1) crops and their
    (N, S, S) targets, in float64 (``output`` as for :func:`residual_sums`; default: before the step)."""
    if inputs.ndim != 3 or targets.ndim != 3 or inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"expected (N, S', S') inputs and (N, S, S) targets, got {inputs.shape} and {targets.shape}")
    if inputs.shape[1] - targets.shape[1] != model.ksize - 1 or inputs.shape[2] - targets.shape[2] != model.ksize - 1:
        raise ValueError(f"input crops {inputs.shape[1:]} must be the target crops {targets.shape[1:]} plus a halo of {model.ksize // 2}")
    sse, _, power = residual_sums(model, ((x, y, None) for x, y in zip(inputs, targets)), output)
    return math.sqrt(sse / power) if power > 0 else 0.0


def image_metrics(prediction: np.ndarray, target: np.ndarray, data_range: float, mask: np.ndarray | None = None,
                  ssim: bool = True) -> dict:
    """Scores of a whole-image prediction (H, W[, C]) against its target, in the target's units.

    MSE, PSNR (against ``data_range``), the share of identical pixels and the largest error
    over the ``mask``'s pixels (None: all); SSIM (scikit-image) over the central
    SSIM_MAX_SIDE window when ``ssim`` and every target value is known, else NaN. Summed over
    row bands: a band's float64 copies, not the image's.
    """
    height, width = target.shape[:2]
    sse, pixels, identical, largest, all_known = 0.0, 0, 0, 0.0, True
    for r0, r1 in row_bands(height, width):
        target_band = np.asarray(target[r0:r1], dtype=np.float64)
        diff = np.asarray(prediction[r0:r1], dtype=np.float64).reshape(target_band.shape) - target_band
        all_known = all_known and bool(np.all(np.isfinite(target_band)))
        if mask is not None:
            diff = diff[mask[r0:r1]]
        if diff.size:
            sse += float(np.sum(np.square(diff)))
            identical += int(np.count_nonzero(diff == 0))
            largest = max(largest, float(np.max(np.abs(diff))))
            pixels += diff.size
    mse = sse / pixels if pixels else math.nan
    metrics = {
        "pixels": int(pixels),
        "mse": mse,
        "psnr": psnr_db(math.sqrt(mse), data_range) if pixels else math.nan,
        "identical_fraction": identical / pixels if pixels else math.nan,
        "max_abs_error": largest if pixels else math.nan,
        "ssim": math.nan,
    }
    if ssim and all_known:
        from skimage.metrics import structural_similarity

        # float32: scikit-image computes SSIM in its inputs' precision, and 1e-7 of SSIM is not read.
        window_target = np.asarray(central_window(target, SSIM_MAX_SIDE), dtype=np.float32)
        window_prediction = np.asarray(central_window(prediction.reshape(target.shape), SSIM_MAX_SIDE), dtype=np.float32)
        win = min(7, *(s if s % 2 else s - 1 for s in window_target.shape[:2]))
        if win >= 3:
            metrics["ssim"] = float(structural_similarity(window_target, window_prediction, data_range=data_range, win_size=win,
                                                          channel_axis=2 if target.ndim == 3 else None))
    return metrics
