"""Evaluation of a trained filter on the test split: images, kernels, and the verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from img2kernel.report import plots
from img2kernel.sources.filters import build_filter
from img2kernel.fit.ladder import LINEAR, ladder_fields, ladder_sentence
from img2kernel.evaluate.kernels import align, center, compare
from img2kernel.evaluate.metrics import image_metrics
from img2kernel.evaluate.pairs import compression_note
from img2kernel.evaluate.record import Evaluation, mean_over
from img2kernel.models import Model
from img2kernel.models.base import KernelModel
from img2kernel.store.shards import Store
from img2kernel.thresholds import APPROXIMATE, NONLINEAR_RESIDUAL, RECOVERED



# Why a filter of one true kernel is still not one linear kernel of its target.
NOT_ONE_KERNEL = {"magnitude": "two kernels and a magnitude", "abs_uint8": "saturated output"}


def verdict(has_truth: bool, rel_error: float | None, linear_residual: float, combine: str, output: str,
            quality: int | None = None) -> str:
    """One line a reader can act on; ``quality``: a JPEG target's (``output: jpeg``), whose
    compression is not a nonlinearity (the kernel is fitted through it, fit.jpeg)."""
    nonlinear = linear_residual > NONLINEAR_RESIDUAL and output != "jpeg"
    if not has_truth:
        if nonlinear:
            return f"not a linear filter: the best single kernel leaves {linear_residual:.1%} of the target unexplained"
        return "linear, no reference kernel to compare with"
    symmetry = " up to rotation of the pair" if combine == "magnitude" else " up to sign" if output == "abs_uint8" else ""
    if rel_error <= RECOVERED:
        text = f"recovered{symmetry}"
    elif rel_error <= APPROXIMATE:
        text = f"approximate{symmetry} (error {rel_error:.1e})"
    else:
        text = f"not recovered (error {rel_error:.1e})"
    if output == "jpeg":
        text += f", within JPEG q{quality} compression"
    elif nonlinear:
        text += f"; not one linear kernel ({NOT_ONE_KERNEL['magnitude' if combine == 'magnitude' else output]})"
    return text


def evaluate_filter(
    inputs_folder: str | Path,
    targets_folder: str | Path,
    model: Model,
    oracle: Model | None,
    info: dict,
    max_images: int | None = None,
    examples: list | None = None,
    max_examples: int = 3,
) -> Evaluation:
    """The evaluation record of one of our filters (:class:`Evaluation`; its evidence: the kernels against the true ones).

    Predictions are the model's own (:meth:`Model.predict`, float64, OpenCV's default
    border, as the targets were made); the kernels are compared with the filter's true ones.

    ``examples``: if given, previews of the first ``max_examples`` test images are appended
    to it (:class:`img2kernel.report.plots.ImagePreview`), for the image plot, without predicting
    them twice and without keeping whole images.
    """
    spec = info["filter"]
    filt = build_filter(spec)
    # (n, K, K): our filters take one channel; a ladder model that is not a kernel has none.
    kernels = model.kernel[:, 0] if isinstance(model, KernelModel) else None
    oracle_kernels = oracle.kernel[:, 0] if oracle is not None else None
    inputs, targets = Store(inputs_folder), Store(targets_folder)
    keys = inputs.keys("test") or inputs.keys("val")
    split = "test" if inputs.keys("test") else "val"
    per_image = []
    for key in keys[:max_images]:
        image, target = inputs.array(key), targets.array(key)
        prediction = model.predict(image, filt.border)
        data_range = float(np.ptp(target)) or 1.0  # the target's own range: float targets have no file type
        metrics = image_metrics(prediction, target, data_range)
        zeros = image_metrics(model.predict(image, "zero"), target, data_range, ssim=False)
        per_image.append(
            {
                "key": key,
                "shape": list(image.shape),
                **metrics,
                "psnr_zeros_border": zeros["psnr"],
            }
        )
        if examples is not None and len(examples) < max_examples:
            examples.append(plots.image_preview(key, image, target, prediction))
    true = filt.reference_kernels
    errors = compare(kernels, true, filt.combine, filt.output) if kernels is not None else None
    oracle_errors = compare(oracle_kernels, true, filt.combine, "float") if (true is not None and oracle is not None) else None
    rel_error = errors["max_abs_rel"] if errors else None  # max-abs / largest true tap

    size = max(model.ksize, true.shape[-1]) if true is not None else model.ksize
    return Evaluation(
        filter=spec["name"],
        kind=spec["kind"],
        source="generated",
        spec=spec,
        ksize=filt.ksize,
        model_ksize=int(model.ksize),
        n_kernels=int(kernels.shape[0]) if kernels is not None else 0,
        # Our filters have no bias: a kernel model's weights are its taps.
        parameters=int(kernels.size) if kernels is not None else int(model.n_parameters),
        **ladder_fields(model, info, filt.expected_rung),
        linear=filt.linear,
        verdict=verdict(true is not None, rel_error, info["linear_residual"], filt.combine, filt.output, filt.quality)
        + ladder_sentence(info.get("ladder") or [], info.get("model", LINEAR), filt.expected_rung),
        split=split,
        split_images=len(keys),  # images holds the first max_images of them
        images=per_image,
        train_seconds=info["seconds"],
        device=info["device"],
        evidence={
            "test_psnr_zeros_border": mean_over(per_image, "psnr_zeros_border"),
            "kernel_errors": errors,
            "oracle_errors": oracle_errors,
            "kernel_max_abs_error": errors["max_abs_error"] if errors else None,
            "kernel_max_abs_rel": rel_error,
            "kernel_frobenius_rel": errors["frobenius_rel"] if errors else None,
            "oracle_max_abs_error": oracle_errors["max_abs_error"] if oracle_errors else None,
            "oracle_max_abs_rel": oracle_errors["max_abs_rel"] if oracle_errors else None,
            "linear_residual": info["linear_residual"],
            "learned_residual": info["learned_val_residual"],
            "true_kernels": center(true, size).tolist() if true is not None else None,
            "learned_kernels": None if kernels is None else (
                align(center(kernels, size), center(true, size), filt.combine, filt.output) if true is not None else kernels).tolist(),
            "oracle_kernels": oracle_kernels.tolist() if oracle is not None else None,
            "compression_note": compression_note(info),
            "steps": info["steps"],
            "refine_rounds": info.get("refine_rounds", 0),
            "stop_reason": info["stop_reason"],
        },
    )


def evaluate_and_plot(
    inputs_folder: str | Path,
    targets_folder: str | Path,
    model_path: str | Path,
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

    from img2kernel.models import load_model

    model, _ = load_model(model_path)
    info = json.loads(Path(info_path).read_text())
    oracle_kernels = info.get("oracle_kernels")
    oracle = build_filter(info["filter"]).model_of(np.asarray(oracle_kernels)) if oracle_kernels is not None else None
    examples: list = []
    evaluation = evaluate_filter(
        inputs_folder, targets_folder, model, oracle, info, max_images=max_images, examples=examples,
        max_examples=shown_images,
    )
    evaluation = evaluation.write(result_json)
    plots.evaluation_figures(evaluation, model, examples, kernels_png, training_png, images_png,
                             kernels=plots.kernels_figure if evaluation["learned_kernels"] is not None else None,
                             training=lambda path: plots.training_figure(history_csv, evaluation["filter"], path))
    return evaluation
