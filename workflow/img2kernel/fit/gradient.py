"""Gradient training: recover a filter's kernel(s) from (input, target) crops (the job that runs
it on a filter's store is :mod:`img2kernel.fit.filter_job`).

The default recipe, chosen by measurement (docs/answers.md, question 4):

- crops taken with a halo of K // 2 and a *valid* correlation, so no padding, and no
  border bias, enters the loss;
- one fixed sample of crops and L-BFGS with a strong-Wolfe line search (history 100):
  on an exactly linear problem it converges like a direct solver, in tens of steps;
- a loss normalised by the target power (relative MSE), so tolerances mean the same
  for a Gaussian blur (targets ~100) and a 7x7 Sobel (targets ~10^5);
- stop when the validation loss (relative MSE) improved by less than ``rel_tol`` since
  the last check AND no kernel tap moved by more than ``kernel_tol`` of the largest tap.
  A flat loss alone is no signal: the loss is flat long before the taps are right.

Divergence rule: a non-finite loss or kernel restores the last good kernel, halves the
learning rate and rebuilds the optimizer; after ``MAX_RECOVERIES`` it fails with a
clear error. A NaN kernel is never returned or written.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from img2kernel.sources.filters import Filter
from img2kernel.evaluate.kernels import compare
from img2kernel.fit.learnable import LearnableKernel
from img2kernel.models import AffineKernel
from img2kernel.evaluate.metrics import relative_residual
from img2kernel.fit.optim import lbfgs
from img2kernel.store.crops import CropSampler

MAX_RECOVERIES = 5
DEFAULT_LR = {"lbfgs": 1.0, "adam": 1e-2}


class TrainingError(RuntimeError):
    """Training cannot produce a trustworthy kernel (no data, or divergence)."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when a GPU is present, else CPU. ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' requested but torch sees no CUDA GPU; use device: auto or cpu")
    return torch.device(name)


def configure_torch(device: torch.device, threads: int | None = None) -> None:
    """CPU threads from the job; TF32 off on CUDA (it caps kernel recovery near 1e-3)."""
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


@dataclass
class Crops:
    """A fixed sample of training or validation crops on the training device."""

    inputs: torch.Tensor  # (N, 1, S + 2h, S + 2h)
    targets: torch.Tensor  # (N, 1, S, S)
    power: float  # mean target^2, the loss normaliser
    raw_inputs: np.ndarray  # (N, S + 2h, S + 2h) as sampled, for the oracle
    raw_targets: np.ndarray  # (N, S, S)

    @classmethod
    def draw(
        cls, sampler: CropSampler, n: int, device: torch.device, dtype: torch.dtype, whiten: bool = False
    ) -> "Crops":
        return cls.from_arrays(*sampler.sample(n), device=device, dtype=dtype, whiten=whiten)

    @classmethod
    def from_arrays(
        cls,
        inputs: np.ndarray,
        targets: np.ndarray,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        whiten: bool = False,
    ) -> "Crops":
        """From (N, S + 2h, S + 2h) input and (N, S, S) target crops.

        ``whiten``: correlate both with the 3x3 Laplacian first (valid, float64), so the
        model sees (N, S + 2h - 2, ...) inputs and (N, S - 2, ...) targets. Exact for a
        linear model, because correlations commute: L * (k * x) = k * (L * x). It
        flattens the 1/f spectrum of natural images: the patch covariance's condition
        number drops from ~3e4 to ~7 on the sample photos, and L-BFGS needs far fewer steps.
        """
        x, y = (laplacian_valid(inputs), laplacian_valid(targets)) if whiten else (inputs, targets)
        power = float(np.mean(np.square(y, dtype=np.float64))) or 1.0
        x = torch.from_numpy(np.ascontiguousarray(x))[:, None].to(device=device, dtype=dtype)
        y = torch.from_numpy(np.ascontiguousarray(y))[:, None].to(device=device, dtype=dtype)
        return cls(x, y, power, inputs, targets)


def laplacian_valid(batch: np.ndarray) -> np.ndarray:
    """Valid correlation of (N, H, W) with [[0,-1,0],[-1,4,-1],[0,-1,0]], in float64: (N, H-2, W-2)."""
    b = batch.astype(np.float64, copy=False)
    return 4 * b[:, 1:-1, 1:-1] - b[:, :-2, 1:-1] - b[:, 2:, 1:-1] - b[:, 1:-1, :-2] - b[:, 1:-1, 2:]


def relative_mse(model: LearnableKernel, crops: Crops) -> torch.Tensor:
    return F.mse_loss(model.forward_valid(crops.inputs), crops.targets) / crops.power


def _make_optimizer(name: str, params, lr: float, history: int):
    if name == "lbfgs":
        return lbfgs(params, lr=lr, history=history, max_iter=1, max_eval=25)  # one iteration a step: the stopping rule sees each
    if name == "adam":
        # torch.optim imports the compiler on its first step (1-3 s): here, not inside the timed training.
        import torch._dynamo  # noqa: F401

        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}")


