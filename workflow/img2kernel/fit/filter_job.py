"""The train job of our own filters: gradient training of the learnable kernel from the store's
crops, the least-squares oracle of the same crops, the ladder when the filter is not one kernel,
and the files the job writes (docs/design.md, "Our filters: training and the oracle").
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from img2kernel.evaluate.kernels import compare
from img2kernel.evaluate.metrics import relative_residual
from img2kernel.fit.gradient import (Crops, TrainingError, warm_up, configure_torch, fit, refine_linear,
                                     resolve_device)
from img2kernel.fit.history import GRADIENT_STEP, write_history
from img2kernel.fit.ladder import LINEAR, ladder_for_filter, ladder_for_pairs, pairs_from_stores, single_rung
from img2kernel.fit.pairs import fit_pairs
from img2kernel.fit.learnable import LearnableKernel
from img2kernel.fit.oracle import least_squares_kernel, magnitude_pair
from img2kernel.fit.smallest import smallest_forms
from img2kernel.models import AffineKernel, Model
from img2kernel.pipeline.files import written_whole
from img2kernel.sources.filters import Filter, build_filter, model_ksize
from img2kernel.store.crops import MAPPED_BUDGET_MB, CropSampler, StoreCropSampler
from img2kernel.store.shards import Store
from img2kernel.thresholds import FLOAT_RELATIVE_FLOOR


@dataclass
class TrainingOutcome:
    """A trained filter: learned kernels, the least-squares oracle and the sidecar facts."""

    filter: Filter
    kernels: np.ndarray  # (n, K, K)
    oracle: np.ndarray | None  # (n, K, K)
    history: list[dict]
    info: dict = field(default_factory=dict)
    # The ladder's choice when the filter is not linear (docs/design.md, "The ladder"); None:
    # the trained kernels in the filter's own structure.
    chosen: Model | None = None


@dataclass
class TrainingData:
    """Crop samplers over the train and val splits of one filter's (input, target) pairs."""

    filter: Filter
    ksize: int
    train: CropSampler
    val: CropSampler
    train_images: int
    val_images: int
    whiten: bool


def prepare_data(
    inputs_folder: str | Path, targets_folder: str | Path, spec: dict, settings: dict, halo: int | None = None
) -> TrainingData:
    """Open the stores (checksums verified) and build crop samplers; ``halo`` defaults to K // 2.

    The samplers stream: crops are read shard by shard, so memory does not grow with the
    store (see :class:`img2kernel.store.shards.StoreCropSampler`).

    With whitening (see :meth:`Crops.from_arrays`), crops are sampled one pixel larger on
    every side, so the whitened target crops are exactly ``crop_size``.
    """
    filt = build_filter(spec)
    whiten = whitens(filt, settings)
    ksize = model_ksize(filt, settings)
    halo = ksize // 2 if halo is None else halo
    inputs, targets = Store(inputs_folder), Store(targets_folder)
    if not inputs.keys("train"):
        raise TrainingError(f"{inputs_folder}: no images in the train split")
    if not inputs.keys("val"):
        raise TrainingError(f"{inputs_folder}: no images in the val split; raise split.val or add images")
    seed = int(settings["seed"])
    try:
        size = settings["crop_size"] + (2 if whiten else 0)
        # The two samplers share the store's mapping budget (see StoreCropSampler).
        budget = MAPPED_BUDGET_MB / 2
        train = StoreCropSampler(inputs, targets, "train", size, halo, seed=seed, mapped_budget_mb=budget)
        val = StoreCropSampler(inputs, targets, "val", size, halo, seed=seed + 1, mapped_budget_mb=budget)
    except ValueError as err:
        raise TrainingError(f"{spec['name']}: {err}; lower train.crop_size") from None
    return TrainingData(filt, ksize, train, val, train.images, val.images, whiten)


