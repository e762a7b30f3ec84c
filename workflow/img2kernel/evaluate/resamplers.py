"""Name a resampling kernel: the continuous 1-D functions resizers and warps sample.

A separable resampler's output pixel is ``sum_n w(n) in[n]`` with ``w(n) = f((n - c) / s)``
normalised to sum 1, where ``c`` is the input position the output pixel is centred on and
``s`` the support's widening: the resize factor when the tool antialiases a reduction
(Pillow, ImageMagick, OpenCV's INTER_AREA), 1 when it does not (OpenCV's INTER_LINEAR and
INTER_CUBIC reductions, a sub-pixel shift). A fitted kernel is compared with each function,
with and without widening, at the centre that fits best on each axis (its sampling phase).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from img2kernel.thresholds import CLOSE, IDENTIFIED


def _keys(a: float) -> Callable[[np.ndarray], np.ndarray]:
    def cubic(t: np.ndarray) -> np.ndarray:
        t = np.abs(t)
        near = (a + 2) * t**3 - (a + 3) * t**2 + 1
        far = a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
        return np.where(t < 1, near, np.where(t < 2, far, 0.0))
    return cubic


def _mitchell(t: np.ndarray, b: float = 1 / 3, c: float = 1 / 3) -> np.ndarray:
    t = np.abs(t)
    near = ((12 - 9 * b - 6 * c) * t**3 + (-18 + 12 * b + 6 * c) * t**2 + (6 - 2 * b)) / 6
    far = ((-b - 6 * c) * t**3 + (6 * b + 30 * c) * t**2 + (-12 * b - 48 * c) * t + (8 * b + 24 * c)) / 6
    return np.where(t < 1, near, np.where(t < 2, far, 0.0))


def _lanczos(lobes: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda t: np.where(np.abs(t) < lobes, np.sinc(t) * np.sinc(t / lobes), 0.0)


# name: the function of t, in input pixels (of the widened support when antialiased). A named
# resize model (models.resample) holds its function's index here: add new ones at the end.
RESAMPLERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "box (area average)": lambda t: np.where(np.abs(t) < 0.5, 1.0, np.where(np.abs(t) == 0.5, 0.5, 0.0)),
    "triangle (bilinear)": lambda t: np.maximum(0.0, 1 - np.abs(t)),
    "Keys cubic a = -0.5 (Catmull-Rom: Pillow's and ImageMagick's bicubic)": _keys(-0.5),
    "Keys cubic a = -0.75 (OpenCV's bicubic)": _keys(-0.75),
    "Mitchell-Netravali B = C = 1/3": _mitchell,
    "Lanczos 2": _lanczos(2),
    "Lanczos 3": _lanczos(3),
    "Gaussian sigma 1/2 (ImageMagick's)": lambda t: np.where(np.abs(t) < 1.5, np.exp(-2 * np.square(t)), 0.0),
}
TIE = 0.002  # relative residuals this close are the same taps, up to the data's noise
PHASE_GRID = np.linspace(-1.5, 1.5, 61)  # centres tried before refining, in input pixels


def weights(function: Callable[[np.ndarray], np.ndarray], size: int, centre: float, widening: float) -> np.ndarray:
    """(size,) taps of ``function`` at window offsets ``-size // 2 .. size // 2`` about ``centre``, summing to 1."""
    offsets = np.arange(size) - size // 2
    taps = function((offsets - centre) / widening)
    total = taps.sum()
    return taps / total if abs(total) > 1e-12 else taps


def _best_centre(error: Callable[[float], float]) -> float:
    """The centre (on :data:`PHASE_GRID`, then refined) where ``error(centre)`` is least."""
    from img2kernel.evaluate.identify import bounded_minimum

    errors = np.array([error(c) for c in PHASE_GRID])
    best = int(np.argmin(errors))
    # A box's taps do not change while its edges stay between the same pixels: the centre of
    # that flat stretch of centres, not whichever end a search stops at.
    flat = np.abs(errors - errors[best]) <= 1e-9
    low, high = best, best
    while low > 0 and flat[low - 1]:
        low -= 1
    while high < len(flat) - 1 and flat[high + 1]:
        high += 1
    if high > low:
        return float(PHASE_GRID[low] + PHASE_GRID[high]) / 2
    step = PHASE_GRID[1] - PHASE_GRID[0]
    start = float(PHASE_GRID[best])
    return bounded_minimum(error, start - step, start + step)