@dataclass
class FitResult:
    kernels: np.ndarray
    history: list[dict]
    steps: int
    seconds: float
    stop_reason: str
    final_train_loss: float
    final_val_loss: float
    recoveries: int = 0
    lr: float = 0.0


def fit(
    model: LearnableKernel,
    train: Crops,
    val: Crops,
    settings: dict,
    *,
    true_kernels: np.ndarray | None = None,
    filt: Filter | None = None,
    resample: Callable[[], Crops] | None = None,
    probe: Callable[[int, float, LearnableKernel], bool] | None = None,
    progress: bool = False,
    label: str = "",
    base_kernels: np.ndarray | None = None,
    correction_scale: float = 1.0,
    first_step: int = 1,
) -> FitResult:
    """Optimise ``model`` on fixed crops until the stopping rule or ``max_steps``.

    Args:
        settings: the training settings (config.yaml's ``train`` with filter overrides).
        true_kernels: (n, k, k) for the kernel-error column, when the filter has them.
        filt: the filter, for how its kernels are aligned before measuring.
        resample: fresh training crops, every ``refresh_every`` steps when that is > 0.
        probe: called after every step with (step, training seconds so far, model),
            its time not counted; returning True stops training ("probe").
        base_kernels, correction_scale: the error column measures ``base_kernels +
            correction_scale * kernels`` (a refinement round fits a scaled correction to
            the kernels it starts from; see :func:`refine_linear`).
        first_step: the number of the first step in the history rows.
    """
    name = settings["optimizer"]
    lr = settings.get("lr") or DEFAULT_LR[name]
    optimizer = _make_optimizer(name, model.parameters(), lr, settings["history"])
    combine = filt.combine if filt else model.combine
    output = filt.output if filt else ("abs_uint8" if model.saturate else "float")
    history: list[dict] = []
    last_good = model.weight.detach().clone()
    previous_check = model.kernels()
    best_val = math.inf
    recoveries = 0
    stop_reason = "max_steps"
    loss_value = math.nan
    val_value = math.nan
    elapsed = 0.0
    started = time.perf_counter()
    bar = tqdm(total=settings["max_steps"], desc=label or "train", mininterval=1.0, disable=not progress)
    step = 0
    for step in range(1, settings["max_steps"] + 1):

        def closure():
            optimizer.zero_grad()
            loss = relative_mse(model, train)
            loss.backward()
            return loss

        loss = optimizer.step(closure) if name == "lbfgs" else _adam_step(optimizer, closure)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value) or not torch.isfinite(model.weight).all():
            recoveries += 1
            if recoveries > MAX_RECOVERIES:
                bar.close()
                raise TrainingError(
                    f"{label or 'training'}: diverged (non-finite loss) {recoveries} times, last at step {step} "
                    f"with lr {lr:g}; set a smaller train.lr for this filter"
                )
            with torch.no_grad():
                model.weight.copy_(last_good)
            lr /= 2
            optimizer = _make_optimizer(name, model.parameters(), lr, settings["history"])
            continue
        last_good = model.weight.detach().clone()
        bar.update(1)
        if resample is not None and settings.get("refresh_every") and step % settings["refresh_every"] == 0:
            train = resample()
            if name == "lbfgs":  # its curvature pairs belong to the old objective
                optimizer = _make_optimizer(name, model.parameters(), lr, settings["history"])
        if probe is not None:
            elapsed += time.perf_counter() - started
            stop = probe(step, elapsed, model)
            started = time.perf_counter()
            if stop:
                stop_reason = "probe"
                break
        # One history row per step (the kernel error costs K*K numbers); validation,
        # kernel change and the stopping rule every `check_every` steps.
        kernels = model.kernels()
        total = kernels if base_kernels is None else base_kernels + correction_scale * kernels
        errors = compare(total, true_kernels, combine, output) if true_kernels is not None else None
        row = {
            "step": first_step + step - 1,
            "seconds": elapsed + time.perf_counter() - started,
            "train_loss": loss_value,
            "val_loss": math.nan,
            "kernel_max_abs_error": errors["max_abs_error"] if errors else math.nan,
            "kernel_max_abs_rel": errors["max_abs_rel"] if errors else math.nan,
            "kernel_change": math.nan,
            "lr": lr,
        }
        history.append(row)
        if step % settings["check_every"] == 0 or step == settings["max_steps"]:
            with torch.no_grad():
                val_value = float(relative_mse(model, val))
            scale = float(np.max(np.abs(kernels))) or 1.0
            change = float(np.max(np.abs(kernels - previous_check))) / scale
            previous_check = kernels
            row.update(val_loss=val_value, kernel_change=change)
            bar.set_postfix(val=f"{val_value:.2e}", change=f"{change:.1e}")
            # The loss is already relative to the target power: compare improvements directly.
            improvement = best_val - val_value
            best_val = min(best_val, val_value)
            if improvement < settings["rel_tol"] and change < settings["kernel_tol"]:
                stop_reason = "converged"
                break
    bar.close()
    seconds = elapsed + time.perf_counter() - started
    if not math.isfinite(val_value):
        with torch.no_grad():
            val_value = float(relative_mse(model, val))
    return FitResult(model.kernels(), history, step, seconds, stop_reason, loss_value, val_value, recoveries, lr)


