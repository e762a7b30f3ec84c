"""The closed-form oracle: the least-squares kernel of the very crops training sees.

In float64 through the normal equations (docs/design.md, "Numerical conventions": float32 normal equations are not
positive definite and reach errors of 1e-2). For a linear filter it recovers the true
kernel to ~1e-12; its relative residual on held-out crops measures how linear a filter
is (a median's is large). For ``magnitude`` filters, y^2 = p^T M p with M = sum k k^T is
linear in M: M is fitted by least squares on pixel products and its top eigenpairs give
the kernel pair up to a rotation. Both are calls of the one solver in :mod:`img2kernel.fit.lstsq`.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from img2kernel.fit.lstsq import kernels_of_quadratic, least_squares, quadratic_features

CHUNK_ROWS = 1 << 15


def _patch_chunks(inputs: np.ndarray, ksize: int, rows: int = CHUNK_ROWS):
    """Yield float64 im2col rows (n, K*K) of valid K x K patches, chunk by chunk, with their crop/pixel order."""
    per_crop = (inputs.shape[1] - ksize + 1) * (inputs.shape[2] - ksize + 1)
    crops_per_chunk = max(1, rows // per_crop)
    for start in range(0, inputs.shape[0], crops_per_chunk):
        block = inputs[start : start + crops_per_chunk].astype(np.float64)
        windows = sliding_window_view(block, (ksize, ksize), axis=(1, 2))  # (n, h, w, K, K)
        yield start, windows.reshape(-1, ksize * ksize)


def least_squares_kernel(inputs: np.ndarray, targets: np.ndarray, ksize: int) -> np.ndarray:
    """The (K, K) kernel minimising sum (valid_correlate(input, k) - target)^2 over the crops.

    Args:
        inputs: (N, S + K - 1, S + K - 1) crops with a halo of K // 2.
        targets: (N, S, S) target crops (the inputs' interiors, filtered).
    """
    _check_shapes(inputs, targets, ksize)
    flat_targets = targets.reshape(targets.shape[0], -1)
    blocks = ((patches, flat_targets[start : start + len(patches) // flat_targets.shape[1]].reshape(-1))
              for start, patches in _patch_chunks(inputs, ksize))
    return least_squares(blocks).reshape(ksize, ksize)


def magnitude_pair(inputs: np.ndarray, targets: np.ndarray, ksize: int, max_rows: int = 200_000) -> np.ndarray:
    """Two (K, K) kernels whose gradient magnitude best fits the targets (unique up to rotation):
    the quadratic fit of y^2 on pixel products (:func:`kernels_of_quadratic`), on at most ``max_rows`` pixels."""
    _check_shapes(inputs, targets, ksize)
    n_features = ksize * ksize * (ksize * ksize + 1) // 2
    flat_targets = targets.reshape(targets.shape[0], -1)

    def blocks():
        used = 0
        for start, patches in _patch_chunks(inputs, ksize, rows=max(4096, CHUNK_ROWS // max(1, n_features // 64))):
            b = flat_targets[start : start + len(patches) // flat_targets.shape[1]].reshape(-1).astype(np.float64)
            yield quadratic_features(patches), b**2
            used += len(patches)
            if used >= max_rows:
                return

    return kernels_of_quadratic(least_squares(blocks()), ksize, 2)


def _check_shapes(inputs: np.ndarray, targets: np.ndarray, ksize: int) -> None:
    if inputs.ndim != 3 or targets.ndim != 3 or inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"expected (N, S', S') inputs and (N, S, S) targets, got {inputs.shape} and {targets.shape}")
    if inputs.shape[1] - targets.shape[1] != ksize - 1 or inputs.shape[2] - targets.shape[2] != ksize - 1:
        raise ValueError(
            f"input crops {inputs.shape[1:]} must be the target crops {targets.shape[1:]} plus a halo of {ksize // 2}"
        )
