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

    Each block is (x, y, mask): y (h, w[, C_out]) outputs, x the inputs with a margin of at
    least the model's halo on every side (cropped to it here), mask (h, w) the pixels that
    count (None: all). ``output`` overrides the model's output step (``"float"``: before it).
    """
    sse, pixels, power = 0.0, 0, 0.0
    for x, y, mask in blocks:
        cut = (x.shape[0] - y.shape[0]) // 2 - model.halo
        if cut < 0:
            raise ValueError(f"a block with a {(x.shape[0] - y.shape[0]) // 2}-pixel margin is too small for a {model.ksize}x{model.ksize} model")
        block = x[cut : x.shape[0] - cut, cut : x.shape[1] - cut] if cut else x
        target = np.asarray(y, dtype=np.float64)
        diff = model.predict_valid(np.asarray(block, dtype=np.float64), output=output).reshape(target.shape) - target
        if mask is not None:
            diff, target = diff[mask], target[mask]
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
    SSIM_MAX_SIDE window when ``ssim`` and every target value is known, else NaN.
    """
    target = np.asarray(target, dtype=np.float64)
    prediction = np.asarray(prediction, dtype=np.float64).reshape(target.shape)
    diff = prediction - target
    if mask is not None:
        diff = diff[mask]
    pixels = diff.size
    mse = float(np.mean(np.square(diff))) if pixels else math.nan
    metrics = {
        "pixels": int(pixels),
        "mse": mse,
        "psnr": psnr_db(math.sqrt(mse), data_range) if pixels else math.nan,
        "identical_fraction": float(np.mean(diff == 0)) if pixels else math.nan,
        "max_abs_error": float(np.max(np.abs(diff))) if pixels else math.nan,
        "ssim": math.nan,
    }
    if ssim and np.all(np.isfinite(target)):
        from skimage.metrics import structural_similarity

        window_target, window_prediction = central_window(target, SSIM_MAX_SIDE), central_window(prediction, SSIM_MAX_SIDE)
        win = min(7, *(s if s % 2 else s - 1 for s in window_target.shape[:2]))
        if win >= 3:
            metrics["ssim"] = float(structural_similarity(window_target, window_prediction, data_range=data_range, win_size=win,
                                                          channel_axis=2 if target.ndim == 3 else None))
    return metrics