# Refinement (see refine_linear): rounds until the held-out residual is within this factor
# of the least-squares oracle's, at most this many rounds.
REFINE_FACTOR = 2.0
MAX_REFINE_ROUNDS = 3


def residual_crops(inputs: np.ndarray, targets: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """targets - valid_correlate(inputs, kernel), per crop in float64 (the model's own arithmetic)."""
    model = AffineKernel(kernel)
    return np.stack([np.asarray(t, np.float64) - model.predict_valid(np.asarray(x, np.float64), output=None)
                     for x, t in zip(inputs, targets)])


def refine_linear(
    model: LearnableKernel,
    train: Crops,
    val: Crops,
    oracle_val_residual: float,
    settings: dict,
    *,
    whiten: bool,
    true_kernels: np.ndarray | None = None,
    filt: Filter | None = None,
    first_step: int = 1,
    first_seconds: float = 0.0,
    label: str = "",
) -> tuple[np.ndarray, int, list[dict]]:
    """Learn what float32 arithmetic left over: rounds of training on the float64 residual.

    A float32 model's kernel stalls near float32 resolution (1e-7 of the output), tens of
    times the least-squares oracle's error for a 15x15 or 31x31 kernel. Each round computes
    the residual ``y - k * x`` of the same crops in float64 and trains a correction, from
    zero, with the same optimizer and stopping rule; the loss is relative to the residual's
    power, so float32 now resolves the correction to 1e-7 of *itself*. Rounds stop when the
    held-out residual is within ``REFINE_FACTOR`` of the oracle's, after
    ``MAX_REFINE_ROUNDS``, or when a round does not lower it (then it is undone).

    Returns (the (1, K, K) float64 kernel, rounds kept, history rows). The kernel is kept
    in float64: rounding it back to float32 taps would undo part of the rounds.
    """
    rows: list[dict] = []
    kernel = model.kernels()[0]
    residual = relative_residual(val.raw_inputs, val.raw_targets, AffineKernel(kernel))
    rounds = 0
    for _ in range(MAX_REFINE_ROUNDS):
        if residual <= REFINE_FACTOR * oracle_val_residual:
            break
        train_residual = residual_crops(train.raw_inputs, train.raw_targets, kernel)
        # Unit power, as the first fit's targets: the gradient of a 1e-8 residual's relative
        # loss is 1e8 times larger and L-BFGS's first step would overflow float32.
        scale = float(np.sqrt(np.mean(np.square(train_residual))))
        if not scale > 0:
            break
        correction = LearnableKernel.from_kernels(np.zeros((1, *kernel.shape)), dtype=model.weight.dtype).to(model.weight.device)
        train_correction = Crops.from_arrays(train.raw_inputs, train_residual / scale, model.weight.device,
                                             model.weight.dtype, whiten)
        val_correction = Crops.from_arrays(val.raw_inputs, residual_crops(val.raw_inputs, val.raw_targets, kernel) / scale,
                                           model.weight.device, model.weight.dtype, whiten)
        result = fit(
            correction,
            train_correction,
            val_correction,
            settings,
            true_kernels=true_kernels,
            filt=filt,
            label=f"{label} refine",
            base_kernels=kernel[None],
            correction_scale=scale,
            first_step=first_step + len(rows),
        )
        candidate = kernel + scale * result.kernels[0]
        candidate_residual = relative_residual(val.raw_inputs, val.raw_targets, AffineKernel(candidate))
        if not candidate_residual < residual:
            break
        kernel, residual, rounds = candidate, candidate_residual, rounds + 1
        for row in result.history:  # in the first fit's terms: seconds since it began, loss relative to its targets
            row["seconds"] += first_seconds
            row["train_loss"] *= train_correction.power * scale**2 / train.power
            row["val_loss"] *= val_correction.power * scale**2 / val.power
        first_seconds += result.seconds
        rows.extend(result.history)
    return kernel[None], rounds, rows


def _adam_step(optimizer: torch.optim.Optimizer, closure) -> torch.Tensor:
    loss = closure()
    optimizer.step()
    return loss.detach()


def warm_up(device: torch.device, dtype: torch.dtype) -> None:
    """One tiny convolution and backward pass: a process's first one sets up the backend
    (hundreds of ms on CPU, more on CUDA), which is start-up, not training time."""
    weight = torch.zeros(1, 1, 3, 3, device=device, dtype=dtype, requires_grad=True)
    F.conv2d(torch.zeros(1, 1, 8, 8, device=device, dtype=dtype), weight).sum().backward()