def whitens(filt: Filter, settings: dict) -> bool:
    """Whitening is exact only for a linear filter (one kernel, no magnitude, no saturation).

    For a nonlinear filter (a median) it would change which kernel is the best fit:
    the learned kernel is then the least-squares fit of the raw pixels, as the oracle's is.
    """
    return bool(settings.get("whiten", True)) and filt.linear


def train_filter(
    inputs_folder: str | Path,
    targets_folder: str | Path,
    spec: dict,
    settings: dict,
    device: str = "auto",
    threads: int | None = None,
    progress: bool = False,
    probe: Callable[[int, float, LearnableKernel], bool] | None = None,
) -> TrainingOutcome:
    """Train one filter's model on the train split, stop on the val split; fit the oracle."""
    torch_device = resolve_device(device)
    configure_torch(torch_device, threads)
    dtype = torch.float64 if settings["dtype"] == "float64" else torch.float32
    data = prepare_data(inputs_folder, targets_folder, spec, settings)
    filt, ksize, train_sampler, val_sampler = data.filter, data.ksize, data.train, data.val
    seed = int(settings["seed"])
    torch.manual_seed(seed)
    warm_up(torch_device, dtype)
    started = time.perf_counter()  # training time: crop sampling and optimisation
    train_crops = Crops.draw(train_sampler, settings["crops"], torch_device, dtype, data.whiten)
    val_crops = Crops.draw(val_sampler, settings["val_crops"], torch_device, dtype, data.whiten)
    n_kernels = len(filt.kernels) if filt.kernels is not None else 1
    model = LearnableKernel(
        ksize, n_kernels, filt.combine, saturate=filt.output == "abs_uint8", seed=seed, dtype=dtype
    ).to(torch_device)
    true = filt.reference_kernels
    seconds = time.perf_counter() - started

    # The oracle sees the training crops drawn above (the only sample unless refresh_every > 0), in float64.
    # The best single kernel of those crops is the oracle of a one-kernel filter, and the
    # linear residual and the ladder's first rung of every filter.
    oracle_started = time.perf_counter()
    x, y = train_crops.raw_inputs, train_crops.raw_targets
    xv, yv = val_crops.raw_inputs, val_crops.raw_targets
    best_kernel = least_squares_kernel(x, y, ksize)
    oracle = magnitude_pair(x, y, ksize) if filt.combine == "magnitude" else best_kernel[None]
    oracle_val_residual = relative_residual(xv, yv, filt.model_of(oracle))
    oracle_seconds = time.perf_counter() - oracle_started

    started = time.perf_counter()
    result = fit(
        model,
        train_crops,
        val_crops,
        settings,
        true_kernels=true,
        filt=filt,
        resample=lambda: Crops.draw(train_sampler, settings["crops"], torch_device, dtype, data.whiten),
        probe=probe,
        progress=progress,
        label=spec["name"],
    )
    kernels, history, refine_rounds = result.kernels, result.history, 0
    if filt.linear and result.stop_reason == "converged":
        kernels, refine_rounds, rows = refine_linear(
            model, train_crops, val_crops, oracle_val_residual, settings, whiten=data.whiten,
            true_kernels=true, filt=filt, first_step=result.steps + 1, first_seconds=result.seconds,
            label=spec["name"],
        )
        history = history + rows
    seconds += time.perf_counter() - started
    info = {
        "filter": spec,
        "settings": settings,
        "ksize": ksize,
        "n_kernels": n_kernels,
        "combine": filt.combine,
        "output": filt.output,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "steps": len(history),
        "refine_rounds": refine_rounds,
        "seconds": seconds,
        "fit_seconds": result.seconds,
        "oracle_seconds": oracle_seconds,
        "device": str(torch_device) + (f" ({torch.cuda.get_device_name(torch_device)})" if torch_device.type == "cuda" else ""),
        "dtype": settings["dtype"],
        "threads": torch.get_num_threads(),
        "stop_reason": result.stop_reason,
        "recoveries": result.recoveries,
        "final_lr": result.lr,
        "final_train_loss": result.final_train_loss,
        "final_val_loss": result.final_val_loss,
        "train_images": data.train_images,
        "val_images": data.val_images,
        "crops": settings["crops"],
        "crop_size": settings["crop_size"],
        "whiten": data.whiten,
        "learned_val_residual": relative_residual(xv, yv, filt.model_of(kernels), output=None),
        # Best *linear* fit on held-out crops: large for a filter no kernel reproduces.
        "linear_residual": relative_residual(xv, yv, AffineKernel(best_kernel)),
        "oracle_val_residual": oracle_val_residual,
        "kernel_errors": compare(kernels, true, filt.combine, filt.output) if true is not None else None,
        "oracle_errors": compare(oracle, true, filt.combine, "float") if true is not None else None,
        "torch": torch.__version__,
    }
    chosen = None
    if filt.linear:
        rms = float(np.sqrt(np.mean(np.square(yv, dtype=np.float64))))
        floor = FLOAT_RELATIVE_FLOOR["float32"] * rms
        peak = float(np.ptp(yv)) or 1.0
        learned = filt.model_of(kernels)
        ladder = single_rung(LINEAR, learned, info["learned_val_residual"] * rms, floor, peak, seconds, origin="trained")
        ladder.smallest = smallest_forms(learned, lambda m: relative_residual(xv, yv, m, output=None) * rms, floor, peak)
        info.update(ladder.summary())
    elif filt.output == "jpeg":
        # JPEG targets are fitted through their compression, as a pairs filter's JPEG files are:
        # the same pairs fit (fit.jpeg) and, when it is not linear, the same ladder.
        pairs = pairs_from_stores(inputs_folder, targets_folder, output_storage="uint8", output_jpeg=filt.jpeg_facts())
        found = fit_pairs(pairs, ksize=ksize, seed=seed)
        ladder = ladder_for_pairs(pairs, found, seed)
        info.update(ladder.summary(), compression=found.compression)
        chosen = ladder.model
    else:
        # A `then` step is not in the trained model's structure: the ladder alone explains it.
        trained = filt.model_of(kernels) if filt.then is None else None
        ladder = ladder_for_filter(inputs_folder, targets_folder, trained, AffineKernel(best_kernel), seconds, seed=seed,
                                   output_storage="uint8" if filt.output == "abs_uint8" else "float32")
        info.update(ladder.summary())
        chosen = ladder.model
        if filt.output == "abs_uint8" and chosen.output == "float":  # the targets are rounded and clipped to 8 bits
            chosen = chosen.with_output("uint8")
    return TrainingOutcome(filt, kernels, oracle, history, info, chosen)


