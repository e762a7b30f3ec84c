"""Evaluation of a trained filter on the test split: images, kernels, and the verdict."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from . import plots
from .filters import build_filter, magnitude, saturate_uint8
from .kernels import align, center, compare
from .store import Store

RECOVERED = 1e-4  # relative max-abs kernel error the product promises for linear filters
APPROXIMATE = 1e-2
NONLINEAR_RESIDUAL = 1e-3  # best linear fit leaves more than 0.1% of the target unexplained


BORDERS = {"reflect": cv2.BORDER_REFLECT_101, "zeros": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE}


def predict(kernels: np.ndarray, image: np.ndarray, combine: str = "none", output: str = "float", border: str = "reflect") -> np.ndarray:
    """Apply learned (n, K, K) kernels to one whole (H, W) image, as the model does, in float64.

    The model's function (:class:`img2kernel.model.LearnableKernel`: correlation,
    ``magnitude`` combine without the eps that keeps its training gradient finite,
    ``uint8`` saturation, rounded like ``cv2.convertScaleAbs``) computed with
    ``cv2.filter2D`` in float64: the model's values in float64 (a test checks it), 7 to 14
    times faster, and no unfolded copy of the image (torch's float64 convolution held
    K*K of them: 39 GB for a 7x7 kernel on a 100-megapixel scan).
    ``border``: ``reflect`` (OpenCV's default, BORDER_REFLECT_101), ``zeros`` or ``replicate``.
    """
    if border not in BORDERS:
        raise ValueError(f"border must be one of {sorted(BORDERS)}, got {border!r}")
    image64 = np.asarray(image, dtype=np.float64)
    responses = [
        cv2.filter2D(image64, cv2.CV_64F, np.asarray(kernel, dtype=np.float64), borderType=BORDERS[border])
        for kernel in kernels
    ]
    out = magnitude(*responses, dtype=np.float64) if combine == "magnitude" else responses[0]
    return saturate_uint8(out) if output == "uint8" else out


# SSIM is computed on at most this central window of a larger image: skimage's SSIM holds
# about ten float64 copies of the image, 8 GB for a 100-megapixel scan.
SSIM_MAX_SIDE = 2048


def central_window(array: np.ndarray, side: int) -> np.ndarray:
    """The central at most ``side`` x ``side`` part of a 2-D array (a view)."""
    top, left = max(0, (array.shape[0] - side) // 2), max(0, (array.shape[1] - side) // 2)
    return array[top : top + side, left : left + side]


def image_metrics(prediction: np.ndarray, target: np.ndarray, ssim: bool = True) -> dict:
    """MSE and PSNR (scikit-image) over the whole image, with the target's own data range,
    and SSIM over its central SSIM_MAX_SIDE window (the whole image up to that size); NaN
    when ``ssim`` is False."""
    target = np.asarray(target, dtype=np.float64)
    data_range = float(np.ptp(target)) or 1.0
    mse = float(np.mean((prediction - target) ** 2))
    psnr = float(peak_signal_noise_ratio(target, prediction, data_range=data_range)) if mse > 0 else math.inf
    similarity = math.nan
    if ssim:
        window_target = central_window(target, SSIM_MAX_SIDE)
        window_prediction = central_window(np.asarray(prediction, dtype=np.float64), SSIM_MAX_SIDE)
        win = min(7, *(s if s % 2 else s - 1 for s in window_target.shape))
        if win >= 3:
            similarity = float(structural_similarity(window_target, window_prediction, data_range=data_range, win_size=win))
    return {"mse": mse, "psnr": psnr, "ssim": similarity}


def verdict(has_truth: bool, rel_error: float | None, linear_residual: float, combine: str, output: str) -> str:
    """One line a reader can act on."""
    nonlinear = linear_residual > NONLINEAR_RESIDUAL
    if not has_truth:
        if nonlinear:
            return f"not a linear filter: the best single kernel leaves {linear_residual:.1%} of the target unexplained"
        return "linear, no reference kernel to compare with"
    symmetry = " up to rotation of the pair" if combine == "magnitude" else " up to sign" if output == "uint8" else ""
    if rel_error <= RECOVERED:
        quality = f"recovered{symmetry}"
    elif rel_error <= APPROXIMATE:
        quality = f"approximate{symmetry} (error {rel_error:.1e})"
    else:
        quality = f"not recovered (error {rel_error:.1e})"
    if nonlinear:
        quality += "; not one linear kernel (" + ("two kernels and a magnitude" if combine == "magnitude" else "saturated output") + ")"
    return quality


def evaluate_filter(
    inputs_folder: str | Path,
    targets_folder: str | Path,
    kernels: np.ndarray,
    oracle: np.ndarray | None,
    info: dict,
    max_images: int | None = None,
    examples: list | None = None,
    max_examples: int = 3,
) -> dict:
    """Everything the report and tables show about one filter; see README for each field.

    ``examples``: if given, previews of the first ``max_examples`` test images are appended
    to it (:class:`img2kernel.plots.ImagePreview`), for the image plot, without predicting
    them twice and without keeping whole images.
    """
    spec = info["filter"]
    filt = build_filter(spec)
    inputs, targets = Store(inputs_folder), Store(targets_folder)
    keys = inputs.keys("test") or inputs.keys("val")
    split = "test" if inputs.keys("test") else "val"
    per_image = []
    for key in keys[:max_images]:
        image, target = inputs.array(key), targets.array(key)
        prediction = predict(kernels, image, filt.combine, filt.output)
        metrics = image_metrics(prediction, target)
        zeros = image_metrics(predict(kernels, image, filt.combine, filt.output, border="zeros"), target, ssim=False)
        per_image.append(
            {
                "key": key,
                "shape": list(image.shape),
                **metrics,
                "psnr_zeros_border": zeros["psnr"],
                "max_abs_error": float(np.max(np.abs(prediction - target))),
            }
        )
        if examples is not None and len(examples) < max_examples:
            examples.append(plots.image_preview(key, image, target, prediction))
    true = np.stack(filt.kernels) if filt.kernels is not None else None
    errors = compare(kernels, true, filt.combine, filt.output)
    oracle_errors = compare(oracle, true, filt.combine, "float") if (true is not None and oracle is not None) else None
    rel_error = errors["rel_max_abs_error"] if errors else None

    def mean(field):
        values = [m[field] for m in per_image if not math.isnan(m[field])]
        return float(np.mean(values)) if values else math.nan

    size = max(kernels.shape[-1], true.shape[-1]) if true is not None else kernels.shape[-1]
    return {
        "filter": spec["name"],
        "kind": spec["kind"],
        "spec": spec,
        "ksize": filt.ksize,
        "model_ksize": int(kernels.shape[-1]),
        "n_kernels": int(kernels.shape[0]),
        "parameters": int(kernels.size),
        "split": split,
        "split_images": len(keys),  # per_image holds the first max_images of them
        "images": per_image,
        "test_mse": mean("mse"),
        "test_psnr": mean("psnr"),
        "test_ssim": mean("ssim"),
        "test_psnr_zeros_border": mean("psnr_zeros_border"),
        "kernel_errors": errors,
        "oracle_errors": oracle_errors,
        "kernel_max_abs_error": errors["max_abs_error"] if errors else None,
        "kernel_rel_error": errors["rel_frobenius_error"] if errors else None,
        "kernel_rel_max_abs_error": rel_error,
        "oracle_max_abs_error": oracle_errors["max_abs_error"] if oracle_errors else None,
        "linear_residual": info["linear_residual"],
        "learned_residual": info["learned_val_residual"],
        "true_kernels": center(true, size).tolist() if true is not None else None,
        "learned_kernels": (align(center(kernels, size), center(true, size), filt.combine, filt.output) if true is not None else kernels).tolist(),
        "oracle_kernels": oracle.tolist() if oracle is not None else None,
        "train_seconds": info["seconds"],
        "steps": info["steps"],
        "stop_reason": info["stop_reason"],
        "device": info["device"],
        "verdict": verdict(true is not None, rel_error, info["linear_residual"], filt.combine, filt.output),
    }


def evaluate_and_plot(
    inputs_folder: str | Path,
    targets_folder: str | Path,
    model_path: str | Path,
    oracle_path: str | Path,
    info_path: str | Path,
    history_csv: str | Path,
    result_json: str | Path,
    kernels_png: str | Path,
    training_png: str | Path,
    images_png: str | Path,
    shown_images: int = 3,
    max_images: int | None = None,
) -> dict:
    """The evaluate[filter] job: metrics to JSON and its three plots."""
    import json

    from .files import load_kernels

    kernels, _ = load_kernels(model_path)
    oracle, _ = load_kernels(oracle_path)
    oracle = oracle if np.all(np.isfinite(oracle)) else None
    info = json.loads(Path(info_path).read_text())
    examples: list = []
    evaluation = evaluate_filter(
        inputs_folder, targets_folder, kernels, oracle, info, max_images=max_images, examples=examples,
        max_examples=shown_images,
    )
    Path(result_json).parent.mkdir(parents=True, exist_ok=True)
    Path(result_json).write_text(json.dumps(evaluation, indent=2))

    for path in (kernels_png, training_png, images_png):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    plots.kernels_figure(evaluation, kernels_png)
    plots.training_figure(history_csv, evaluation["filter"], training_png)
    plots.images_figure(examples, evaluation["filter"], images_png)
    return evaluation
