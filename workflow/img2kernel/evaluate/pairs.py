"""Evaluation of a ``pairs`` filter on its held-out pairs: what the kernel is, and the evidence.

The prediction is the model's own (:meth:`img2kernel.models.Model.predict`) with the border
rule the fit found and the output file's rounding and clipping, so the figures compare
what the model writes with what the tool wrote, pixel for pixel.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from img2kernel import borders
from img2kernel.colour import space_named
from img2kernel.fit.ladder import LINEAR, ladder_fields, ladder_sentence
from img2kernel.fit.pairs import load_pairs
from img2kernel.evaluate.identify import identify
from img2kernel.evaluate.metrics import image_metrics
from img2kernel.evaluate.record import Evaluation
from img2kernel.models import AffineKernel, Model, load_model
from img2kernel.models.base import stored_as
from img2kernel.thresholds import LINEAR_FACTOR, STORAGE_RANGE, WIDENED_8BIT_STEP
from img2kernel.sources.geometry import Placement
from img2kernel.sources.pairs import SPLIT_CODES


def catalogue_of(specs: dict) -> dict[str, np.ndarray]:
    """The kernels of the user's own filters, by name, for identification."""
    from img2kernel.sources.filters import FilterSpecError, build_filter

    kernels = {}
    for name, spec in specs.items():
        try:
            filt = build_filter(spec)
        except FilterSpecError:
            continue
        if filt.linear:
            kernels[f"{name} (your filter)"] = filt.kernels[0]
    return kernels


def heldout_metrics(model: Model, border: str, x: np.ndarray, y: np.ndarray, use: np.ndarray, storage: str, whole: bool) -> dict:
    """Scores over the used pixels (:func:`image_metrics`), SSIM on a whole held-out image only."""
    from img2kernel.apply import apply_tiled

    # Tile by tile into an array of the output's own type (a rounded 8-bit model's values are
    # 8-bit integers), so a large image costs about its own size again, not float64 copies.
    dtype = np.dtype(stored_as(model.output)) if stored_as(model.output) in STORAGE_RANGE else np.float64
    prediction = np.empty(y.shape[:2] + ((model.c_out,) if model.c_out > 1 else ()), dtype=dtype)
    apply_tiled(x, model, border if border in borders.RULES else borders.DEFAULT, workers=1, out=prediction)
    prediction = prediction.reshape(y.shape)
    low, high = STORAGE_RANGE.get(storage, (float(np.nanmin(y)), float(np.nanmax(y))))
    metrics = image_metrics(prediction, y, (high - low) or 1.0, mask=use, ssim=whole and min(y.shape[:2]) >= 7)
    return metrics, prediction


def heldout_scores(model: Model, border: str, pairs, split: str, whole: bool, max_images: int | None = None):
    """(index, metrics, prediction) of each pair with usable pixels in ``split``, at most ``max_images``.

    Clipped pixels count in the metrics: the model writes them as the tool's file does. A resize
    model is scored on the outputs' own grid (:meth:`img2kernel.fit.pairs.Pairs.on_own_grid`).
    """
    pairs = pairs.on_own_grid() if model.resamples else pairs
    scored = 0
    for index in range(len(pairs.keys)):
        if not pairs.usable(index, split).any():
            continue
        if max_images is not None and scored >= max_images:
            return
        metrics, prediction = heldout_metrics(model, border, pairs.inputs[index], pairs.outputs[index],
                                              pairs.known(index, split), pairs.output_storage, whole)
        scored += 1
        yield index, metrics, prediction


def verdict(info: dict, identification: dict) -> str:
    floor, residual = info["noise_floor"], info["residual_rms"]
    compression = info.get("compression") or {}
    within = f", within JPEG {compression['quality']} compression" if compression.get("kind") == "jpeg" else ""
    within += precision_words(info)
    if info["linear"]:
        return f"linear{within}: {identification['text']}"
    units = " (DCT coefficients weighted by the file's quantization steps)" if within else ""
    text = (f"not a linear filter{within}: the best {info['ksize']}x{info['ksize']} kernel leaves {residual:.3g} RMS{units} "
            f"({residual / floor:.1f}x the noise floor of {floor:.3g}; linear means at most {LINEAR_FACTOR:g}x)")
    return text + ladder_sentence(info.get("ladder") or [], info.get("model", LINEAR))


