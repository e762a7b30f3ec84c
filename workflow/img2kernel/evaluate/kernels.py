"""Comparing kernels: centring, the symmetries a filter leaves free, and error measures."""

from __future__ import annotations

import numpy as np
from scipy.linalg import orthogonal_procrustes


def center(kernel: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad (or, if larger, crop) a (k, k) kernel to (size, size) around its centre."""
    kernel = np.asarray(kernel, dtype=np.float64)
    k = kernel.shape[-1]
    if k == size:
        return kernel.copy()
    if k < size:
        out = np.zeros(kernel.shape[:-2] + (size, size))
        m = (size - k) // 2
        out[..., m : m + k, m : m + k] = kernel
        return out
    m = (k - size) // 2
    return kernel[..., m : m + size, m : m + size].copy()


def align(learned: np.ndarray, true: np.ndarray, combine: str, output: str) -> np.ndarray:
    """The learned kernels moved to the true ones by the symmetry the filter cannot see.

    - ``magnitude``: sqrt(a^2 + b^2) is unchanged by any rotation or reflection of the
      pair (a, b), so the pair is aligned by orthogonal Procrustes.
    - ``uint8`` output: |k * x| is unchanged by k -> -k, so the sign is aligned.
    - otherwise the learned kernels are returned as they are.

    Args:
        learned: (n, K, K) learned kernels.
        true: (n, K, K) true kernels, already centred to K.
    Returns:
        (n, K, K) aligned learned kernels.
    """
    learned = np.asarray(learned, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if learned.shape != true.shape:
        raise ValueError(f"learned {learned.shape} and true {true.shape} kernels differ in shape")
    n = learned.shape[0]
    if combine == "magnitude" and n > 1:
        flat_learned = learned.reshape(n, -1).T  # (K*K, n)
        flat_true = true.reshape(n, -1).T
        rotation, _ = orthogonal_procrustes(flat_learned, flat_true)
        learned = (flat_learned @ rotation).T.reshape(true.shape)
    if output == "abs_uint8":
        signs = np.where(np.sum(learned * true, axis=(1, 2)) < 0, -1.0, 1.0)
        learned = learned * signs[:, None, None]
    return learned


def kernel_errors(learned: np.ndarray, true: np.ndarray) -> dict:
    """Errors of aligned (n, K, K) kernels against the true ones, each named for what it is:
    ``max_abs_error`` max |learned - true|; ``max_abs_rel`` that divided by max |true| (the
    product's figure); ``frobenius_rel`` ||learned - true|| / ||true|| (Frobenius norms)."""
    learned = np.asarray(learned, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    diff = learned - true
    scale = float(np.max(np.abs(true))) or 1.0
    return {
        "max_abs_error": float(np.max(np.abs(diff))),
        "max_abs_rel": float(np.max(np.abs(diff)) / scale),
        "frobenius_rel": float(np.linalg.norm(diff) / (np.linalg.norm(true) or 1.0)),
    }


def compare(learned: np.ndarray, true: np.ndarray | None, combine: str, output: str) -> dict | None:
    """Align then measure (n, K, K) learned against (n, k, k) true kernels; None if there is no truth.

    Both are centred to the larger size: a model larger than the truth is charged for
    every non-zero outer tap, a smaller one for every true tap it cannot hold.
    """
    if true is None:
        return None
    learned = np.asarray(learned, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    size = max(learned.shape[-1], true.shape[-1])
    learned, true = center(learned, size), center(true, size)
    return kernel_errors(align(learned, true, combine, output), true)


# Per-filter kernel tables: the evaluation's kernels, one row per tap (for any size; the
# report prints numbers only up to 7x7 and links here for the rest).
KERNEL_FIELDS = {"true": "true_kernels", "learned": "learned_kernels", "least_squares": "oracle_kernels"}


def kernels_table(evaluation: dict) -> tuple[list[str], list[list]]:
    """Long table of a filter's kernels, (columns, rows): kernel (or c_out, c_in), dy, dx (from
    the centre) and one column per kernel set (true, learned, least_squares; a pairs model:
    learned only)."""
    if evaluation.get("source") == "pairs":
        columns = ["c_out", "c_in", "dy", "dx", "learned"]
        if evaluation.get("kernel") is None:  # a ladder model without an affine kernel (a median)
            return columns, []
        kernel = np.asarray(evaluation["kernel"], dtype=np.float64)  # (C_out, C_in, K, K)
        stacks = {"learned": kernel.reshape(-1, *kernel.shape[-2:])}
        leading = [(o, i) for o in range(kernel.shape[0]) for i in range(kernel.shape[1])]
    else:
        loaded = {name: np.asarray(evaluation[field], dtype=np.float64)
                  for name, field in KERNEL_FIELDS.items() if evaluation.get(field) is not None}
        size = max(s.shape[-1] for s in loaded.values())
        stacks = {name: center(s, size) for name, s in loaded.items()}
        columns = ["kernel", "dy", "dx", *stacks]
        leading = [(n,) for n in range(next(iter(stacks.values())).shape[0])]
    size = next(iter(stacks.values())).shape[-1]
    half = size // 2
    rows = [[*lead, dy - half, dx - half, *(float(s[n, dy, dx]) for s in stacks.values())]
            for n, lead in enumerate(leading) for dy in range(size) for dx in range(size)]
    return columns, rows


def write_kernels_csv(evaluation: dict, path) -> None:
    """:func:`kernels_table` as CSV, every value at full precision (17 digits), written whole."""
    from img2kernel.pipeline.files import write_csv

    write_csv(path, *kernels_table(evaluation), float_format="%.17g")
