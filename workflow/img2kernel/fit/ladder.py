"""Beyond one kernel: the ladder of models, each the simplest explanation at its step.

When the linear verdict rejects a filter, the rungs after ``linear`` are fitted on the same
pairs (docs/design.md, "The ladder"), in order of learned weights:

- ``rank``: an order statistic over a square or disk footprint (median, erosion,
  dilation, a percentile), optionally followed by an affine step, found by recomputing it;
- ``curve``: a kernel, then a learned piecewise-linear curve, alone or beside a linear
  skip path (gamma after a blur, |derivative|, clipped edges, thresholded unsharp masking);
- ``magnitude``: the square root of a sum of squares of n = 1..3 kernels;
- ``cnn``: a small network, the fallback, reported as a fit and never as an identification.

Every candidate is scored by its own prediction (:meth:`Model.predict_valid`) on held-out
tiles, as RMS in the output's units next to the storage's noise floor. The chosen model is
the first rung whose held-out residual is within ``LINEAR_FACTOR`` noise floors; when none
is, the best held-out PSNR, unless an earlier (smaller) rung is within ``PSNR_TOLERANCE_DB``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from img2kernel.models import AffineKernel, CnnModel, CurveModel, MagnitudeModel, Model, RankModel
from img2kernel.models.cnn import WIDTH
from img2kernel.models.curve import KNOTS
from img2kernel.models.rank import disk
from img2kernel.fit.pairs import Pairs
from img2kernel.thresholds import LINEAR_FACTOR, PSNR_TOLERANCE_DB, SIZE_TOLERANCE, STORAGE_RANGE, noise_floor
from img2kernel.evaluate.metrics import heldout_rms as blocks_rms, psnr_db
from img2kernel.fit.lstsq import kernels_of_quadratic, least_squares, quadratic_features
from img2kernel.fit.optim import minimise
from img2kernel.fit.smallest import smallest_forms

LINEAR = AffineKernel.rung  # the first rung: one kernel, the least-squares fit
MARGIN = 3  # input pixels every tile carries around its outputs: enough for a 7x7 window
TILE = 48
CURVE_SIZES = (3, 5, 7)  # kernel sides the curve rung tries
MAGNITUDE_SIZES = (3, 5)
RANK_SIZES = (3, 5, 7)  # footprint sides (cheap: every rank is recomputed on the same windows)
FIT_ROWS = 40_000  # windows the rank rung recomputes
SMOOTH_ROWS = 8_000  # windows the gradient-fitted rungs (curve, magnitude, cnn) train on
# L-BFGS iterations (not seconds: the same pairs give the same ladder on any machine and load)
REFINE_ITERATIONS = 200  # joint refinement of one curve or magnitude candidate (about 0.4 s here)
TRAIN_TILES, HELDOUT_TILES = 400, 200
CNN_ITERATIONS = 250  # the fallback network (about 3 s here)
CNN_ROWS = 6_000
QUADRATIC_MAX_K = 5  # the quadratic start fits K^2 (K^2 + 1) / 2 products: 1,225 at 7x7, too slow to pay


@dataclass
class Tiles:
    """Square tiles of single planes: inputs (n, T + 2m, T + 2m), outputs (n, T, T), usable mask (n, T, T)."""

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray

    @property
    def pixels(self) -> int:
        return int(self.mask.sum())


@dataclass
class LadderData:
    """What the rungs are fitted and scored on: planes of one channel each (a colour filter's
    channels are pooled: every rung after ``linear`` applies alike to each channel)."""

    train: Tiles
    heldout: Tiles
    channels: int
    noise_floor: float
    peak: float  # the output's range, for PSNR
    storage: str


class NoTiles(ValueError):
    """The pairs hold no tile the rungs after ``linear`` could be fitted or scored on."""


def sample_tiles(pairs: Pairs, split: str, max_tiles: int, seed: int) -> Tiles:
    """Non-overlapping tiles of ``split``'s usable pixels (at most ``max_tiles``, a seeded sample)."""
    rng = np.random.default_rng(seed)
    candidates = []
    for index, (x, y) in enumerate(zip(pairs.inputs, pairs.outputs)):
        usable = pairs.usable(index, split)
        height, width = usable.shape
        side = min(TILE, height - 2 * MARGIN, width - 2 * MARGIN)
        if side < 8:
            continue
        for top in range(MARGIN, height - MARGIN - side + 1, side):
            for left in range(MARGIN, width - MARGIN - side + 1, side):
                if usable[top : top + side, left : left + side].mean() > 0.5:
                    for c in range(x.shape[2]):
                        candidates.append((index, c, top, left, side))
    if not candidates:
        raise NoTiles(f"no {split} tile of at least 8x8 usable pixels (images {pairs.inputs[0].shape[1]}x"
                      f"{pairs.inputs[0].shape[0]} and smaller, less a {MARGIN}-pixel margin)")
    side = min(c[4] for c in candidates)
    chosen = rng.permutation(len(candidates))[:max_tiles]
    xs, ys, masks = [], [], []
    for i in sorted(chosen):
        index, c, top, left, _ = candidates[i]
        xs.append(pairs.inputs[index][top - MARGIN : top + side + MARGIN, left - MARGIN : left + side + MARGIN, c])
        ys.append(pairs.outputs[index][top : top + side, left : left + side, c])
        masks.append(pairs.usable(index, split)[top : top + side, left : left + side])
    return Tiles(np.asarray(xs, np.float64), np.nan_to_num(np.asarray(ys, np.float64)), np.asarray(masks))