def compression_note(info: dict) -> str | None:
    """What the fit did about the output files' compression, in a sentence; None when it modelled none."""
    compression = info.get("compression") or {}
    if compression.get("kind") == "jpeg-pixels":
        why = ("its channels do not enter as the luma weights times one kernel (the tool treats them differently or mixes them)" if compression["luma_linear"]
               else "the files' luma is not one kernel of the inputs' luma")
        return (f"the outputs are colour JPEG {compression['quality']} files and {why}: fitted on their decoded "
                f"pixels, against the 8-bit floor, which the compression alone exceeds (a tool that filters its "
                f"channels differently or mixes them is not modelled through a colour JPEG)")
    if compression.get("kind") != "jpeg":
        return None
    refinement = compression.get("refinement") or {}
    held = f", then held to their quantization intervals ({refinement['newton_steps']} Newton steps)" if refinement.get("newton_steps") else ""
    plane = " (colour: their luma, which the same kernel on each channel maps from the inputs' luma)" if compression["plane"] != "luma" else ""
    return (f"the outputs are JPEG {compression['quality']} files{plane}: fitted on their 8x8 blocks' DCT coefficients, each "
            f"weighted by its quantization step{held}, so residuals are in units of one 8-bit rounding; blocks with a "
            f"pixel within {compression['clip_margin']:g} levels of 0 or 255 left out; the compression alone moves the "
            f"tool's pixels by up to about {compression['expected_error_rms']:.2g} RMS, so few pixels are identical")


def precision_words(info: dict) -> str:
    """What the tool's arithmetic went through besides the output's storage, for the verdict."""
    precision = info.get("precision") or {}
    inside = precision.get("intermediate")
    words = ""
    if inside:
        words += (f" up to an intermediate 8-bit rounding (the tool filters in 8-bit {inside['space']}, rounding on "
                  "the way in and back)" if inside["rounds_back"] else
                  f" up to an intermediate 8-bit rounding (the tool rounds to 8-bit {inside['space']} first)")
    if precision.get("output_step") == WIDENED_8BIT_STEP:
        words += ", 8-bit values stored in a 16-bit file (x257)"
    return words


def precision_note(info: dict) -> str | None:
    """The evidence for a rounding inside the tool, in a sentence; None when there is none."""
    inside = (info.get("precision") or {}).get("intermediate")
    if not inside:
        return None
    return (f"that rounding, computed from the fitted kernel, accounts for {inside['explained_rms']:.3g} of the "
            f"{info['residual_rms']:.3g} RMS residual (weights " + ", ".join(f"{w:.2f}" for w in inside["weights"]) +
            f"); what is left, {inside['remaining_rms']:.3g}, is the output's own rounding; the model applies the "
            "kernel without the intermediate rounding, so its pixels differ from the tool's by about that much")


def is_linear(info: dict) -> bool:
    """The fit's verdict is linear and the model written is its kernel (not a ladder rung)."""
    return bool(info["linear"]) and info.get("model", LINEAR) == LINEAR


def reproduction(model: Model, metadata: dict, info: dict, model_path) -> dict[str, str]:
    """{library: code} reproducing a linear verdict's tool from its model file
    (:mod:`img2kernel.evaluate.reproduce`); {} for any other verdict."""
    from img2kernel.evaluate.reproduce import snippets

    if not is_linear(info):
        return {}
    return snippets(model, metadata.get("border", borders.DEFAULT), str(model_path), info["output_storage"],
                    Placement.from_dict((info.get("geometry") or {}).get("placement")))


def identification_of(model: Model, info: dict, catalogue: dict | None = None) -> dict:
    """What the chosen model is, for the pipeline's evaluation and ``img2kernel fit`` alike: a
    linear kernel named against the catalogue; a ladder model in its own words (a CNN is a fit,
    not an identification)."""
    if isinstance(model, AffineKernel):
        inside = (info.get("precision") or {}).get("intermediate")
        placement = Placement.from_dict((info.get("geometry") or {}).get("placement"))
        if inside and inside["rounds_back"]:  # the tool filtered in that space: say what it did there
            space = space_named(inside["space"])
            found = identify(AffineKernel(*space.kernel_within(model.kernel, model.bias)), catalogue_of(catalogue or {}),
                             info["noise_floor"], space.channel_names, placement)
            found = {**found, "text": f"in {space.name}: {found['text']}"}
        else:
            found = identify(model, catalogue_of(catalogue or {}), info["noise_floor"], placement=placement)
        if not info.get("linear", True):  # the closest kernel of a tool no kernel explains: a name would mislead
            return {**found, "identified": False, "text": f"no kernel explains it (the closest: {found['text']})"}
        return found
    geometry = (info.get("geometry") or {}).get("text")
    return {"text": model.describe() + (f", then {geometry}" if geometry else ""), "identified": model.identifies}


