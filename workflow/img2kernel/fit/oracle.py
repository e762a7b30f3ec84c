"""The closed-form oracle: the least-squares kernel of the very crops training sees.

In float64 through the normal equations (docs/design.md, "Numerical conventions": float32 normal equations are not
positive definite and reach errors of 1e-2). For a linear filter it recovers the true
kernel to ~1e-12; its relative residual on held-out crops measures how linear a filter
is (a median's is large). For ``magnitude`` filters, y^2 = p^T M p with M = sum k k^T is
linear in M: M is fitted by least squares on pixel products and its top eigenpairs give
the kernel pair up to a rotation.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from numpy.lib.stride_tricks import sliding_window_view

CHUNK_ROWS = 1 << 15


def _patch_chunks(inputs: np.ndarray, ksize: int, rows: int = CHUNK_ROWS):
    """Yield float64 im2col rows (n, K*K) of valid K x K patches, chunk by chunk, with their crop/pixel order."""
    per_crop = (inputs.shape[1] - ksize + 1) * (inputs.shape[2] - ksize + 1)
    crops_per_chunk = max(1, rows // per_crop)
    for start in range(0, inputs.shape[0], crops_per_chunk):
        block = inputs[start : start + crops_per_chunk].astype(np.float64)
        windows = sliding_window_view(block, (ksize, ksize), axis=(1, 2))  # (n, h, w, K, K)
        yield start, windows.reshape(-1, ksize * ksize)


def _solve_normal(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    try:
        return scipy.linalg.solve(gram, rhs, assume_a="pos")
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
        # Rank-deficient data (a flat image): the minimum-norm solution.
        return scipy.linalg.lstsq(gram, rhs)[0]


def least_squares_kernel(inputs: np.ndarray, targets: np.ndarray, ksize: int) -> np.ndarray:
    """The (K, K) kernel minimising sum (valid_correlate(input, k) - target)^2 over the crops.

    Args:
        inputs: (N, S + K - 1, S + K - 1) crops with a halo of K // 2.
        targets: (N, S, S) target crops (the inputs' interiors, filtered).
    """
    _check_shapes(inputs, targets, ksize)
    gram = np.zeros((ksize * ksize, ksize * ksize))
    rhs = np.zeros(ksize * ksize)
    flat_targets = targets.reshape(targets.shape[0], -1).astype(np.float64)
    for start, patches in _patch_chunks(inputs, ksize):
        n = patches.shape[0] // flat_targets.shape[1]
        b = flat_targets[start : start + n].reshape(-1)
        gram += patches.T @ patches
        rhs += patches.T @ b
    return _solve_normal(gram, rhs).reshape(ksize, ksize)


def relative_residual(inputs: np.ndarray, targets: np.ndarray, model, output: str | None = "float") -> float:
    """||model(inputs) - targets|| / ||targets|| on valid crops, in float64.

    ``model``: any :class:`img2kernel.models.Model`; its valid prediction of each crop.
    ``output``: the output step to use (default ``float``: the model's values before it).
    """
    _check_shapes(inputs, targets, model.ksize)
    error = power = 0.0
    for crop, target in zip(inputs, targets):
        b = np.asarray(target, dtype=np.float64)
        prediction = model.predict_valid(np.asarray(crop, dtype=np.float64), output=output)
        error += float(np.sum((prediction - b) ** 2))
        power += float(np.sum(b**2))
    return float(np.sqrt(error / power)) if power > 0 else 0.0


def magnitude_pair(inputs: np.ndarray, targets: np.ndarray, ksize: int, max_rows: int = 200_000) -> np.ndarray:
    """Two (K, K) kernels whose gradient magnitude best fits the targets (unique up to rotation).

    Fits the symmetric M in y^2 = p^T M p by least squares on pixel-product features,
    then returns sqrt(lambda_i) v_i for its two largest eigenpairs.
    """
    _check_shapes(inputs, targets, ksize)
    taps = ksize * ksize
    upper = np.triu_indices(taps)
    weights = np.where(upper[0] == upper[1], 1.0, 2.0)  # off-diagonal entries appear twice in p^T M p
    n_features = len(upper[0])
    gram = np.zeros((n_features, n_features))
    rhs = np.zeros(n_features)
    flat_targets = targets.reshape(targets.shape[0], -1).astype(np.float64)
    used = 0
    for start, patches in _patch_chunks(inputs, ksize, rows=max(4096, CHUNK_ROWS // max(1, n_features // 64))):
        n = patches.shape[0] // flat_targets.shape[1]
        features = patches[:, upper[0]] * patches[:, upper[1]] * weights
        b = flat_targets[start : start + n].reshape(-1) ** 2
        gram += features.T @ features
        rhs += features.T @ b
        used += patches.shape[0]
        if used >= max_rows:
            break
    m_upper = _solve_normal(gram, rhs)
    m = np.zeros((taps, taps))
    m[upper] = m_upper
    m = m + m.T - np.diag(np.diag(m))
    eigenvalues, eigenvectors = np.linalg.eigh(m)
    top = np.argsort(eigenvalues)[::-1][:2]
    pair = eigenvectors[:, top] * np.sqrt(np.clip(eigenvalues[top], 0, None))
    return pair.T.reshape(2, ksize, ksize)


def _check_shapes(inputs: np.ndarray, targets: np.ndarray, ksize: int) -> None:
    if inputs.ndim != 3 or targets.ndim != 3 or inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"expected (N, S', S') inputs and (N, S, S) targets, got {inputs.shape} and {targets.shape}")
    if inputs.shape[1] - targets.shape[1] != ksize - 1 or inputs.shape[2] - targets.shape[2] != ksize - 1:
        raise ValueError(
            f"input crops {inputs.shape[1:]} must be the target crops {targets.shape[1:]} plus a halo of {ksize // 2}"
        )
