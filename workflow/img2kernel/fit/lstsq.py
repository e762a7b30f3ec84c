"""Masked least squares for affine kernels: the normal equations, without im2col of the whole data.

For a K x K kernel over C_in channels, each used output pixel contributes one row of
F = C_in * K * K window values, a constant 1 for the bias, and its C_out output values.
Rows are built a few image rows at a time and folded into X'X, X'1, X'Y, Y'1, Y'Y and n,
so memory stays near one block whatever the data size.

Exactness: 8-bit data, centred on 128, are integers of at most 128 in magnitude, whose
products (at most 2^14) summed over 1024 rows stay below 2^24, where float32 is exact.
Those blocks run as float32 BLAS (symmetric rank-k update) and are summed in float64:
the normal equations are exact, at about 2.6 times the speed of float64 (15x15 on
5 megapixels: 2.7 s vs 7 s here). Other data (16-bit, float) run in float64.

The equations of every smaller odd size are sub-blocks of the largest one's (the same
pixels, a centred subset of the window), so one pass serves the whole size search.

With ``cross_channel=False`` only each input channel's own block of X'X is summed (a third
of the work for RGB): enough for a kernel per channel or one shared kernel, which is what
most colour tools are, so the full cross-channel system is summed only when needed
(docs/design.md, "Pairs").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import scipy.linalg
from numpy.lib.stride_tricks import sliding_window_view
from scipy.linalg.blas import sgemm, ssyrk

from img2kernel.evaluate.metrics import row_bands

EXACT_CHUNK = 1024  # rows per float32 block: 1024 * 128 * 128 = 2^24
EXACT_OFFSET = 128.0
BLOCK_PIXELS = 16384  # output pixels turned into rows at a time


@dataclass
class FitSample:
    """One (input, output) pair and the output pixels a fit may use.

    Attributes:
        x: (H, W, C_in) input values as stored.
        y: (H, W, C_out) output values as stored; NaN where unknown (a valid-mode output's ring).
        use: (H, W) bool, the output pixels this fit may use (its split, unsaturated, finite).
    """

    x: np.ndarray
    y: np.ndarray
    use: np.ndarray


@dataclass
class NormalEquations:
    """The accumulated sums of one pass at ``ksize`` (the largest size searched)."""

    ksize: int
    c_in: int
    c_out: int
    xx: np.ndarray  # (F, F)
    x1: np.ndarray  # (F,)
    xy: np.ndarray  # (F, C_out)
    y1: np.ndarray  # (C_out,)
    yy: np.ndarray  # (C_out,) sums of squares per output channel
    rows: int
    eligible_rows: int
    x_offset: np.ndarray  # (C_in,) subtracted from inputs before the sums
    y_offset: np.ndarray  # (C_out,)
    exact: bool
    cross_channel: bool = True  # False: xx holds each input channel's own block only (zeros elsewhere)
    # The constant feature's sum of squares: ``rows`` for pixel rows; rows that are weighted
    # transforms of pixels (a JPEG file's DCT coefficients, fit.jpeg) carry their own, and x1
    # and y1 then hold the transformed constant's products.
    ones: float | None = None

    @property
    def ones_weight(self) -> float:
        return float(self.rows if self.ones is None else self.ones)

    def _index(self, ksize: int) -> np.ndarray:
        """Feature indices of the centred ``ksize`` window inside the largest one, (c, dy, dx) order."""
        if ksize % 2 == 0 or not 1 <= ksize <= self.ksize:
            raise ValueError(f"ksize must be odd and at most {self.ksize}, got {ksize}")
        margin = (self.ksize - ksize) // 2
        grid = np.arange(self.c_in * self.ksize * self.ksize).reshape(self.c_in, self.ksize, self.ksize)
        return grid[:, margin : margin + ksize, margin : margin + ksize].reshape(-1)

    def _system(self, ksize: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self._index(ksize)
        f = len(idx)
        gram = np.empty((f + 1, f + 1))
        gram[:f, :f] = self.xx[np.ix_(idx, idx)]
        gram[:f, f] = gram[f, :f] = self.x1[idx]
        gram[f, f] = self.ones_weight
        rhs = np.vstack([self.xy[idx], self.y1[None]])
        return gram, rhs

    def solve(self, ksize: int) -> tuple[np.ndarray, np.ndarray]:
        """The least-squares kernel (C_out, C_in, K, K) and bias (C_out,) at ``ksize``, in stored units."""
        self._check_rows()
        if not self.cross_channel and self.c_in > 1:
            raise ValueError("these sums hold each channel's own block only: sum them with cross_channel=True")
        gram, rhs = self._system(ksize)
        theta = solve_normal(gram, rhs)
        f = gram.shape[0] - 1
        kernel = theta[:f].T.reshape(self.c_out, self.c_in, ksize, ksize)
        # Undo the centring: y - cy = k * (x - cx) + b'  =>  b = b' + cy - sum_c cx_c * sum(k[o, c]).
        bias = theta[f] + self.y_offset - np.einsum("oikl,i->o", kernel, self.x_offset)
        return kernel, bias

    def solve_structured(self, ksize: int, structure: str) -> tuple[np.ndarray, np.ndarray]:
        """Least squares with the channels restricted, from the same sums (C_in = C_out only):

        - ``per-channel``: output o reads input channel o alone (a kernel per channel);
        - ``shared``: one kernel for every channel, a bias per channel.
        """
        if self.c_in != self.c_out:
            raise ValueError(f"structure {structure!r} needs as many input as output channels")
        self._check_rows()
        idx = self._index(ksize).reshape(self.c_in, -1)
        f = idx.shape[1]
        kernel = np.zeros((self.c_out, self.c_in, ksize, ksize))
        if structure == "per-channel":
            centred_bias = np.zeros(self.c_out)
            for o in range(self.c_out):
                gram = np.empty((f + 1, f + 1))
                gram[:f, :f] = self.xx[np.ix_(idx[o], idx[o])]
                gram[:f, f] = gram[f, :f] = self.x1[idx[o]]
                gram[f, f] = self.ones_weight
                theta = solve_normal(gram, np.append(self.xy[idx[o], o], self.y1[o]))
                kernel[o, o] = theta[:f].reshape(ksize, ksize)
                centred_bias[o] = theta[f]
        elif structure == "shared":
            c = self.c_out
            gram = np.zeros((f + c, f + c))
            rhs = np.zeros(f + c)
            for o in range(c):
                gram[:f, :f] += self.xx[np.ix_(idx[o], idx[o])]
                gram[:f, f + o] = gram[f + o, :f] = self.x1[idx[o]]
                gram[f + o, f + o] = self.ones_weight
                rhs[:f] += self.xy[idx[o], o]
                rhs[f + o] = self.y1[o]
            theta = solve_normal(gram, rhs)
            for o in range(c):
                kernel[o, o] = theta[:f].reshape(ksize, ksize)
            centred_bias = theta[f:]
        else:
            raise ValueError(f"unknown channel structure {structure!r}")
        return kernel, centred_bias + self.y_offset - np.einsum("oikl,i->o", kernel, self.x_offset)

    def solve_separable(self, ksize: int, start: np.ndarray, rounds: int = 12) -> tuple[np.ndarray, np.ndarray]:
        """The least-squares separable kernel u v^T (1, 1, K, K) and its bias, gray only: alternating
        solves for u with v held and for v with u held, each from these sums, from the rank-1 part of
        ``start`` (K, K)."""
        if self.c_in != 1 or self.c_out != 1:
            raise ValueError("a separable kernel is solved for one input and one output channel")
        self._check_rows()
        gram, rhs = self._system(ksize)
        f = ksize * ksize
        left, singular, right = np.linalg.svd(np.asarray(start, dtype=np.float64).reshape(ksize, ksize))
        u, v = left[:, 0] * singular[0], right[0]
        theta = np.zeros(f + 1)
        for _ in range(rounds):
            for rows in (True, False):  # solve u (rows) with v held, then v with u held
                held = v if rows else u
                lift = np.zeros((f + 1, ksize + 1))  # theta = lift @ (free factor, centred bias)
                for i in range(ksize):
                    for j in range(ksize):
                        lift[i * ksize + j, i if rows else j] = held[j] if rows else held[i]
                lift[f, ksize] = 1.0
                free = solve_normal(lift.T @ gram @ lift, lift.T @ rhs[:, 0])
                theta = lift @ free
                u, v = (free[:ksize], v) if rows else (u, free[:ksize])
        kernel = theta[:f].reshape(1, 1, ksize, ksize)
        return kernel, theta[f] + self.y_offset - np.einsum("oikl,i->o", kernel, self.x_offset)

    def bias_for(self, ksize: int, kernel: np.ndarray) -> np.ndarray:
        """(C_out,) the least-squares bias of a given (C_out, C_in, K, K) kernel, in stored units."""
        self._check_rows()
        x1 = self.x1[self._index(ksize)]
        centred = (self.y1 - kernel.reshape(self.c_out, -1) @ x1) / self.ones_weight
        return centred + self.y_offset - np.einsum("oikl,i->o", kernel, self.x_offset)

    def within(self, inputs: np.ndarray, outputs: np.ndarray | None = None) -> "NormalEquations":
        """The sums of the same pixels seen through colour matrices, s = inputs @ x (C_s, C_in) and
        t = outputs @ y (C_t, C_out; default: y itself): a tool working in gray or YCbCr
        (:class:`img2kernel.colour.Space`), for solving a structure that holds in that space;
        cross-channel sums only. Solving only: the sums of squares of a mixed t are not known
        from these, so ``yy`` is then NaN."""
        if not self.cross_channel or inputs.shape[1] != self.c_in or (outputs is not None and outputs.shape[1] != self.c_out):
            raise ValueError(f"colour matrices {inputs.shape} and {None if outputs is None else outputs.shape} need "
                             f"cross-channel sums of {self.c_in} input and {self.c_out} output channels")
        taps = self.ksize * self.ksize
        mix = np.kron(inputs, np.eye(taps))  # features are (channel, dy, dx)
        out = np.eye(self.c_out) if outputs is None else outputs
        return NormalEquations(
            self.ksize, inputs.shape[0], out.shape[0], mix @ self.xx @ mix.T, mix @ self.x1, mix @ self.xy @ out.T,
            out @ self.y1, self.yy if outputs is None else np.full(out.shape[0], np.nan), self.rows, self.eligible_rows,
            inputs @ self.x_offset, out @ self.y_offset, False, True, self.ones)

    def _check_rows(self) -> None:
        if self.rows == 0:
            raise ValueError("no usable pixels to fit (every output pixel is saturated, unknown or too near the edge)")

    def rms_residual(self, ksize: int, kernel: np.ndarray, bias: np.ndarray) -> float:
        """RMS residual over the fit's own pixels and output channels, from the sums (no second pass)."""
        if not self.cross_channel and np.any(kernel * (1 - np.eye(self.c_out, self.c_in))[:, :, None, None]):
            raise ValueError("a kernel that mixes channels needs the sums of cross_channel=True")
        gram, rhs = self._system(ksize)
        centred_bias = bias - self.y_offset + np.einsum("oikl,i->o", kernel, self.x_offset)
        theta = np.vstack([kernel.reshape(self.c_out, -1).T, centred_bias[None]])
        cross, quadratic = np.sum(theta * rhs, axis=0), np.einsum("fo,fg,go->o", theta, gram, theta)
        rss = self.yy - 2 * cross + quadratic
        # The terms nearly cancel for an exact fit: below their rounding, the residual is 0
        # as far as these sums can tell (about 1e-8 of the output's RMS).
        resolution = 64 * np.finfo(np.float64).eps * (self.yy + 2 * np.abs(cross) + np.abs(quadratic))
        rss = np.where(rss <= resolution, 0.0, rss)
        return float(np.sqrt(float(np.sum(rss)) / max(self.rows * self.c_out, 1)))


def solve_normal(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """The least-squares solution of normal equations ``gram @ theta = rhs`` (float64).

    Cholesky when ``gram`` is positive definite; rank-deficient data (a flat image, a
    feature that never varies) get the minimum-norm solution instead.
    """
    try:
        return scipy.linalg.solve(gram, rhs, assume_a="pos")
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError, ValueError):
        return scipy.linalg.lstsq(gram, rhs)[0]


def least_squares(blocks: Iterable[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """argmin ||A theta - b|| over row blocks (A (n, F), b (n[, C])), in float64.

    Rows that arrive block by block (a generator: the oracle's crops, whatever their number)
    are folded into the normal equations, so only one block is ever held. Rows given at once
    (a list of one block: the ladder's window samples) are solved from A itself by SVD, which
    keeps the digits the normal equations lose to their squared condition number; products
    of pixel values (the quadratic fit) on float targets need them.
    """
    if isinstance(blocks, Sequence) and len(blocks) == 1:
        design, target = (np.asarray(a, dtype=np.float64) for a in blocks[0])
        return np.linalg.lstsq(design, target, rcond=None)[0]
    gram = rhs = None
    for design, target in blocks:
        design, target = np.asarray(design, dtype=np.float64), np.asarray(target, dtype=np.float64)
        if gram is None:
            gram, rhs = np.zeros((design.shape[1],) * 2), np.zeros((design.shape[1],) + target.shape[1:])
        gram += design.T @ design
        rhs += design.T @ target
    if gram is None:
        raise ValueError("no rows to fit")
    return solve_normal(gram, rhs)


def quadratic_features(patches: np.ndarray) -> np.ndarray:
    """(n, F) windows -> (n, F (F + 1) / 2) products p_i p_j (i <= j), weighted so that a
    least-squares fit of y^2 on them is the upper triangle of the symmetric M in y^2 = p'Mp."""
    upper = np.triu_indices(patches.shape[1])
    weights = np.where(upper[0] == upper[1], 1.0, 2.0)  # off-diagonal entries appear twice in p'Mp
    return patches[:, upper[0]] * patches[:, upper[1]] * weights


def kernels_of_quadratic(m_upper: np.ndarray, ksize: int, n: int) -> np.ndarray:
    """The n (K, K) kernels k_j with sum_j (k_j . p)^2 closest to p'Mp: M's top eigenpairs,
    sqrt(lambda) v (unique up to a rotation of the n kernels)."""
    taps = ksize * ksize
    m = np.zeros((taps, taps))
    m[np.triu_indices(taps)] = m_upper
    m = m + m.T - np.diag(np.diag(m))
    values, vectors = np.linalg.eigh(m)
    top = np.argsort(values)[::-1][:n]
    return (vectors[:, top] * np.sqrt(np.clip(values[top], 0, None))).T.reshape(n, ksize, ksize)


def _integer_8bit(storage: str) -> bool:
    return storage == "uint8"


def normal_equations(
    samples: list[FitSample],
    ksize: int,
    *,
    input_storage: str = "float32",
    output_storage: str = "float32",
    max_rows: int | None = None,
    seed: int = 0,
    cross_channel: bool = True,
) -> NormalEquations:
    """Accumulate the normal equations of a ``ksize`` affine kernel over the samples' used pixels.

    Only output pixels whose whole window lies inside the image are rows (the border rule
    is unknown, so no padded pixel enters the fit). With ``max_rows``, a seeded random
    subset of about that many rows is used (the same for the same data and seed). With
    ``cross_channel=False``, X'X holds each input channel's own block only.
    """
    if ksize < 1 or ksize % 2 == 0:
        raise ValueError(f"ksize must be odd and positive, got {ksize}")
    if not samples:
        raise ValueError("no pairs to fit")
    h = ksize // 2
    c_in, c_out = samples[0].x.shape[2], samples[0].y.shape[2]
    exact = _integer_8bit(input_storage) and _integer_8bit(output_storage)
    dtype = np.float32 if exact else np.float64
    x_offset, y_offset = centring(samples, exact)
    usable = [interior(s.use, h) for s in samples]
    eligible = int(sum(u.sum() for u in usable))
    keep_probability = 1.0 if not max_rows or eligible <= max_rows else max_rows / eligible
    rng = np.random.default_rng(seed)
    f = c_in * ksize * ksize
    taps = ksize * ksize
    # The column ranges of X'X that are summed: every feature at once, or each channel's own.
    groups = [slice(0, f)] if cross_channel or c_in == 1 else [slice(c * taps, (c + 1) * taps) for c in range(c_in)]
    xx, x1, xy = np.zeros((f, f)), np.zeros(f), np.zeros((f, c_out))
    y1, yy, rows = np.zeros(c_out), np.zeros(c_out), 0
    for sample, use in zip(samples, usable):
        if keep_probability < 1.0:  # drawn a band of rows at a time: the same draws as one (H, W) call
            for r0, r1 in row_bands(*use.shape):
                use[r0:r1] &= rng.random(use[r0:r1].shape) < keep_probability
        height, width = use.shape
        if height <= 2 * h or width <= 2 * h or not use.any():
            continue
        block_rows = max(1, BLOCK_PIXELS // (width - 2 * h))
        for r0 in range(h, height - h, block_rows):
            r1 = min(r0 + block_rows, height - h)
            mask = use[r0:r1, h : width - h]
            n = int(mask.sum())
            if n == 0:
                continue
            # Centred and converted a block at a time: a whole-image float copy is 24 bytes a
            # colour pixel, 2.4 GB for a 10000 x 10000 photo.
            xc = (sample.x[r0 - h : r1 + h] - x_offset).astype(dtype, copy=False)
            columns = window_columns(xc, mask, ksize)  # (F, n): one row of window values per feature
            block_y = (sample.y[r0:r1, h : width - h][mask] - y_offset).astype(dtype, copy=False)
            rows += n
            if exact:
                for s in range(0, n, EXACT_CHUNK):
                    # (chunk, F) in Fortran order: each channel's columns are then a contiguous
                    # matrix that BLAS reads without a copy.
                    cx, cy = np.asfortranarray(columns[:, s : s + EXACT_CHUNK].T), block_y[s : s + EXACT_CHUNK]
                    for g in groups:
                        xx[g, g] += ssyrk(1.0, cx[:, g], trans=1)  # upper triangle; mirrored below
                    x1 += cx.sum(axis=0)
                    # scipy's BLAS, as ssyrk: numpy's matmul is a second OpenBLAS with its own
                    # threads, and alternating the two pools made every call 3x slower on 2 cores.
                    xy += sgemm(1.0, cx, cy, trans_a=1)
                    y1 += cy.sum(axis=0)
                    yy += np.square(cy).sum(axis=0)
            else:
                for g in groups:
                    xx[g, g] += columns[g] @ columns[g].T
                x1 += columns.sum(axis=1)
                xy += columns @ block_y
                y1 += block_y.sum(axis=0)
                yy += np.square(block_y).sum(axis=0)
    if exact:
        xx = np.triu(xx) + np.triu(xx, 1).T
    return NormalEquations(ksize, c_in, c_out, xx, x1, xy, y1, yy, rows, eligible, x_offset, y_offset, exact,
                           cross_channel or c_in == 1)


def window_columns(band: np.ndarray, mask: np.ndarray, ksize: int) -> np.ndarray:
    """The windows of the masked output pixels of a band, one feature per row.

    Args:
        band: (r + K - 1, W, C) input rows around r output rows.
        mask: (r, W - K + 1) bool, the output pixels whose windows are wanted.

    Returns:
        (C * K * K, n) array, feature (c, dy, dx) in row c K^2 + dy K + dx, one column per
        pixel of ``mask`` in row-major order. Every window of the band is copied plane by
        plane, then the masked pixels kept (indexing a sliding-window view by the mask copies
        element by element, about ten times slower).
    """
    rows, width = mask.shape
    channels = band.shape[2]
    planes = np.ascontiguousarray(np.moveaxis(band, 2, 0))  # (C, r + K - 1, W)
    windows = sliding_window_view(planes, (ksize, ksize), axis=(1, 2))  # (C, r, w, K, K)
    columns = np.empty((channels, ksize, ksize, rows, width), dtype=band.dtype)
    columns[...] = windows.transpose(0, 3, 4, 1, 2)
    columns = columns.reshape(channels * ksize * ksize, rows * width)
    return columns if mask.all() else np.compress(mask.reshape(-1), columns, axis=1)


def centring(samples: list[FitSample], exact: bool) -> tuple[np.ndarray, np.ndarray]:
    """(C_in,) and (C_out,) offsets subtracted before the sums: 128 for exact 8-bit sums, else the
    channel means (centring keeps float64 sums well conditioned; no exactness claim)."""
    c_in, c_out = samples[0].x.shape[2], samples[0].y.shape[2]
    if exact:
        return np.full(c_in, EXACT_OFFSET), np.full(c_out, EXACT_OFFSET)
    return (np.mean([channel_means(s.x) for s in samples], axis=0), np.mean([channel_means(s.y) for s in samples], axis=0))


def channel_means(array: np.ndarray) -> np.ndarray:
    """(C,) mean of an (H, W, C) array's finite values, read a band of rows at a time."""
    total, count = np.zeros(array.shape[2]), np.zeros(array.shape[2])
    for r0, r1 in row_bands(*array.shape[:2]):
        band = np.asarray(array[r0:r1], dtype=np.float64)
        finite = np.isfinite(band)
        total += np.where(finite, band, 0.0).sum(axis=(0, 1))
        count += finite.sum(axis=(0, 1))
    return total / np.maximum(count, 1)


def interior(use: np.ndarray, halo: int) -> np.ndarray:
    """``use`` with the outer ``halo`` rows and columns cleared (their windows leave the image)."""
    out = np.zeros_like(use, dtype=bool)
    if halo == 0:
        out[:] = use
    elif use.shape[0] > 2 * halo and use.shape[1] > 2 * halo:
        out[halo:-halo, halo:-halo] = use[halo:-halo, halo:-halo]
    return out