def evaluate_pairs(inputs_folder, outputs_folder, model: Model, metadata: dict, info_path, catalogue: dict | None = None,
                   max_images: int | None = None, examples: list | None = None, max_examples: int = 3,
                   model_path=None) -> Evaluation:
    """The evaluation record of one pairs filter (:class:`Evaluation`; its evidence: the fit's tables, see docs/pairs.md);
    ``model`` and ``metadata`` as :func:`img2kernel.models.load_model` reads the model file at ``model_path``
    (named in the reproduction snippets of a linear verdict)."""
    info = json.loads(Path(info_path).read_text())
    pairs, manifest = load_pairs(inputs_folder, outputs_folder)
    pairs = pairs.on_own_grid() if model.resamples else pairs  # a resize's outputs on their own grid, as it was fitted
    affine = isinstance(model, AffineKernel)
    identification = identification_of(model, info, catalogue)
    split = "test"
    if not any((codes == SPLIT_CODES["test"]).any() for codes in pairs.splits):
        split = "val" if any((codes == SPLIT_CODES["val"]).any() for codes in pairs.splits) else "train"
    per_image = []
    scores = heldout_scores(model, metadata.get("border", borders.DEFAULT), pairs, split,
                            whole=manifest["split_mode"] == "pairs", max_images=max_images)
    for index, metrics, prediction in scores:
        key = pairs.keys[index]
        per_image.append({"key": key, "shape": list(pairs.inputs[index].shape), **metrics})
        if examples is not None and len(examples) < max_examples:
            from img2kernel.report import plots  # matplotlib only where a figure is drawn

            target = pairs.outputs[index]
            placement = pairs.placements[index] if pairs.placements else Placement()
            if placement.off_grid:  # a resize: each output pixel shown over its cell, and the prediction alike
                shape = pairs.inputs[index].shape
                target, prediction = placement.nearest_sample(target, shape), placement.nearest_sample(prediction, shape)
            examples.append(plots.image_preview(key, pairs.inputs[index], target, prediction))

    reproduce = reproduction(model, metadata, info, model_path) if model_path is not None else {}
    return Evaluation(
        filter=info["filter"]["name"],
        kind="pairs",
        source="pairs",
        spec=info["filter"],
        ksize=info["ksize"],
        model_ksize=info["ksize"],
        n_kernels=model.c_out * model.c_in,
        parameters=model.n_parameters,
        **ladder_fields(model, info),
        linear=is_linear(info),
        verdict=verdict(info, identification),
        split=split,
        split_images=len(per_image),
        images=per_image,
        train_seconds=info["seconds"],
        device=info["device"],
        evidence={
            "channels": info["channels"],
            "border": info["border"],
            "identification": identification,
            "kernel": model.kernel.tolist() if affine else None,
            "bias": model.bias.tolist() if affine else None,
            "sizes": info["sizes"],
            "size_window": info.get("size_window"),
            "structures": info["structures"],
            "noise_floor": info["noise_floor"],
            "residual_rms": info["residual_rms"],
            "residual_in_floors": info["residual_in_floors"],
            "pairs": info["pairs"],
            "split_mode": info["split_mode"],
            "splits": info["splits"],
            "input_storage": info["input_storage"],
            "output_storage": info["output_storage"],
            "conversions": info["conversions"],
            "compression": info.get("compression"),
            "compression_note": compression_note(info),
            "precision_note": precision_note(info),
            "reproduce": reproduce,
            "rows": info["rows"],
            "eligible_rows": info["eligible_rows"],
            "saturated_pixels": info["saturated_pixels"],
            "fitted_kernels": info.get("fitted_kernels"),
        },
    )


def evaluate_pairs_and_plot(inputs_folder, outputs_folder, model_path, info_path, history_csv, result_json,
                            kernels_png, training_png, images_png, catalogue: dict | None = None,
                            max_images: int | None = None, shown_images: int = 3) -> dict:
    """The evaluate[filter] job of a pairs filter: metrics to JSON and its three plots."""
    from img2kernel.report import plots

    examples: list = []
    model, metadata = load_model(model_path)
    evaluation = evaluate_pairs(inputs_folder, outputs_folder, model, metadata, info_path, catalogue, max_images, examples,
                                shown_images, model_path)
    evaluation = evaluation.write(result_json)
    plots.evaluation_figures(evaluation, model, examples, kernels_png, training_png, images_png,
                             kernels=plots.pairs_kernels_figure if evaluation["kernel"] is not None else None,
                             training=lambda path: plots.sizes_figure(evaluation, path))
    return evaluation
