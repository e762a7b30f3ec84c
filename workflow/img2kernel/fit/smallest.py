"""How small can the model be? The fewest weights that still reach the noise floor, measured.

For the chosen model's kernel (the tensor named ``kernel``: an affine kernel, a magnitude's
kernels, a curve's inner kernel), two reductions, each scored by the model's own held-out
prediction:

- separable rank: each K x K block replaced by its best rank-r approximation (an SVD; a
  3x3 Sobel is rank 1, 6 weights instead of 9), the smallest r that stays adequate;
- bits per tap: every tap rounded to a signed n-bit integer times one scale per kernel
  (int8, int4, ...), the fewest bits that stay adequate.

Adequate means what the ladder means: a held-out residual within ``LINEAR_FACTOR`` noise
floors, or, for a model that does not reach the floor itself, within 1% of its own residual.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from img2kernel.models import Model
from img2kernel.evaluate.metrics import psnr_db
from img2kernel.thresholds import LINEAR_FACTOR

BITS = (2, 3, 4, 5, 6, 8, 10, 12, 16)


def low_rank(kernel: np.ndarray, rank: int) -> np.ndarray:
    """Each trailing (K, K) block of ``kernel`` at its best rank-``rank`` approximation."""
    blocks = kernel.reshape(-1, *kernel.shape[-2:])
    out = np.empty_like(blocks)
    for i, block in enumerate(blocks):
        u, s, vt = np.linalg.svd(block)
        out[i] = (u[:, :rank] * s[:rank]) @ vt[:rank]
    return out.reshape(kernel.shape)


def quantized(kernel: np.ndarray, bits: int) -> np.ndarray:
    """Taps rounded to signed ``bits``-bit integers times one scale per (K, K) block.

    The scale is the largest tap over L, for the L <= 2^(bits-1) - 1 with the smallest
    rounding error (every L up to 8 bits): a Sobel's taps 1 and 2 are exact with L = 2,
    which the largest level alone (an odd number) never gives.
    """
    blocks = kernel.reshape(-1, *kernel.shape[-2:])
    levels = 2 ** (bits - 1) - 1
    out = np.empty_like(blocks)
    for i, block in enumerate(blocks):
        top = float(np.max(np.abs(block)))
        if top == 0:
            out[i] = 0
            continue
        best = None
        for level in range(1, levels + 1) if bits <= 8 else (levels,):
            scale = top / level
            candidate = np.rint(block / scale) * scale
            error = float(np.max(np.abs(candidate - block)))
            if best is None or error < best[0]:
                best = (error, candidate)
        out[i] = best[1]
    return out.reshape(kernel.shape)


def smallest_forms(model: Model, score: Callable[[Model], float], noise_floor: float, peak: float) -> list[dict]:
    """Rows for the report: the full model, its smallest adequate separable rank and bit width.

    ``score(model)`` is the held-out RMS residual of a model (in output units). Returns []
    when the model has no ``kernel`` tensor (a rank filter has no weights to reduce).
    """
    tensors = model.tensors()
    if "kernel" not in tensors:
        return []
    kernel = np.asarray(tensors["kernel"], dtype=np.float64)
    k = kernel.shape[-1]
    live = [b for b in kernel.reshape(-1, k, k) if np.any(b)]
    full = score(model)
    limit = max(LINEAR_FACTOR * noise_floor, 1.01 * full)

    def with_kernel(values: np.ndarray) -> Model:
        return type(model).from_tensors({**tensors, "kernel": values}, model.output)

    def row(form: str, weights: int, residual: float, **extra) -> dict:
        return {"form": form, "kernel_weights": weights, "residual": residual,
                "psnr_db": psnr_db(residual, peak), **extra}

    rows = [row(f"full {k}x{k} taps, float64", len(live) * k * k, full)]
    for rank in range(1, k + 1):
        residual = score(with_kernel(low_rank(kernel, rank)))
        if residual <= limit or rank == k:
            rows.append(row(f"separable rank {rank}" + (" (not reducible)" if residual > limit else ""),
                            len(live) * min(rank * 2 * k, k * k), residual, rank=rank))
            break
    for bits in BITS:
        residual = score(with_kernel(quantized(kernel, bits)))
        if residual <= limit:
            rows.append(row(f"int{bits} taps, one scale per kernel", len(live) * k * k, residual, bits=bits))
            break
    else:
        rows.append(row("no bit width up to 16 stays adequate", len(live) * k * k, math.nan, bits=None))
    return rows
