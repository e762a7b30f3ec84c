"""Fit a resize by any ratio: a continuous kernel per axis (docs/design.md, "Geometry").

Outputs that no integer placement puts on their input's grid (a resize by 3/4, an enlargement
by 2, 512 to 341) keep their own grid (:class:`img2kernel.sources.geometry.Placement` with a
``scale``). Each output pixel then reads its input at its own phase, so the kernel of each axis
is fitted as a continuous function of the offset in input pixels: its values at knots, linearly
interpolated. Where the ratio repeats after a few output pixels the knots are exactly the
offsets the phases sample (the polyphase taps, nothing interpolated); otherwise they are dense.
A separable resize is linear in each axis's values when the other is fixed, so the two are
solved in turn (alternating least squares, every solve :func:`img2kernel.fit.lstsq.least_squares`).
The normalisation a tool applies to each output pixel's weights is held fixed within a solve and
updated after it. The support (in units of the factor), the centre convention, the normalisation
and an 8-bit rounding between the passes are chosen by the held-out residual, the support as a
kernel size is: the smallest that a larger one does not beat by the evidence.
"""

from __future__ import annotations

import math
import time

import numpy as np

from img2kernel.evaluate.resamplers import RESAMPLERS, per_phase_normalised
from img2kernel.fit import jpeg
from img2kernel.fit.lstsq import FitSample, least_squares
from img2kernel.models.resample import BETWEEN_PASSES, CONVENTIONS, ResampleModel, axis_matrix, centres, window
from img2kernel.thresholds import LINEAR_FACTOR, as_good, size_is_enough

MAX_PHASES = 24  # more distinct phases than this on an axis: dense knots
DENSE_STEP = 1 / 8  # knot spacing of a continuous kernel, in input pixels
SUPPORTS = (1, 2, 3)  # reaches tried, in units of the support's widening (box/triangle, cubics, Lanczos 3)
SAMPLED = 160  # output rows and columns per pair the alternation reads (its rows: SAMPLED^2 pixels a pair at most)
# Alternations of the two axes' solves: to screen the conventions and normalisations at the widest
# support, then at each support from the screened kernel (a separable fit from a close start
# settles in a few).
SCREEN_ROUNDS = 3
ROUNDS = 4
# Named resamplers whose residuals are this close (relative) give the pixels the same taps, up to the
# files' noise: the catalogue's earlier one is said.
NAMED_TIE = 0.01
SMOOTHING = 1e-5  # weight of the second differences of dense knots, relative to the mean diagonal of the sums


def resampling(pairs) -> bool:
    """Whether the outputs are on their own grid (a resize by a ratio no integer placement gives)."""
    return any(p.scale is not None for p in pairs.placements)


def _axis_centres(pairs, axis: int, convention: str) -> list[np.ndarray]:
    return [centres(x.shape[axis], y.shape[axis], convention) for x, y in zip(pairs.inputs, pairs.outputs)]


def knots(all_centres: list[np.ndarray], reach: float) -> tuple[np.ndarray, bool]:
    """(knots, dense) for an axis whose output pixels sit at ``all_centres``: the sampled offsets
    within ``reach`` when the phases are few, else a dense grid of :data:`DENSE_STEP` whose ends
    (at +-reach) are the kernel's zeros."""
    phases = np.unique(np.round(np.concatenate([np.mod(-c, 1.0) for c in all_centres]), 9) % 1.0)
    if phases.size <= MAX_PHASES:
        whole = np.arange(-math.ceil(reach) - 1, math.ceil(reach) + 2)
        found = np.unique(np.round((whole[:, None] + phases[None, :]).ravel(), 9))
        return found[np.abs(found) < reach - 1e-9], False
    steps = int(math.ceil(reach / DENSE_STEP))
    return np.arange(-steps, steps + 1) * DENSE_STEP, True


