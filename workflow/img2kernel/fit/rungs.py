"""The rungs after ``linear``: each fits its candidates to the ladder's train tiles.

A rung is a function ``(LadderData, seed) -> [Model]`` (an empty list: not tried for this
filter) and a line in :data:`RUNGS`; :func:`img2kernel.fit.ladder.climb` scores the candidates
on the held-out tiles. Budgets are iteration counts, not seconds, so the same pairs give the
same ladder on any machine.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from img2kernel.fit.lstsq import kernels_of_quadratic, least_squares, quadratic_features
from img2kernel.fit.optim import minimise
from img2kernel.fit.tiles import FIT_ROWS, MARGIN, LadderData, Tiles, heldout_rms, window_positions, windows
from img2kernel.thresholds import SIZE_TOLERANCE, STORAGE_RANGE, VARIATION_MIN
from img2kernel.models import CnnModel, CurveModel, LinearLightModel, MagnitudeModel, Model, RankModel
from img2kernel.models.cnn import WIDTH
from img2kernel.models.curve import KNOTS
from img2kernel.models.curves import TwoCurveModel
from img2kernel.models.field import GainMapModel, KernelMapModel
from img2kernel.models.rank import disk

CURVE_SIZES = (3, 5, 7)  # kernel sides the curve rung tries
MAGNITUDE_SIZES = (3, 5)
RANK_SIZES = (3, 5, 7)  # footprint sides (cheap: every rank is recomputed on the same windows)
# Curves on both sides: kernel sides, the input curve's knots (and those of the output curve's
# inverse while alternating), and the alternations.
TWO_CURVE_SIZES = (3, 5, 7)
CURVE_KNOTS = 17
TWO_CURVE_ROUNDS = 10
TWO_CURVE_GAMMAS = (1 / 3, 0.5, 1.0, 1.8, 2.4, 3.0)  # the power pairs a fit starts from
# The gain and kernel maps: control points per side, kernel sides, windows, and alternations
# of a gain map's gains and kernel; design rows are built FIELD_CHUNK at a time (a 7x7 kernel
# map on 5x5 nodes has 1,226 columns).
FIELD_NODES = (3, 5)  # a kernel map's; a gain map, with one weight per node, also tries 9x9
GAIN_NODES = FIELD_NODES + (9,)
FIELD_SIZES = (1, 3, 5, 7)
FIELD_ROWS = 16_000
FIELD_ROUNDS = 6
FIELD_CHUNK = 2_000
VARIATION_KSIZE = 3  # the side of the one kernel whose tile-wise gain and sharpening are compared
VARIATION_PLACES = 9  # distinct tile centres (a 3x3 layout) a quadratic in the position (6 coefficients) needs
SMOOTH_ROWS = 8_000  # windows the gradient-fitted rungs (curve, magnitude, cnn) train on
# L-BFGS iterations (not seconds: the same pairs give the same ladder on any machine and load)
REFINE_ITERATIONS = 200  # joint refinement of one curve or magnitude candidate (about 0.4 s here)
CNN_ITERATIONS = 250  # the fallback network (about 3 s here)
CNN_ROWS = 6_000
QUADRATIC_MAX_K = 5  # the quadratic start fits K^2 (K^2 + 1) / 2 products: 1,225 at 7x7, too slow to pay


def quadratic_kernels(patches: np.ndarray, targets: np.ndarray, n: int) -> np.ndarray:
    """n kernels k_j with targets^2 ~ sum_j (k_j . p)^2 (the magnitude model's closed form), as (n, K, K)."""
    k = patches.shape[-1]
    p = patches.reshape(len(patches), -1)
    rows = min(len(p), max(2000, 8_000_000 // (k * k * (k * k + 1))))
    return kernels_of_quadratic(least_squares([(quadratic_features(p[:rows]), targets[:rows] ** 2)]), k, n)


def linear_kernel(patches: np.ndarray, targets: np.ndarray, weight: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Least-squares (K, K) kernel and bias of the windows, each row weighted by ``weight`` when given."""
    p = patches.reshape(len(patches), -1)
    design = np.hstack([p, np.ones((len(p), 1))])
    if weight is not None:
        design, targets = design * weight[:, None], targets * weight
    solution = least_squares([(design, targets)])
    return solution[:-1].reshape(patches.shape[1:]), float(solution[-1])


def between_knots(values, index, weight):
    """A piecewise-linear curve's values where (index, weight) fall on its knots
    (:func:`hat_indices`), for numpy arrays and torch tensors alike."""
    return values[index] * (1 - weight) + values[index + 1] * weight


def _interp(z, knots, values):
    """Differentiable piecewise-linear curve through (knots, values), its end segments extended
    (:meth:`CurveModel.curve`'s rule)."""
    import torch

    index = torch.clamp(torch.searchsorted(knots, z.detach(), right=True) - 1, 0, len(knots) - 2)
    return between_knots(values, index, (z - knots[index]) / (knots[index + 1] - knots[index]))


def curve_start(patches: np.ndarray, targets: np.ndarray, kernel: np.ndarray, skip: np.ndarray | None):
    """For a fixed start kernel (and skip kernel): the knots over the response's range and the
    curve's values by least squares (:func:`fit_output_curve`). Returns (state, rms)."""
    import torch

    p = torch.from_numpy(patches.reshape(len(patches), -1))
    t = torch.from_numpy(targets)
    k = torch.from_numpy(kernel.reshape(-1).copy())
    k = k / (float(torch.std(p @ k)) or 1.0)
    s = torch.from_numpy(skip.reshape(-1).copy()) if skip is not None else None
    z = (p @ k).numpy()
    rest = (t - p @ s if s is not None else t).numpy()
    knots, values, rms = fit_output_curve(z, rest)
    return (p, t, k, s, torch.from_numpy(knots), torch.from_numpy(values)), rms


def fit_curve_kernels(start, size: int) -> CurveModel:
    """Refine a :func:`curve_start` jointly (kernel, curve values, skip kernel) by L-BFGS; the
    start is kept when refining does not lower the training residual (the loss is piecewise
    smooth and a line search can end worse)."""
    import torch

    (p, t, k, s, knots, values), start_rms = start
    k0, values0, s0 = k, values, s
    k, values = k.clone().requires_grad_(True), values.clone().requires_grad_(True)
    s = s.clone().requires_grad_(True) if s is not None else None
    parameters = [k, values] + ([s] if s is not None else [])

    def loss():
        out = _interp(p @ k, knots, values)
        if s is not None:
            out = out + p @ s
        return torch.mean((out - t) ** 2)

    refined = minimise(parameters, loss, REFINE_ITERATIONS)
    if not math.sqrt(refined) < start_rms:
        k, values, s = k0, values0, s0
    return CurveModel(k.detach().numpy().reshape(size, size), 0.0, knots.numpy(), values.detach().numpy(),
                      None if s is None else s.detach().numpy().reshape(size, size))


def hat_indices(z: np.ndarray, knots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each z falls on the knots: the segment's first knot and the weight of the next (below
    0 or above 1 beyond the ends: the end segments extended, :func:`img2kernel.models.curve.piecewise`)."""
    index = np.clip(np.searchsorted(knots, z, side="right") - 1, 0, len(knots) - 2)
    return index, (z - knots[index]) / (knots[index + 1] - knots[index])


def hat_basis(z: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """(n, M): the piecewise-linear interpolation weights of each z on the knots (end segments extended)."""
    index, weight = hat_indices(np.asarray(z, dtype=np.float64), np.asarray(knots, dtype=np.float64))
    basis = np.zeros((len(index), len(knots)))
    rows = np.arange(len(index))
    basis[rows, index] = 1 - weight
    basis[rows, index + 1] += weight
    return basis


def fit_output_curve(z: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The curve g with targets ~ g(z): (knots, values, RMS residual). Knots at quantiles of z, dense where the
    pixels are (a threshold near 0 is resolved) and spread over its whole range (0.1% to 99.9%),
    one moved to 0 when z crosses it (the kink of |.|, a clip or a threshold at 0); the values by
    least squares (the curve is linear in them)."""
    knots = np.quantile(z, np.linspace(0.001, 0.999, KNOTS))
    if knots[0] < 0 < knots[-1]:
        knots[np.argmin(np.abs(knots))] = 0.0
    knots = np.unique(knots)
    if len(knots) < 2:
        knots = np.linspace(float(z.min()) - 1, float(z.max()) + 1, KNOTS)
    basis = hat_basis(z, knots)
    values = least_squares([(basis, targets)])
    return knots, values, float(np.sqrt(np.mean((basis @ values - targets) ** 2)))


def fit_two_curves(data: LadderData, seed: int) -> list[Model]:
    """``g(k * f(x) + b)`` for kernels of 3x3 to 7x7. Alternating least squares on h = g's
    inverse finds a start: with f fixed, h(y) = k * f(x) + b is linear in the kernel, the bias
    and h's values; with those fixed, linear in f's values (both curves' ends pinned at 0 and 1,
    which fixes the scale; rows weighted by 1 / h'(y), the error in output units). It starts
    from the power pair (f = u^gamma, h = v^gamma) that fits best of a few. Then g is fitted on
    the kernel's response (as the curve rung does) and everything refined by L-BFGS."""
    patches, targets = windows(data.train, max(TWO_CURVE_SIZES), SMOOTH_ROWS, seed)
    n = len(targets)
    low, high = float(np.min(data.train.x)), float(np.max(data.train.x))
    if not high > low or not np.ptp(targets) > 0:
        return []
    in_knots = np.linspace(low, high, CURVE_KNOTS)
    out_knots = np.linspace(float(targets.min()), float(targets.max()), CURVE_KNOTS)
    out_index, _ = hat_indices(targets, out_knots)
    psi, ones = hat_basis(targets, out_knots), np.ones((n, 1))
    unit = np.linspace(0.0, 1.0, CURVE_KNOTS)
    fitted = []
    for k in TWO_CURVE_SIZES:
        m = (max(TWO_CURVE_SIZES) - k) // 2
        window = patches[:, m : m + k, m : m + k].reshape(n, -1)
        index, weight = hat_indices(window, in_knots)
        rows = np.repeat(np.arange(n), k * k).reshape(n, k * k)

        def through(values: np.ndarray) -> np.ndarray:  # f of every window pixel
            return between_knots(values, index, weight)

        def kernel_step(in_values, row_weight):  # kernel, bias and h for a fixed f
            solution = least_squares([(np.hstack([through(in_values), ones, -psi[:, 1:-1]]) * row_weight[:, None],
                                       psi[:, -1] * row_weight)])
            return solution[: k * k], solution[k * k], np.concatenate([[0.0], solution[k * k + 1 :], [1.0]])

        def output_rms(in_values, kernel, bias) -> float:
            return fit_output_curve(through(in_values) @ kernel + bias, targets)[2]

        starts = []
        for gamma in TWO_CURVE_GAMMAS:
            in_values = unit**gamma
            kernel, bias, _ = kernel_step(in_values, np.ones(n))
            starts.append((output_rms(in_values, kernel, bias), in_values, kernel, bias))
        kept = min(starts, key=lambda s: s[0])  # the alternation can wander: its best round is kept
        in_values = kept[1]
        row_weight = np.ones(n)
        for _ in range(TWO_CURVE_ROUNDS):
            kernel, bias, h = kernel_step(in_values, row_weight)
            # f's values: the kernel's taps spread on the knots each window's pixels fall between
            spread = (np.bincount((rows * CURVE_KNOTS + index).ravel(), (kernel * (1 - weight)).ravel(), n * CURVE_KNOTS)
                      + np.bincount((rows * CURVE_KNOTS + index + 1).ravel(), (kernel * weight).ravel(), n * CURVE_KNOTS))
            spread = spread.reshape(n, CURVE_KNOTS)
            solution = least_squares([(np.hstack([spread[:, 1:-1], ones]) * row_weight[:, None],
                                       (psi @ h - spread[:, -1]) * row_weight)])
            in_values = np.concatenate([[0.0], solution[:-1], [1.0]])
            bias = solution[-1]
            slope = np.diff(h)[out_index] / np.diff(out_knots)[out_index]
            row_weight = 1 / np.maximum(slope, 1e-3 / np.ptp(out_knots))
            row_weight /= row_weight.mean()
            rms = output_rms(in_values, kernel, bias)
            if rms < kept[0]:
                kept = (rms, in_values, kernel, bias)
        fitted.append((kept[0], k, window) + kept[1:])
    # Only the best size is refined (the L-BFGS is most of the rung's time); the others stay as
    # the alternation left them, for the held-out tiles to judge.
    best = min(range(len(fitted)), key=lambda i: fitted[i][0])
    return [refine_two_curves(window, targets, in_knots, in_values, kernel, bias, k, refine=i == best)
            for i, (_, k, window, in_values, kernel, bias) in enumerate(fitted)]


def refine_two_curves(window, targets, in_knots, in_values, kernel, bias, k: int, refine: bool = True) -> TwoCurveModel:
    """g fitted on the start's kernel response, then (``refine``) f's inner values, the kernel,
    the bias and g's values refined jointly by L-BFGS on the error in output units; the start
    is kept when refining does not lower it."""
    index, weight = hat_indices(window, in_knots)
    knots, values, start_rms = fit_output_curve(between_knots(in_values, index, weight) @ kernel + bias, targets)
    if not refine:
        return TwoCurveModel(in_knots, in_values, np.asarray(kernel).reshape(k, k), bias, knots, values)
    import torch

    tensor = lambda a: torch.tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    index_t, weight_t, t, knots_t = tensor(index).long(), tensor(weight), tensor(targets), tensor(knots)
    inner = tensor(in_values[1:-1]).requires_grad_(True)
    k_t, b_t, g_t = tensor(kernel).requires_grad_(True), tensor([bias]).requires_grad_(True), tensor(values).requires_grad_(True)
    zero, one = tensor([0.0]), tensor([1.0])

    def loss():
        f = torch.cat([zero, inner, one])
        response = between_knots(f, index_t, weight_t) @ k_t + b_t
        return torch.mean((_interp(response, knots_t, g_t) - t) ** 2)

    refined = minimise([inner, k_t, b_t, g_t], loss, REFINE_ITERATIONS)
    if math.sqrt(refined) < start_rms:
        in_values = np.concatenate([[0.0], inner.detach().numpy(), [1.0]])
        kernel, bias, values = k_t.detach().numpy(), float(b_t.detach()[0]), g_t.detach().numpy()
    return TwoCurveModel(in_knots, in_values, np.asarray(kernel).reshape(k, k), bias, knots, values)


def fit_curve(data: LadderData, seed: int) -> list[Model]:
    """Per size (3x3 up, while a size helps): ``g(k * x)`` and ``k1 * x + g(k2 * x)``. Each starts from the better of two
    kernels by the closed-form curve's residual (the linear kernel; the top quadratic kernel,
    which finds the kernel inside an even curve such as |.|), then is refined jointly."""
    candidates: list[Model] = []
    scores: list[float] = []  # best held-out RMS after each size
    for k in CURVE_SIZES:
        # A larger window only while the last one helped by more than 5% (or half a floor).
        if len(scores) >= 2 and scores[-2] - scores[-1] <= max(SIZE_TOLERANCE * data.noise_floor, 0.05 * scores[-2]):
            break
        patches, targets = windows(data.train, k, rows=SMOOTH_ROWS, seed=seed)
        flat = patches.reshape(len(patches), -1)
        lin, _ = linear_kernel(patches, targets)
        identity = np.zeros((k, k))
        identity[k // 2, k // 2] = 1.0
        # Skip paths: none; the linear fit; the input itself (a sharpen adds to the image).
        for skips in ([None], [lin, identity]):
            fitted = []
            for skip in skips:
                rest = targets - flat @ skip.reshape(-1) if skip is not None else targets
                starts = [linear_kernel(patches, rest)[0]]
                if k <= QUADRATIC_MAX_K:
                    starts.append(quadratic_kernels(patches, rest - rest.mean(), 1)[0])
                for start in starts:
                    if np.any(start):
                        fitted.append(curve_start(patches, targets, start, skip))
            if fitted:
                candidates.append(fit_curve_kernels(min(fitted, key=lambda f: f[1]), k))
        scores.append(min(heldout_rms(m, data.heldout) for m in candidates))
    return candidates


def fit_magnitude(data: LadderData, seed: int) -> list[Model]:
    """sqrt(sum_j (k_j * x)^2) for n = 1..3 kernels of 3x3 and 5x5: the quadratic fit's top
    eigenpairs, then refined on the outputs themselves. Gray filters only."""
    import torch

    if data.channels != 1:
        return []
    candidates = []
    for k in MAGNITUDE_SIZES:
        patches, targets = windows(data.train, k, rows=SMOOTH_ROWS, seed=seed)
        p, t = torch.from_numpy(patches.reshape(len(patches), -1)), torch.from_numpy(targets)
        top = quadratic_kernels(patches, targets, 3).reshape(3, -1)
        for n in (1, 2, 3):
            kernels = torch.from_numpy(top[:n].copy()).requires_grad_(True)
            # The closed-form start is exact for a true magnitude: a shorter refinement does.
            minimise([kernels], lambda: torch.mean((torch.sqrt(((p @ kernels.T) ** 2).sum(1) + 1e-12) - t) ** 2),
                   REFINE_ITERATIONS // 3)
            candidates.append(MagnitudeModel(kernels.detach().numpy().reshape(n, k, k)))
    return candidates


LIGHT_SIZES = (1, 3, 5, 7)


def full_scale(values: np.ndarray) -> float:
    """The full scale of stored values: 1 for float images in 0..1, 255 for 8 bits, 65535 above."""
    top = float(np.nanmax(values))
    scales = [1.0] + sorted(high for _, high in STORAGE_RANGE.values())
    return next((scale for scale in scales if top <= scale), scales[-1])


def fit_linear_light(data: LadderData, seed: int) -> list[Model]:
    """A kernel between the sRGB decode of the inputs and of the outputs, for sizes 1 to 7: least
    squares in linear light, each row weighted by how much an error there moves the encoded
    output (the encode's slope), so the fit minimises the error in the files' own units."""
    from img2kernel.colour import srgb_decode, srgb_encode_slope

    scale = full_scale(data.train.x)
    patches, targets = windows(data.train, max(LIGHT_SIZES), seed=seed)
    light, target = srgb_decode(patches / scale), srgb_decode(np.clip(targets, 0, None) / scale)
    weight = srgb_encode_slope(target)
    candidates = []
    for k in LIGHT_SIZES:
        m = (max(LIGHT_SIZES) - k) // 2
        kernel, bias = linear_kernel(light[:, m : m + k, m : m + k], target, weight)
        candidates.append(LinearLightModel(kernel, bias, scale))
    return candidates


def fit_rank(data: LadderData, seed: int) -> list[Model]:
    """Every rank of square and disk footprints of 3x3 to 7x7, recomputed on the training
    windows; per footprint the best rank, as is or with a least-squares affine step."""
    patches, targets = windows(data.train, max(RANK_SIZES), seed=seed)
    candidates = []
    for k in RANK_SIZES:
        m = (max(RANK_SIZES) - k) // 2
        window = patches[:, m : m + k, m : m + k]
        for footprint in ({np.ones((k, k), bool).tobytes(): np.ones((k, k), bool), disk(k // 2).tobytes(): disk(k // 2)}).values():
            ordered = np.sort(window[:, footprint], axis=1)
            plain = np.sqrt(np.mean((ordered - targets[:, None]) ** 2, axis=0))
            best = int(np.argmin(plain))
            design = np.stack([ordered, np.ones_like(ordered)], axis=2)  # (n, taps, 2)
            affine = []
            for r in range(ordered.shape[1]):
                (a, b), *_ = np.linalg.lstsq(design[:, r], targets, rcond=None)
                affine.append((float(np.sqrt(np.mean((a * ordered[:, r] + b - targets) ** 2))), a, b, r))
            rms, a, b, r = min(affine)
            if plain[best] <= rms + SIZE_TOLERANCE * data.noise_floor:
                candidates.append(RankModel(footprint, best))
            else:
                candidates.append(RankModel(footprint, r, scale=a, offset=b))
    return candidates


def unit_kernel(gains: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A gain map's (gains, kernel) with the scale moved into the gains: the kernel's taps sum to
    one (then a node's gain is the map's DC gain there), or, for a kernel that sums to zero, its
    largest gain is one."""
    total = float(kernel.sum())
    scale = total if abs(total) > 1e-6 * float(np.abs(kernel).sum()) else float(np.max(np.abs(gains))) or 1.0
    return gains * scale, kernel / scale


def fit_gain_map(window: np.ndarray, targets: np.ndarray, weights: np.ndarray, nodes: int) -> GainMapModel:
    """One kernel times a gain map (``weights``: the windows' node weights), by alternating least
    squares from the plain kernel: the gains for the kernel, then the kernel for the gains."""
    kernel, bias = linear_kernel(window, targets)
    ones = np.ones((len(targets), 1))
    for _ in range(FIELD_ROUNDS):
        response = window.reshape(len(window), -1) @ kernel.ravel()
        solution = least_squares([(np.hstack([weights * response[:, None], ones]), targets)])
        gain = weights @ solution[:-1]
        kernel, bias = linear_kernel(window * gain[:, None, None], targets)
    gains, kernel = unit_kernel(solution[:-1].reshape(nodes, nodes), kernel)
    return GainMapModel(gains, kernel, bias)


def fit_kernel_map(window: np.ndarray, targets: np.ndarray, weights: np.ndarray, nodes: int) -> KernelMapModel:
    """A kernel per node, blended by the windows' node ``weights``: one linear system, built in row blocks."""
    k = window.shape[-1]
    flat = window.reshape(len(window), -1)

    def blocks():
        for start in range(0, len(flat), FIELD_CHUNK):
            part, w = flat[start : start + FIELD_CHUNK], weights[start : start + FIELD_CHUNK]
            design = (w[:, :, None] * part[:, None, :]).reshape(len(part), -1)
            yield np.hstack([design, np.ones((len(part), 1))]), targets[start : start + FIELD_CHUNK]

    solution = least_squares(blocks())
    return KernelMapModel(solution[:-1].reshape(nodes, nodes, k, k), float(solution[-1]))


def tile_variation(tiles: Tiles, k: int = VARIATION_KSIZE) -> float | None:
    """How much a filter changes with the place, from tile-wise fits: one k x k least-squares
    kernel for all tiles, then per tile the gain and the extra sharpening (the weight of the
    Laplacian of that kernel's response) that fit the tile best (two numbers a photo's content
    pins down, where a tile's own kernel would trade its taps off), each fitted by a quadratic
    in the tile's centre (fractions of its image). Returns the larger share of the two numbers'
    variance across tiles that the quadratics explain: near 0 when they change with the content,
    not the place (one kernel everywhere, or a nonlinear filter), near 1 for vignetting or a
    blur that grows towards the corners. None when the fitted tiles lie at fewer than
    ``VARIATION_PLACES`` places (a colour image's planes share theirs): too few to tell."""
    import cv2

    from img2kernel.models.affine import correlate_valid
    from img2kernel.models.field import position

    patches, targets = windows(tiles, k, rows=FIT_ROWS)
    kernel, bias = linear_kernel(patches, targets)
    cut = MARGIN - k // 2
    features, centres, side = [], [], tiles.y.shape[1]
    for x, y, mask, (top, left, height, width) in zip(tiles.x, tiles.y, tiles.mask, tiles.where):
        response = correlate_valid(x[cut : x.shape[0] - cut, cut : x.shape[1] - cut], kernel, np.float64) + bias
        sharpening = cv2.Laplacian(np.pad(response, 1, mode="reflect"), cv2.CV_64F)[1:-1, 1:-1]
        use = mask.astype(bool)
        # no intercept of its own: a tile's brightness then says its gain, however flat the tile
        design = np.stack([response[use], sharpening[use]], axis=1)
        if use.sum() < 64 or np.std(design[:, 0]) <= 1e-9 or np.std(design[:, 1]) <= 1e-9:
            continue
        features.append(np.linalg.lstsq(design, y[use], rcond=None)[0])
        centres.append((position(top + side / 2, height), position(left + side / 2, width)))
    if len(set(centres)) < VARIATION_PLACES:
        return None
    values, (v, u) = np.asarray(features), np.asarray(centres).T
    basis = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=1)
    smooth = basis @ np.linalg.lstsq(basis, values, rcond=None)[0]
    variance = np.sum((values - values.mean(axis=0)) ** 2, axis=0)
    explained = 1 - np.sum((values - smooth) ** 2, axis=0) / np.maximum(variance, 1e-300)
    # a number that does not change (one kernel everywhere) explains nothing
    return float(max(0.0, *(e for e, v in zip(explained, variance) if v > 1e-12 * len(values))))


class NotTried(Exception):
    """A rung that the pairs' own evidence says is not worth fitting; the message says why."""


def fit_field(data: LadderData, seed: int) -> list[Model]:
    """Gain maps (one kernel of 1x1 to 7x7 times a smooth gain, on 3x3 to 9x9 nodes) and kernel
    maps (a kernel per node, on 3x3 and 5x5 nodes), from windows that know where they lie;
    :class:`NotTried` when tile-wise fits do not change with the place (:func:`tile_variation`)."""
    from img2kernel.models.field import node_weights

    variation = tile_variation(data.train)
    if variation is not None and variation < VARIATION_MIN:
        raise NotTried(f"tile-wise fits do not change with the place (a quadratic in the position explains "
                       f"{variation:.0%} of how their gain and sharpening differ; at least {VARIATION_MIN:.0%} is asked)")

    patches, targets = windows(data.train, max(FIELD_SIZES), FIELD_ROWS, seed)
    rows, columns = window_positions(data.train, FIELD_ROWS, seed)
    candidates: list[Model] = []
    for nodes in GAIN_NODES:
        weights = node_weights(rows, columns, nodes)
        for k in FIELD_SIZES:
            m = (max(FIELD_SIZES) - k) // 2
            window = patches[:, m : m + k, m : m + k]
            candidates.append(fit_gain_map(window, targets, weights, nodes))
            if k > 1 and nodes in FIELD_NODES:  # a 1x1 kernel map is the 1x1 gain map
                candidates.append(fit_kernel_map(window, targets, weights, nodes))
    return candidates


def fit_cnn(data: LadderData, seed: int) -> list[Model]:
    """The fallback: 3x3 conv, ReLU, 3x3 conv, ReLU, 1x1 conv, plus a 5x5 linear path started
    at the least-squares kernel; full-batch L-BFGS for ``CNN_ITERATIONS``."""
    import torch

    torch.manual_seed(seed)
    patches, targets = windows(data.train, 5, rows=CNN_ROWS, seed=seed)
    scale = float(np.std(patches)) or 1.0
    lin, bias = linear_kernel(patches, targets)
    x = torch.from_numpy(patches / scale)[:, None]
    t = torch.from_numpy(targets / scale)
    w1 = (torch.randn(WIDTH, 1, 3, 3, dtype=torch.float64) / 3).requires_grad_(True)
    b1 = torch.zeros(WIDTH, dtype=torch.float64, requires_grad=True)
    w2 = (torch.randn(WIDTH, WIDTH, 3, 3, dtype=torch.float64) / (3 * WIDTH**0.5)).requires_grad_(True)
    b2 = torch.zeros(WIDTH, dtype=torch.float64, requires_grad=True)
    w3 = torch.zeros(WIDTH, dtype=torch.float64, requires_grad=True)
    b3 = torch.tensor([bias / scale], dtype=torch.float64, requires_grad=True)
    skip = torch.from_numpy(lin.copy()).requires_grad_(True)
    conv = torch.nn.functional.conv2d

    def forward():
        hidden = torch.relu(conv(torch.relu(conv(x, w1, b1)), w2, b2))[:, :, 0, 0]
        return hidden @ w3 + (x[:, 0] * skip).sum((1, 2)) + b3

    minimise([w1, b1, w2, b2, w3, b3, skip], lambda: torch.mean((forward() - t) ** 2), CNN_ITERATIONS)
    detach = lambda v: v.detach().numpy()  # noqa: E731
    return [CnnModel(detach(w1)[:, 0], detach(b1), detach(w2), detach(b2), detach(w3), detach(b3), detach(skip), scale)]


# The rungs after ``linear``, in order: (rung, fit). Adding a rung: its model module and a line here.
# In order of learned weights: a rank filter has none (its footprint and rank are found, not
# learned), a linear-light model a kernel's (the curves are the sRGB standard's), a curve
# model a kernel and 24 curve values, a magnitude n kernels, two curves a kernel and 15 + 24
# curve values, a gain map a kernel and a gain per
# node, a kernel map a kernel per node (the place in the image: shift-invariant rungs first).
RUNGS: list[tuple[str, Callable[[LadderData, int], list[Model]]]] = [
    ("rank", fit_rank),
    ("linear light", fit_linear_light),
    ("curve", fit_curve),
    ("magnitude", fit_magnitude),
    ("two curves", fit_two_curves),
    ("spatially varying", fit_field),
    ("cnn", fit_cnn),
]