def match_resampler(kernel: np.ndarray, stride: tuple[int, int]) -> dict:
    """The resampling function, widening and centres that best explain a (K, K) kernel.

    ``stride``: the resize factor per axis (1 for a same-size warp). Returns the name, whether
    the support is widened (antialiased), the centre per axis (rows, columns; window offsets),
    the 2-D relative residual with a free gain, and the equally good alternatives.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    u, s, vt = np.linalg.svd(kernel)
    column, row = u[:, 0] * math.copysign(1, u[:, 0].sum()), vt[0] * math.copysign(1, vt[0].sum())
    norm = float(np.linalg.norm(kernel)) or 1.0
    found = []
    for name, function in RESAMPLERS.items():
        for widened in sorted({False, max(stride) > 1}):
            widening = (float(stride[0]) if widened else 1.0, float(stride[1]) if widened else 1.0)
            centres = tuple(_best_centre(lambda c, p=profile, w=width: _function_error(np.arange(p.size) - p.size // 2,
                                                                                       p, function, c, w))
                            for profile, width in ((column, widening[0]), (row, widening[1])))
            template = np.outer(weights(function, kernel.shape[0], centres[0], widening[0]),
                                weights(function, kernel.shape[1], centres[1], widening[1]))
            gain = float(np.sum(kernel * template) / (np.sum(template * template) or 1.0))
            found.append({"name": name, "antialiased": widened, "centre": [centres[0], centres[1]], "gain": gain,
                          "relative_residual": float(np.linalg.norm(kernel - gain * template) / norm)})
    # Taps several functions share (at a factor of 2, a box average is bilinear without widening)
    # go to the earlier one in RESAMPLERS, widened first; the others are listed as the same.
    lowest = min(f["relative_residual"] for f in found)
    order = list(RESAMPLERS)
    tied = sorted((f for f in found if f["relative_residual"] <= lowest + TIE),
                  key=lambda f: (order.index(f["name"]), not f["antialiased"]))
    best = tied[0]
    best["equivalent"] = [f"{f['name']}{', antialiased' if f['antialiased'] else ''}" for f in tied[1:]]
    best["identified"] = best["relative_residual"] <= IDENTIFIED
    return best


def describe_resampler(found: dict, stride: tuple[int, int], origin: tuple[int, int]) -> str:
    """In words: the function, the widening, where output pixels are centred (or the shift)."""
    if found["relative_residual"] > CLOSE:
        return "no known resampling kernel"
    if stride == (1, 1):
        # the correlation kernel reads input x + c: the content moves by -c
        dy, dx = -found["centre"][0], -found["centre"][1]
        text = f"a shift by ({dx:+.2f}, {dy:+.2f}) px (right, down) with {found['name']}"
    else:
        phases = [origin[a] + found["centre"][a] for a in (0, 1)]
        aligned = all(abs(phases[a] - (stride[a] - 1) / 2) < 0.05 for a in (0, 1))
        where = ("pixel centres aligned" if aligned else
                 f"output pixel (i, j) centred on input ({stride[0]}i {phases[0]:+.2f}, {stride[1]}j {phases[1]:+.2f})")
        text = (f"{found['name']}, {'antialiased (the support widened by the factor)' if found['antialiased'] else 'not antialiased'}"
                f", {where}")
    if abs(found["gain"] - 1) > 0.01:
        text += f", gain {found['gain']:.4g}"
    if found["relative_residual"] > IDENTIFIED:
        text = f"close to {text} (differs by {found['relative_residual']:.1%})"
    elif found["equivalent"]:
        text += f" (the same taps as {', '.join(found['equivalent'])})"
    return text


def per_phase_normalised(offsets: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """``taps`` divided, phase by phase, by the sum of the taps one output pixel of that phase
    reads (the knots a whole number of pixels apart): a tool that normalises each output pixel's
    weights applies exactly these, whatever the scale of each phase in a fit."""
    phase = np.round(np.mod(offsets, 1.0), 6) % 1.0
    _, group = np.unique(phase, return_inverse=True)
    sums = np.bincount(group, weights=taps)
    return taps / np.where(np.abs(sums) > 1e-12, sums, 1.0)[group]


def _template(function, offsets: np.ndarray, centre: float, widening: float, normalised: bool = False) -> np.ndarray:
    values = function((offsets - centre) / widening)
    return per_phase_normalised(offsets, values) if normalised else values


def _function_error(offsets: np.ndarray, taps: np.ndarray, function, centre: float, widening: float,
                    normalised: bool = False) -> float:
    """||taps - g f((offsets - centre) / widening)|| / ||taps|| with the best gain g (the template
    normalised phase by phase where the taps are)."""
    template = _template(function, offsets, centre, widening, normalised)
    power = float(template @ template)
    if power == 0:
        return 1.0
    gain = float(taps @ template) / power
    return float(np.linalg.norm(taps - gain * template) / (np.linalg.norm(taps) or 1.0))


def match_profile(offsets: np.ndarray, taps: np.ndarray, scale: float, normalised: bool = False,
                  only: tuple[str, bool] | None = None) -> dict:
    """The resampling function that best explains a continuous kernel ``taps`` at ``offsets``
    (input pixels) of a resize by ``scale`` input pixels per output pixel: its name, whether its
    support is widened by the scale (antialiased), its centre (the sampling phase: 0 on the
    pixel-centre convention), the relative residual, and the equally good alternatives.
    ``normalised``: the tool normalises each output pixel's weights, so the taps and each function
    are compared :func:`per_phase_normalised`.
    ``only``: (name, antialiased) of the one function to place."""
    offsets, taps = np.asarray(offsets, np.float64), np.asarray(taps, np.float64)
    taps = per_phase_normalised(offsets, taps) if normalised else taps
    found = []
    for name, function in RESAMPLERS.items():
        for widened in sorted({False, scale > 1}):
            if only is not None and (name, widened) != only:
                continue
            widening = scale if widened else 1.0
            centre = _best_centre(lambda c: _function_error(offsets, taps, function, c, widening, normalised))
            template = _template(function, offsets, centre, widening, normalised)
            gain = float(taps @ template) / (float(template @ template) or 1.0)
            found.append({"name": name, "antialiased": widened, "centre": centre, "gain": gain, "widening": widening,
                          "normalised": normalised,
                          "relative_residual": _function_error(offsets, taps, function, centre, widening, normalised)})
    lowest = min(f["relative_residual"] for f in found)
    order = list(RESAMPLERS)
    tied = sorted((f for f in found if f["relative_residual"] <= lowest + TIE),
                  key=lambda f: (order.index(f["name"]), not f["antialiased"]))
    best = dict(tied[0])
    best["equivalent"] = [f"{f['name']}{', antialiased' if f['antialiased'] else ''}" for f in tied[1:]]
    best["identified"] = best["relative_residual"] <= IDENTIFIED
    return best


def profile_template(found: dict, offsets: np.ndarray) -> np.ndarray:
    """The named function of :func:`match_profile` at ``offsets``, at the fitted kernel's gain."""
    return found["gain"] * _template(RESAMPLERS[found["name"]], np.asarray(offsets, np.float64), found["centre"],
                                     found["widening"], found["normalised"])


def describe_profiles(found: list[dict], convention: str) -> str:
    """Both axes' matches (rows, columns) in words: one phrase when they agree."""
    def phrase(axis: dict) -> str:
        if axis["relative_residual"] > CLOSE:
            return "a kernel no known resampler explains"
        text = axis["name"] + (", antialiased (the support widened by the factor)" if axis["antialiased"] else
                               ", not antialiased")
        if axis["relative_residual"] > IDENTIFIED:
            text = f"close to {text} (differs by {axis['relative_residual']:.1%})"
        return text

    def phase(axis: dict) -> str:
        return f"{axis['centre']:+.2f} px" if abs(axis["centre"]) >= 0.05 else ""

    where = "corners aligned" if convention == "corner" else "pixel centres aligned"
    rows, columns = found
    if phrase(rows) == phrase(columns):
        text = phrase(rows)
    else:
        text = f"{phrase(rows)} down the rows, {phrase(columns)} along them"
    shifts = [phase(a) for a in found]
    if any(shifts):
        where += f", the kernel centred off them by ({shifts[1] or '0'}, {shifts[0] or '0'}) (right, down)"
    return f"{text}, {where}"