def save_outcome(outcome: TrainingOutcome, model_path: str | Path, info_path: str | Path, history_path: str | Path) -> None:
    """Write the model (safetensors), the JSON sidecar (with the least-squares oracle's kernels,
    ``oracle_kernels``, when there is one) and the training CSV, each written beside its path
    and moved into place when complete."""
    if not np.all(np.isfinite(outcome.kernels)):
        raise TrainingError(f"{outcome.filter.name}: refusing to write a non-finite kernel")
    metadata = {"filter": outcome.info["filter"], "border": outcome.filter.border, "units": "8-bit scale"}
    for path in (model_path, info_path, history_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    model = outcome.chosen if outcome.chosen is not None else outcome.filter.model_of(outcome.kernels)
    model.save(model_path, {**metadata, "ladder_model": outcome.info.get("model", LINEAR)})
    oracle = outcome.oracle if outcome.oracle is not None and np.all(np.isfinite(outcome.oracle)) else None
    with written_whole(info_path) as partial:
        partial.write_text(json.dumps({**outcome.info, "oracle_kernels": None if oracle is None else oracle.tolist()}, indent=2))
    write_history(outcome.history, GRADIENT_STEP, history_path, ksize=outcome.info["ksize"], parameters=int(np.size(outcome.kernels)))