def _basis(offsets: np.ndarray, free: np.ndarray, c: np.ndarray, size_in: int):
    """Sparse (len(free) * n, size_in): row m * n + i holds output pixel i's weights on input pixels
    for a kernel that is the hat function of knot ``free[m]``."""
    import scipy.sparse

    positions, d = window(c, offsets)
    rows, cols, values = [], [], []
    for m, k in enumerate(free):
        hat = np.interp(d, offsets, (np.arange(offsets.size) == k).astype(np.float64), left=0.0, right=0.0)
        i, j = np.nonzero(hat)
        rows.append(m * c.size + i)
        cols.append(positions[i, j])
        values.append(hat[i, j])
    rows, cols, values = (np.concatenate(v) for v in (rows, cols, values))
    inside = (cols >= 0) & (cols < size_in)  # only interior pixels are fitted: the rest never read
    return scipy.sparse.csr_matrix((values[inside], (rows[inside], cols[inside])), shape=(free.size * c.size, size_in))


def _interior(c: np.ndarray, offsets: np.ndarray, size_in: int) -> np.ndarray:
    """Output pixels whose whole kernel lies inside the input: no border rule read."""
    return (c + offsets[0] >= 0) & (c + offsets[-1] <= size_in - 1)


def interior_pixels(model: ResampleModel, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> np.ndarray:
    """(h, w) bool: the output pixels whose whole kernel, on both axes, lies inside the input."""
    rows, columns = (_interior(centres(input_shape[a], output_shape[a], model.convention), knots, input_shape[a])
                     for a, knots in enumerate((model.row_offsets, model.column_offsets)))
    return rows[:, None] & columns[None, :]


class _Problem:
    """One axis pair of knot sets on the pairs' sampled interior pixels, for one convention."""

    def __init__(self, pairs, split: str, convention: str, reach: tuple[float, float], seed: int):
        rng = np.random.default_rng(seed)
        self.pairs, self.convention = pairs, convention
        self.knots, self.dense, self.samples = [], [], []
        for axis in (0, 1):
            offsets, dense = knots(_axis_centres(pairs, axis, convention), reach[axis])
            self.knots.append(offsets)
            self.dense.append(dense)
        for index, (x, y) in enumerate(zip(pairs.inputs, pairs.outputs)):
            chosen = []
            for axis in (0, 1):
                c = centres(x.shape[axis], y.shape[axis], convention)
                inner = np.flatnonzero(_interior(c, self.knots[axis], x.shape[axis]))
                if inner.size > SAMPLED:
                    inner = np.sort(rng.choice(inner, SAMPLED, replace=False))
                chosen.append(inner)
            use = pairs.usable(index, split)[np.ix_(chosen[0], chosen[1])] if all(a.size for a in chosen) else None
            if use is not None and use.any():
                self.samples.append((index, chosen, use))
        # free knots: all, but the ends of a dense grid (the kernel is zero there)
        self.free = [np.arange(1, k.size - 1) if d else np.arange(k.size) for k, d in zip(self.knots, self.dense)]

    def weights(self, axis: int, taps: np.ndarray, index: int, normalised: bool, rule: str = "zero"):
        x, y = self.pairs.inputs[index], self.pairs.outputs[index]
        return axis_matrix(self.knots[axis], taps, x.shape[axis], y.shape[axis], self.convention, normalised, rule)

    def solve_axis(self, axis: int, taps: list[np.ndarray], normalised: bool) -> tuple[np.ndarray, np.ndarray]:
        """New taps of ``axis`` (and the offsets) with the other axis's taps fixed."""
        other = 1 - axis
        free = self.free[axis]
        channels = self.pairs.c_out

        seen = {"power": 0.0, "columns": 0}

        def blocks():
            for index, chosen, use in self.samples:
                x, y = self.pairs.inputs[index], self.pairs.outputs[index]
                fixed = self.weights(other, taps[other], index, normalised)[chosen[other]]
                c = centres(x.shape[axis], y.shape[axis], self.convention)[chosen[axis]]
                basis = _basis(self.knots[axis], free, c, x.shape[axis])
                scale = 1.0
                if normalised:  # this axis's own normaliser, from its current taps
                    sums = np.asarray(self.weights(axis, taps[axis], index, False)[chosen[axis]].sum(axis=1)).ravel()
                    scale = np.where(np.abs(sums) > 1e-12, sums, 1.0)
                rows_use = use if axis == 0 else use.T
                for ch in range(channels):
                    plane = np.asarray(x[..., min(ch, x.shape[2] - 1)], dtype=np.float64)
                    along = fixed @ (plane if axis == 0 else plane.T).T  # (the other axis's outputs, this axis's inputs)
                    features = (basis @ along.T).reshape(free.size, c.size, -1) / np.reshape(scale, (1, -1, 1))
                    target = np.asarray(y[..., ch], dtype=np.float64)[np.ix_(chosen[0], chosen[1])]
                    target = target if axis == 0 else target.T
                    design = features[:, rows_use].T
                    seen["power"] += float(np.sum(np.square(design)))
                    seen["columns"] += design.shape[1]
                    bias = np.zeros((design.shape[0], channels))
                    bias[:, ch] = 1.0
                    yield np.hstack([design, bias]), target[rows_use]
            if self.dense[axis]:  # a weak second-difference penalty keeps dense knots that no phase pins down smooth
                weight = math.sqrt(SMOOTHING * seen["power"] / max(seen["columns"], 1))
                yield _smoothing(free.size, channels, weight)

        theta = least_squares(blocks())
        found = np.zeros(self.knots[axis].size)
        found[free] = theta[: free.size]
        return found, theta[free.size :]


def _smoothing(free: int, channels: int, weight: float) -> tuple[np.ndarray, np.ndarray]:
    rows = np.zeros((max(free - 2, 0), free + channels))
    for r in range(rows.shape[0]):
        rows[r, r : r + 3] = (weight, -2 * weight, weight)
    return rows, np.zeros(rows.shape[0])


def _start(offsets: np.ndarray, widening: float) -> np.ndarray:
    """A triangle as wide as the support's widening: every resampler's rough shape."""
    return np.maximum(0.0, 1 - np.abs(offsets) / widening)


def _alternate(problem: _Problem, normalised: bool, widening: tuple[float, float], rounds: int,
               taps: list[np.ndarray] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    taps = taps or [_start(problem.knots[a], widening[a]) for a in (0, 1)]
    bias = np.zeros(problem.pairs.c_out)
    for _ in range(rounds):
        for axis in (0, 1):
            taps[axis], bias = problem.solve_axis(axis, taps, normalised)
        if normalised:  # each phase's scale is free: hold the taps each output pixel applies
            taps = [per_phase_normalised(problem.knots[a], taps[a]) for a in (0, 1)]
        else:  # the gain in the column kernel alone: the row kernel's taps sum to 1 on average
            total = float(np.mean(np.asarray(problem.weights(0, taps[0], problem.samples[0][0], False).sum(axis=1))))
            if abs(total) > 1e-12:
                taps[0], taps[1] = taps[0] / total, taps[1] * total
    return taps, bias


def residuals(model: ResampleModel, pairs, split: str, grids: list | None = None) -> float:
    """RMS of (prediction - output) over ``split``'s usable pixels whose kernel lies inside the
    input; for JPEG files (``grids``: :func:`img2kernel.fit.jpeg.grids_of`), of the weighted DCT
    coefficients of the file's whole 8x8 blocks of such pixels, the units and floor of a lossless
    file's pixels (fit.jpeg)."""
    total, count = 0.0, 0
    for index, (x, y) in enumerate(zip(pairs.inputs, pairs.outputs)):
        use = pairs.usable(index, split) & interior_pixels(model, x.shape, y.shape)
        if not use.any():
            continue
        prediction = model.predict(x, "replicate", output="float", size=y.shape[:2]).reshape(y.shape)
        if grids:
            ok = jpeg.usable_blocks(FitSample(x, y, use), grids[index], 0)
            if not ok.any():
                continue
            difference = jpeg.file_blocks(prediction - y, grids[index], ok) * grids[index].scale
            total += float(np.sum(np.square(difference)))
            count += difference.size
            continue
        total += float(np.sum(np.square(prediction[use] - np.asarray(y[use], dtype=np.float64))))
        count += int(use.sum()) * y.shape[2]
    return math.sqrt(total / count) if count else math.inf


def _model(problem, taps, bias, pairs, normalised: bool, between: str = "none") -> ResampleModel:
    factor = [pairs.outputs[0].shape[a] / pairs.inputs[0].shape[a] for a in (0, 1)]
    return ResampleModel(problem.knots[0], taps[0], problem.knots[1], taps[1], factor, bias, pairs.c_out,
                         problem.convention, normalised, between)


def named_candidates(scale: list[float]) -> list[tuple[str, bool]]:
    """(name, antialiased) of every resampler of :data:`img2kernel.evaluate.resamplers.RESAMPLERS`."""
    return [(name, widened) for name in RESAMPLERS for widened in sorted({False, max(scale) > 1})]


def named_model(fitted: ResampleModel, name: str, widened: bool, scale: list[float]) -> ResampleModel:
    """The resampler ``name`` (widened by the scale where ``antialiased``), centred where the fitted
    kernels are on each axis, with the fitted model's convention, normalisation and offsets."""
    from img2kernel.evaluate.resamplers import match_profile

    functions = []
    for axis, (knots, taps) in enumerate(((fitted.row_offsets, fitted.row_taps), (fitted.column_offsets, fitted.column_taps))):
        widening = max(1.0, scale[axis]) if widened else 1.0
        centre = match_profile(knots, taps, scale[axis], fitted.normalised, only=(name, widened))["centre"]
        functions.append((list(RESAMPLERS).index(name), centre, widening))
    return ResampleModel.named(functions, fitted.factor, fitted.bias, fitted.channels, fitted.convention,
                               fitted.normalised, fitted.between_passes, fitted.output)


class _NamedGrid:
    """A named model's knots (its function's, 1/64 pixel apart) and convention, where the rest of the fit
    reads a problem's."""

    def __init__(self, model: ResampleModel):
        self.knots, self.convention = [model.row_offsets, model.column_offsets], model.convention


def detect_resample_border(model: ResampleModel, pairs) -> dict:
    """The border rule that reproduces the pixels whose kernel leaves the input, with its RMS there."""
    from img2kernel.borders import PADDED_RULES, best_rule

    sums, count = dict.fromkeys(PADDED_RULES, 0.0), 0
    for index, (x, y) in enumerate(zip(pairs.inputs, pairs.outputs)):
        ring = pairs.usable(index, None) & ~interior_pixels(model, x.shape, y.shape)
        if not ring.any():
            continue
        target = np.asarray(y[ring], dtype=np.float64)
        count += target.size
        for rule in sums:
            prediction = model.predict(x, rule, output="float", size=y.shape[:2]).reshape(y.shape)
            sums[rule] += float(np.sum(np.square(prediction[ring] - target)))
    if count == 0:
        return {"rule": "replicate", "rms": {}, "ring_pixels": 0, "equivalent": [],
                "note": "no output pixel's kernel leaves its input"}
    found = best_rule(sums, count)
    if found["rule"] == "zero" and model.normalised:
        found["note"] = "the kernel cut at the image's edge and its weights renormalised (as Pillow and ImageMagick resize)"
    return found


def fit_resample(pairs, *, seed: int = 0, floor: float | None = None, started: float | None = None):
    """:class:`img2kernel.fit.pairs.PairsFit` of a resize whose outputs are on their own grid."""
    from img2kernel.fit.pairs import PairsFit

    started = time.perf_counter() if started is None else started
    luma = jpeg.luma_pairs(pairs)
    if luma is not None:
        # Colour JPEGs (chroma subsampled): fitted through the files' luma against the inputs', as a
        # kernel is (fit.pairs.fit_shared_from_luma); a resizer applies one kernel to every channel.
        found = fit_resample(jpeg.gray_of(luma), seed=seed, floor=floor, started=started)
        if found.linear:
            found.model = found.model.with_channels(pairs.c_out)
            found.border = detect_resample_border(found.model, pairs)
            found.compression = {**found.compression, "plane": "luma of colour files"}
            found.seconds = time.perf_counter() - started
            return found
    held_out = next((s for s in ("val", "test") if any(pairs.usable(i, s).any() for i in range(len(pairs.keys)))), "train")
    value_step = pairs.output_step()
    floor = pairs.noise_floor(value_step) if floor is None else floor
    scale = [pairs.inputs[0].shape[a] / pairs.outputs[0].shape[a] for a in (0, 1)]  # input pixels per output pixel
    widening = tuple(max(1.0, s) for s in scale)
    timings: dict = {}
    # A JPEG file is on the output's own grid here: its blocks start at the array's corner.
    grids = jpeg.grids_of(pairs)

    def scored(problem, taps, bias, normalised, between="none") -> tuple[ResampleModel, dict]:
        model = _model(problem, taps, bias, pairs, normalised, between)
        train, held = residuals(model, pairs, "train", grids), residuals(model, pairs, held_out, grids)
        return model, {"train_rms": train, "heldout_rms": held, "residual_rms": max(train, held)}

    # The convention and the normalisation, at the widest support.
    step = time.perf_counter()
    widest = tuple(SUPPORTS[-1] * w for w in widening)
    tried, screened = [], {}
    for convention in CONVENTIONS:
        problem = _Problem(pairs, "train", convention, widest, seed)
        if not problem.samples:
            continue
        for normalised in (True, False):
            taps, bias = _alternate(problem, normalised, widening, SCREEN_ROUNDS)
            model, row = scored(problem, taps, bias, normalised)
            tried.append((row["residual_rms"], convention, normalised, {**row, "parameters": model.n_parameters}))
            screened[convention, normalised] = (problem, taps)
    if not tried:
        raise ValueError("no output pixel of the pairs has its whole kernel inside its input: the images are too small "
                         "for a resize's kernel")
    best = min(t[0] for t in tried)
    # Tools normalise each output pixel's weights: said so wherever that explains the pixels as well
    # (a kernel whose phases already sum alike gives the same pixels either way).
    convention, normalised = next((c, n) for r, c, n, _ in sorted(tried, key=lambda t: (not t[2], t[0]))
                                  if as_good(r, best, floor))
    timings["convention"] = time.perf_counter() - step

    # The support: the smallest that the larger ones do not beat by the evidence.
    step = time.perf_counter()
    sizes, fitted = [], {}
    for k in SUPPORTS:
        widest_problem, start_taps = screened[convention, normalised]
        # the widest support's knots and samples are the screening's own
        problem = widest_problem if k == SUPPORTS[-1] else _Problem(pairs, "train", convention, tuple(k * w for w in widening), seed)
        start = [np.interp(problem.knots[a], widest_problem.knots[a], start_taps[a], left=0.0, right=0.0) for a in (0, 1)]
        taps, bias = _alternate(problem, normalised, widening, ROUNDS, start)
        model, row = scored(problem, taps, bias, normalised)
        fitted[k] = (problem, taps, bias, model)
        sizes.append({"ksize": model.ksize, "support": k, "structure": "separable resampler",
                      "parameters": model.n_parameters, **row})
    values = sum(int(use.sum()) for _, _, use in fitted[SUPPORTS[-1]][0].samples) * pairs.c_out
    chosen = next(s for i, s in enumerate(sizes) if all(
        size_is_enough(s["residual_rms"], t["residual_rms"], t["parameters"] - s["parameters"], values, floor,
                       independent=not grids)
        for t in sizes[i + 1:]))
    problem, taps, bias, model = fitted[chosen["support"]]
    timings["sizes"] = time.perf_counter() - step
    as_fitted = {axis: {"offsets": knots.tolist(), "taps": (per_phase_normalised(knots, t) if normalised else t).tolist()}
                 for axis, knots, t in zip(("rows", "columns"), problem.knots, taps)}

    # A named resampler that reproduces the pixels as well as the fitted kernels is the model: its
    # taps are exact, where the fit's carry the files' noise.
    step = time.perf_counter()
    named = []
    for name, widened in named_candidates(scale):
        candidate = named_model(model, name, widened, scale)
        row = {"train_rms": residuals(candidate, pairs, "train", grids), "heldout_rms": residuals(candidate, pairs, held_out, grids)}
        named.append((max(row.values()), name, widened, candidate, row))
    # Functions whose taps the pixels cannot tell apart (at a factor of 2, a widened box's and an
    # unwidened triangle's are the same) go to the earlier in the catalogue, antialiased first.
    lowest = min(n[0] for n in named)
    best_named = next(n for n in sorted(named, key=lambda n: (list(RESAMPLERS).index(n[1]), not n[2]))
                      if n[0] <= lowest * (1 + NAMED_TIE))
    if as_good(best_named[0], chosen["residual_rms"], floor):
        model = best_named[3]
        taps = [model.row_taps, model.column_taps]
        problem = _NamedGrid(model)
        chosen = {**chosen, **best_named[4], "residual_rms": best_named[0]}
    timings["named"] = time.perf_counter() - step

    # An 8-bit rounding between the passes, where the files are 8-bit and it explains them better.
    rounding = [{"between_passes": "none", **{k: chosen[k] for k in ("train_rms", "heldout_rms", "residual_rms")}}]
    parameters = chosen["parameters"]
    if pairs.output_storage == "uint8" and pairs.input_storage == "uint8" and not grids:
        for between in BETWEEN_PASSES[1:]:
            candidate, row = scored(problem, taps, bias, normalised, between)
            rounding.append({"between_passes": between, **row})
        best = min(rounding, key=lambda r: r["residual_rms"])
        if best["between_passes"] != "none" and not as_good(chosen["residual_rms"], best["residual_rms"], floor):
            model = model.with_between_passes(best["between_passes"])
            chosen = {**chosen, **{k: best[k] for k in ("train_rms", "heldout_rms", "residual_rms")}}
    for row in rounding:
        row["chosen"] = row["between_passes"] == model.between_passes
    border = detect_resample_border(model, pairs)
    final = ResampleModel.from_tensors(model.tensors(), pairs.model_output(value_step))
    structures = [{"structure": f"{c} convention, {'normalised' if n else 'weights as fitted'} (widest support)",
                   **row, "chosen": (c, n) == (convention, normalised)} for _, c, n, row in tried]
    for row in rounding:
        structures.append({"structure": f"8-bit rounding between the passes: {row['between_passes']}",
                           "parameters": parameters, **{k: v for k, v in row.items() if k != "between_passes"}})
    rows = sum(int(use.sum()) for _, _, use in fitted[chosen["support"]][0].samples)
    return PairsFit(
        model=final,
        ksize=chosen["ksize"],
        sizes=sizes,
        structures=structures,
        noise_floor=floor,
        residual_rms=chosen["residual_rms"],
        residual_split=held_out,
        linear=chosen["residual_rms"] <= LINEAR_FACTOR * floor,
        border=border,
        rows=rows,
        eligible_rows=sum(int(pairs.usable(i, "train").sum()) for i in range(len(pairs.keys))),
        exact_sums=False,
        saturated_pixels=pairs.saturated_pixels(),
        seconds=time.perf_counter() - started,
        timings=timings,
        precision={"output_step": value_step, "intermediate": None},
        compression=jpeg.describe(grids) if grids else None,
        fitted_kernels=as_fitted,
    )