def ladder_data(pairs: Pairs, heldout_split: str, noise_floor: float, seed: int = 0) -> LadderData:
    """Tiles for the rungs (pairs with as many output channels as input channels: no rung after
    ``linear`` maps 3 channels to 1); :class:`NoTiles` when the images leave none."""
    return LadderData(sample_tiles(pairs, "train", TRAIN_TILES, seed), sample_tiles(pairs, heldout_split, HELDOUT_TILES, seed + 1),
                      pairs.c_in, noise_floor, output_peak(pairs), pairs.output_storage)


def output_peak(pairs: Pairs) -> float:
    """The outputs' range for PSNR: the integer file's (255, 65535), else the values' own."""
    low, high = STORAGE_RANGE.get(pairs.output_storage, (None, None))
    if low is None:
        low = min(float(np.nanmin(y)) for y in pairs.outputs)
        high = max(float(np.nanmax(y)) for y in pairs.outputs)
    return (high - low) or 1.0


def windows(tiles: Tiles, k: int, rows: int = FIT_ROWS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, k, k) input windows around a seeded sample of usable output pixels, and their (n,) targets."""
    rng = np.random.default_rng(seed)
    t, r, c = np.nonzero(tiles.mask)
    pick = rng.permutation(len(t))[:rows]
    t, r, c = t[pick], r[pick] + MARGIN, c[pick] + MARGIN
    h = k // 2
    dy, dx = np.mgrid[-h : h + 1, -h : h + 1]
    patches = tiles.x[t[:, None, None], r[:, None, None] + dy, c[:, None, None] + dx]
    return patches, tiles.y[t, r - MARGIN, c - MARGIN]


def heldout_rms(model: Model, tiles: Tiles) -> float:
    """RMS of (prediction - output) over the tiles' usable pixels, with the model's own output step."""
    return blocks_rms(model, zip(tiles.x, tiles.y, tiles.mask))


# ----------------------------------------------------------------------------- rung fits


def quadratic_kernels(patches: np.ndarray, targets: np.ndarray, n: int) -> np.ndarray:
    """n kernels k_j with targets^2 ~ sum_j (k_j . p)^2 (the magnitude model's closed form), as (n, K, K)."""
    k = patches.shape[-1]
    p = patches.reshape(len(patches), -1)
    rows = min(len(p), max(2000, 8_000_000 // (k * k * (k * k + 1))))
    return kernels_of_quadratic(least_squares([(quadratic_features(p[:rows]), targets[:rows] ** 2)]), k, n)


def linear_kernel(patches: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares (K, K) kernel and bias of the windows."""
    p = patches.reshape(len(patches), -1)
    solution = least_squares([(np.hstack([p, np.ones((len(p), 1))]), targets)])
    return solution[:-1].reshape(patches.shape[1:]), float(solution[-1])


def _interp(z, knots, values):
    """Differentiable piecewise-linear curve through (knots, values), its end segments extended
    (:meth:`CurveModel.curve`'s rule)."""
    import torch

    index = torch.clamp(torch.searchsorted(knots, z.detach(), right=True) - 1, 0, len(knots) - 2)
    left, right = knots[index], knots[index + 1]
    weight = (z - left) / (right - left)
    return values[index] * (1 - weight) + values[index + 1] * weight


def curve_start(patches: np.ndarray, targets: np.ndarray, kernel: np.ndarray, skip: np.ndarray | None):
    """For a fixed start kernel (and skip kernel): the knots over the response's range and the
    curve's values by least squares (the curve is linear in them). Returns (state, rms)."""
    import torch

    p = torch.from_numpy(patches.reshape(len(patches), -1))
    t = torch.from_numpy(targets)
    k = torch.from_numpy(kernel.reshape(-1).copy())
    k = k / (float(torch.std(p @ k)) or 1.0)
    s = torch.from_numpy(skip.reshape(-1).copy()) if skip is not None else None
    z = p @ k
    # Knots at quantiles of the response: dense where the pixels are (a threshold near 0 is
    # resolved), and spread over its whole range (0.1% to 99.9%).
    knots = torch.quantile(z, torch.linspace(0.001, 0.999, KNOTS, dtype=torch.float64))
    if knots[0] < 0 < knots[-1]:  # a knot at zero: the kink of |.|, a clip or a threshold at 0
        knots[torch.argmin(knots.abs())] = 0.0
    knots = torch.unique(knots)
    if len(knots) < 2:
        knots = torch.linspace(float(z.min()) - 1, float(z.max()) + 1, KNOTS, dtype=torch.float64)
    rest = t - p @ s if s is not None else t
    basis = _hat_basis(z, knots)
    values = torch.linalg.lstsq(basis, rest[:, None]).solution[:, 0]
    rms = float(torch.sqrt(torch.mean((basis @ values - rest) ** 2)))
    return (p, t, k, s, knots, values), rms


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


def _hat_basis(z, knots):
    """(n, M): the piecewise-linear interpolation weights of each z on the knots (end segments extended)."""
    import torch

    index = torch.clamp(torch.searchsorted(knots, z, right=True) - 1, 0, len(knots) - 2)
    weight = (z - knots[index]) / (knots[index + 1] - knots[index])
    basis = torch.zeros(len(z), len(knots), dtype=torch.float64)
    basis[torch.arange(len(z)), index] = 1 - weight
    basis[torch.arange(len(z)), index + 1] += weight
    return basis


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
# In order of learned weights: a rank filter has none (its footprint and rank are found,
# not learned), a curve model a kernel and 24 curve values, a magnitude n kernels.
RUNGS: list[tuple[str, Callable[[LadderData, int], list[Model]]]] = [
    ("rank", fit_rank),
    ("curve", fit_curve),
    ("magnitude", fit_magnitude),
    ("cnn", fit_cnn),
]


# ----------------------------------------------------------------------------- climbing


@dataclass
class Ladder:
    rows: list[dict]
    chosen: str
    model: Model
    seconds: float
    notes: list[str] = field(default_factory=list)
    smallest: list[dict] = field(default_factory=list)  # see img2kernel.fit.smallest

    def summary(self) -> dict:
        return {"model": self.chosen, "ladder": self.rows, "ladder_seconds": self.seconds, "ladder_notes": self.notes,
                "smallest_forms": self.smallest}


def ladder_fields(model: Model, info: dict, expected_rung: str | None = None) -> dict:
    """The evaluation JSON's fields about the chosen model and its ladder, from the train job's
    sidecar (what :meth:`Ladder.summary` wrote) and the model file's model; ``expected_rung``:
    the rung of the filter's declared structure (None for pairs, whose structure is unknown)."""
    return {
        "expected_rung": expected_rung,
        "model": info.get("model", LINEAR),
        "model_class": model.name,
        "model_description": model.describe(),
        "ladder": info.get("ladder", []),
        "ladder_notes": info.get("ladder_notes", []),
        "smallest_forms": info.get("smallest_forms", []),
    }


def ladder_sentence(rows: list[dict], chosen: str, expected_rung: str | None = None) -> str:
    """The ladder's answer as a clause of the verdict: what the chosen rung is and how close
    it comes, and, when the filter's true structure is known, whether that is it. Empty when
    the ladder stopped at ``linear``."""
    row = next((r for r in rows if r["model"] == chosen), None)
    if row is None or chosen == LINEAR and len(rows) == 1:
        return ""
    found = ""
    if expected_rung is not None:
        found = "; the true structure" if chosen == expected_rung else f"; its true structure is a {expected_rung} model"
    if row["adequate"]:
        return (f"; it is a {row['description']} ({chosen} model, held-out residual "
                f"{row['residual_in_floors']:.2f}x the floor{found})")
    kind = "closest, not exact" if row.get("identifies", True) else "a fit, not an identification"
    return (f"; no rung reaches the floor: the {chosen} model comes closest ({row['description']}, "
            f"{row['psnr_db']:.1f} dB held out, {kind}{found})")


def row_of(rung: str, model: Model, residual: float, noise_floor: float, peak: float, seconds: float, origin: str) -> dict:
    """One rung's line of the ladder: its model in words, weights, held-out RMS (and in noise floors), PSNR, seconds."""
    return {
        "model": rung,
        "description": model.describe(),
        "params": model.n_parameters,
        "residual": residual,
        "residual_in_floors": residual / noise_floor if noise_floor > 0 else math.inf,
        "psnr_db": psnr_db(residual, peak),
        "seconds": seconds,
        "adequate": residual <= LINEAR_FACTOR * noise_floor,
        "identifies": model.identifies,
        "origin": origin,
    }


def best_candidate(candidates: list[Model], data: LadderData) -> tuple[Model, float]:
    """The smallest candidate (fewest parameters first) within ``SIZE_TOLERANCE`` floors of the best held-out RMS."""
    scored = sorted(((m, heldout_rms(m, data.heldout)) for m in candidates), key=lambda s: (s[0].n_parameters, s[1]))
    best = min(rms for _, rms in scored)
    return next((m, rms) for m, rms in scored if rms**2 - best**2 <= (SIZE_TOLERANCE * data.noise_floor) ** 2)


def choose(rows: list[dict]) -> int:
    """The first adequate rung; else the best PSNR, or an earlier rung within ``PSNR_TOLERANCE_DB`` of it."""
    for i, row in enumerate(rows):
        if row["adequate"]:
            return i
    best = max(row["psnr_db"] for row in rows)
    return next(i for i, row in enumerate(rows) if row["psnr_db"] >= best - PSNR_TOLERANCE_DB)


@dataclass
class Given:
    """A model a rung does not need to fit: the linear fit, or the filter's own trained model."""

    model: Model
    residual: float | None = None  # held-out RMS; None: scored on the ladder's held-out tiles
    seconds: float = 0.0
    origin: str = "fitted"


def climb(data: LadderData, given: dict[str, Given], seed: int = 0,
          rungs: list[tuple[str, Callable]] | None = None) -> Ladder:
    """Climb from ``linear`` (which must be given) until a rung reaches the noise floor.

    A rung in ``given`` is not fitted: its model is scored as it is (a trained model of the
    filter's declared structure stands on its own rung). Rungs above the first adequate one
    are not tried: the simplest adequate explanation is the answer.
    """
    started = time.perf_counter()
    rows, models, notes = [], [], []
    for rung, fit in [(LINEAR, None)] + list(rungs or RUNGS):
        step = time.perf_counter()
        if rung in given:
            item = given[rung]
            residual = item.residual if item.residual is not None else heldout_rms(item.model, data.heldout)
            model, seconds, origin = item.model, item.seconds + time.perf_counter() - step, item.origin
        elif fit is None:
            raise ValueError("climb needs the linear fit")
        else:
            candidates = fit(data, seed)
            if not candidates:
                notes.append(f"{rung}: not tried for a {data.channels}-channel filter")
                continue
            model, residual = best_candidate(candidates, data)
            seconds, origin = time.perf_counter() - step, "fitted"
        rows.append(row_of(rung, model, residual, data.noise_floor, data.peak, seconds, origin))
        models.append(model)
        if rows[-1]["adequate"]:
            break
    index = choose(rows)
    # A colour pairs filter's linear fit reads every channel at once, not the pooled planes:
    # its smallest forms are scored on the pairs themselves (ladder_for_pairs).
    smallest = (smallest_forms(models[index], lambda m: heldout_rms(m, data.heldout), data.noise_floor, data.peak)
                if models[index].c_in == 1 else [])
    return Ladder(rows, rows[index]["model"], models[index], time.perf_counter() - started, notes, smallest)


def single_rung(rung: str, model: Model, residual: float, noise_floor: float, peak: float, seconds: float,
                origin: str = "fitted") -> Ladder:
    """The ladder of a filter the first rung explains: nothing above it is tried."""
    return Ladder([row_of(rung, model, residual, noise_floor, peak, seconds, origin)], rung, model, 0.0)


def pairs_from_stores(inputs_folder, targets_folder, max_images: int = 12, output_storage: str = "float32") -> Pairs:
    """Train and val images of our own stores as :class:`Pairs` (the test split stays unseen);
    ``output_storage`` ``uint8`` when the targets hold 8-bit values (``output: uint8``)."""
    from img2kernel.sources.pairs import SPLIT_CODES
    from img2kernel.store.shards import Store

    inputs, targets = Store(inputs_folder), Store(targets_folder)
    keys, xs, ys, codes = [], [], [], []
    for split in ("train", "val"):
        for key in inputs.keys(split)[:max_images]:
            x = inputs.array(key).astype(np.float64)
            keys.append(key)
            xs.append(x[..., None])
            ys.append(targets.array(key).astype(np.float64)[..., None])
            codes.append(np.full(x.shape, SPLIT_CODES[split], np.uint8))
    return Pairs(keys, xs, ys, codes, "float32", output_storage)


def ladder_for_pairs(pairs: Pairs, fit, seed: int = 0) -> Ladder:
    """The ladder of a ``pairs`` filter after its linear fit (:class:`img2kernel.fit.pairs.PairsFit`).

    A linear verdict ends it at ``linear``. Otherwise the rungs are climbed on tiles of the
    train split, scored on the split the linear fit was judged on; the chosen model gets the
    output file's rounding and, for colour pairs, applies to every channel.
    """
    from img2kernel.fit.pairs import heldout_rms as pairs_heldout_rms

    def linear_only(note: str | None = None) -> Ladder:
        ladder = single_rung(LINEAR, fit.model, fit.residual_rms, fit.noise_floor, output_peak(pairs), fit.seconds)
        if note:
            ladder.notes.append(note)
        ladder.smallest = linear_smallest()
        return ladder

    def linear_smallest() -> list[dict]:
        return smallest_forms(fit.model.with_output("float"),
                              lambda m: pairs_heldout_rms(m, pairs, fit.residual_split, m.halo),
                              fit.noise_floor, output_peak(pairs))

    if fit.linear:
        return linear_only()
    if pairs.c_in != pairs.c_out:
        return linear_only(f"no rung after linear maps {pairs.c_in} channels to {pairs.c_out}: nothing more was tried")
    try:
        data = ladder_data(pairs, fit.residual_split, fit.noise_floor, seed)
    except NoTiles as error:
        return linear_only(f"the rungs after linear were not tried: {error}")
    ladder = climb(data, {LINEAR: Given(fit.model.with_output("float"), fit.residual_rms, fit.seconds)}, seed)
    if ladder.chosen == LINEAR:
        ladder.model = fit.model
        if not ladder.smallest:  # climb scored only one-channel models on its planes
            ladder.smallest = linear_smallest()
    else:
        model = ladder.model.with_channels(pairs.c_in) if pairs.c_in > 1 else ladder.model
        ladder.model = model.with_output(fit.model.output)
    return ladder


def ladder_for_filter(inputs_folder, targets_folder, trained: Model | None, linear: Model, trained_seconds: float,
                      seed: int = 0, output_storage: str = "float32") -> Ladder:
    """The ladder of one of our nonlinear filters, on its stores' train and val images.

    ``linear`` (the least-squares kernel) stands on the first rung and the trained model
    of the filter's declared structure on its own rung (:attr:`Model.ladder_rung`), scored
    as they are; the other rungs are fitted, so a median or a kernel with a ``then`` step
    is identified by the ladder itself. ``trained`` is None when the filter's structure is
    not one the trainer holds (a ``then`` step). ``output_storage``: ``uint8`` for targets
    rounded to 8 bits (``output: uint8``), whose noise floor is the rounding's.
    """

    pairs = pairs_from_stores(inputs_folder, targets_folder, output_storage=output_storage)
    floor = noise_floor(pairs.output_storage, pairs.output_rms())
    data = ladder_data(pairs, "val", floor, seed)
    given = {LINEAR: Given(linear, origin="least squares")}
    if trained is not None:
        given[trained.ladder_rung] = Given(trained, seconds=trained_seconds, origin="trained")
    return climb(data, given, seed)
