"""Say what a learned kernel is: a known kernel, up to scale, flips, rotations and offset.

A learned (C_out, C_in, K, K) kernel is first split into a channel matrix and one spatial
kernel when it is separable that way (an SVD: per-channel filters with the same kernel,
RGB to gray then a kernel, gray to RGB). The spatial kernel is compared with a catalogue
of named kernels (OpenCV's Sobel, Scharr and Laplacian, box, identity, the common
sharpen and emboss kernels, Gaussians of any sigma, the user's own filters) under the 8
flips and rotations of the square and every placement inside the window, with a free
scale; failing that, with ``a * identity + b * named`` (sharpening and unsharp masking).
"""

from __future__ import annotations

import math
from typing import Callable

import cv2
import numpy as np

from img2kernel.colour import GRAY_WEIGHTS
from img2kernel.sources.filters import deriv_kernel
from img2kernel.thresholds import CLOSE, IDENTIFIED, ROUNDING_RMS, SEPARABLE, TRUNCATION_TOLERANCE


# Flips and rotations, in order of preference when several fit equally (symmetric kernels).
ORIENTATIONS: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = [
    ("as is (correlation)", lambda k: k),
    ("rotated 180 degrees (the tool convolves)", lambda k: k[::-1, ::-1]),
    ("flipped left-right", lambda k: k[:, ::-1]),
    ("flipped up-down", lambda k: k[::-1, :]),
    ("transposed", lambda k: k.T),
    ("rotated 90 degrees counter-clockwise", lambda k: np.rot90(k, 1)),
    ("rotated 90 degrees clockwise", lambda k: np.rot90(k, -1)),
    ("transposed across the anti-diagonal", lambda k: np.rot90(k, 2).T),
]


def named_kernels() -> dict[str, np.ndarray]:
    """The built-in catalogue, correlation orientation."""
    catalogue = {"identity": np.ones((1, 1))}
    for size in (3, 5, 7):
        catalogue[f"sobel_x (ksize {size})"] = deriv_kernel(1, 0, size)
        catalogue[f"sobel_y (ksize {size})"] = deriv_kernel(0, 1, size)
        catalogue[f"box {size}x{size}"] = np.full((size, size), 1.0 / size**2)
    for size in (3, 5, 7):
        catalogue[f"laplacian (OpenCV ksize {size})"] = deriv_kernel(2, 0, size) + deriv_kernel(0, 2, size)
    catalogue["sobel_x (ksize 1, central difference)"] = deriv_kernel(1, 0, 1)
    catalogue["sobel_y (ksize 1, central difference)"] = deriv_kernel(0, 1, 1)
    catalogue["scharr_x"] = deriv_kernel(1, 0, cv2.FILTER_SCHARR)
    catalogue["scharr_y"] = deriv_kernel(0, 1, cv2.FILTER_SCHARR)
    catalogue["prewitt_x"] = np.array([[-1, 0, 1]] * 3, dtype=float)
    catalogue["prewitt_y"] = catalogue["prewitt_x"].T.copy()
    catalogue["laplacian (4-neighbour)"] = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=float)
    catalogue["laplacian (8-neighbour)"] = np.array([[1, 1, 1], [1, -8, 1], [1, 1, 1]], dtype=float)
    catalogue["sharpen (4-neighbour)"] = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=float)
    catalogue["sharpen (8-neighbour)"] = np.array([[-1, -1, -1], [-1, 9, -1], [-1, -1, -1]], dtype=float)
    catalogue["Pillow SHARPEN"] = np.array([[-2, -2, -2], [-2, 32, -2], [-2, -2, -2]], dtype=float) / 16
    catalogue["Pillow EMBOSS"] = np.array([[-1, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=float)
    catalogue["Pillow EDGE_ENHANCE"] = np.array([[-1, -1, -1], [-1, 10, -1], [-1, -1, -1]], dtype=float) / 2
    return catalogue


def _placements(template: np.ndarray, size: int):
    """(dy, dx, template zero-padded to size x size) for every position inside the window; (0, 0) is centred."""
    t = template.shape[0]
    centre = (size - t) // 2
    positions = [(centre, centre)] + [(r, c) for r in range(size - t + 1) for c in range(size - t + 1) if (r, c) != (centre, centre)]
    for r, c in positions:
        placed = np.zeros((size, size))
        placed[r : r + t, c : c + t] = template
        yield r - centre, c - centre, placed


def match_kernel(kernel: np.ndarray, catalogue: dict[str, np.ndarray]) -> dict:
    """Best single named kernel for a (K, K) kernel: name, scale, orientation, offset, residual."""
    kernel = np.asarray(kernel, dtype=np.float64)
    size, norm = kernel.shape[0], float(np.linalg.norm(kernel)) or 1.0
    best = None
    for name, template in catalogue.items():
        if template.shape[0] > size:
            continue
        for rank_orientation, (orientation, transform) in enumerate(ORIENTATIONS):
            oriented = transform(np.asarray(template, dtype=np.float64))
            for dy, dx, placed in _placements(oriented, size):
                power = float(np.sum(placed * placed))
                if power == 0:
                    continue
                scale = float(np.sum(kernel * placed)) / power
                residual = float(np.linalg.norm(kernel - scale * placed)) / norm
                # Ties (a symmetric kernel under several orientations, an antisymmetric one
                # whose 180-degree turn is its negative, sobel_y = sobel_x transposed) go to
                # a positive scale, then to the earlier orientation and the centred placement.
                rank = (round(residual, 9), scale < 0, rank_orientation, abs(dy) + abs(dx))
                if best is None or rank < best["_rank"]:
                    best = {"_rank": rank, "name": name, "scale": scale, "orientation": orientation,
                            "offset": [dy, dx], "relative_residual": residual}
    if best is None:
        return {"name": None, "relative_residual": 1.0}
    best.pop("_rank")
    return best


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    taps = cv2.getGaussianKernel(size, sigma, ktype=cv2.CV_64F).ravel()
    return np.outer(taps, taps)


def bounded_minimum(function: Callable[[float], float], low: float, high: float, tolerance: float = 1e-6) -> float:
    """A minimiser of ``function`` on [low, high] by golden-section search, to ``tolerance``.

    Not ``scipy.optimize.minimize_scalar``: importing scipy.optimize costs 0.35 s, a quarter
    of an ``img2kernel fit`` of one photo, for a smooth one-parameter curve (a Gaussian's sigma).
    """
    shrink = (math.sqrt(5) - 1) / 2
    a, b = low, high
    c, d = b - shrink * (b - a), a + shrink * (b - a)
    fc, fd = function(c), function(d)
    while b - a > tolerance:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - shrink * (b - a)
            fc = function(c)
        else:
            a, c, fc = c, d, fd
            d = a + shrink * (b - a)
            fd = function(d)
    return (a + b) / 2


def match_gaussian(kernel: np.ndarray) -> dict:
    """The scaled K x K Gaussian closest to ``kernel``: sigma, scale, residual."""
    kernel = np.asarray(kernel, dtype=np.float64)
    size, norm = kernel.shape[0], float(np.linalg.norm(kernel)) or 1.0
    if size == 1:
        return {"relative_residual": 1.0}

    def residual(sigma: float) -> tuple[float, float]:
        g = gaussian_kernel(size, sigma)
        scale = float(np.sum(kernel * g) / np.sum(g * g))
        return float(np.linalg.norm(kernel - scale * g)) / norm, scale

    sigma = bounded_minimum(lambda s: residual(s)[0], 0.2, 2.0 * size)
    value, scale = residual(sigma)
    return {"name": f"gaussian sigma {sigma:.3g} ({size}x{size})", "sigma": sigma, "scale": scale,
            "orientation": "as is (correlation)", "offset": [0, 0], "relative_residual": value}


NEAR_IDENTITY = 0.98  # cosine with the identity above which a template is no second term of a sharpening


def match_sharpen(kernel: np.ndarray, catalogue: dict[str, np.ndarray]) -> dict:
    """``a * identity + b * named`` (named centred, any orientation), the form of sharpening filters."""
    kernel = np.asarray(kernel, dtype=np.float64)
    size, norm = kernel.shape[0], float(np.linalg.norm(kernel)) or 1.0
    identity = np.zeros((size, size))
    identity[size // 2, size // 2] = 1.0
    candidates = {n: t for n, t in catalogue.items() if 1 < t.shape[0] <= size and n != "identity"}

    def two_terms(template: np.ndarray) -> tuple[float, np.ndarray]:
        basis = np.stack([identity.ravel(), template.ravel()], axis=1)
        coeffs, *_ = np.linalg.lstsq(basis, kernel.ravel(), rcond=None)
        return float(np.linalg.norm(basis @ coeffs - kernel.ravel())) / norm, coeffs

    if size > 1:  # unsharp masking: identity and a Gaussian of the sigma that fits best
        sigma = bounded_minimum(lambda s: two_terms(gaussian_kernel(size, s))[0], 0.2, 2.0 * size)
        candidates[f"gaussian sigma {sigma:.3g} ({size}x{size})"] = gaussian_kernel(size, sigma)
    best = {"relative_residual": 1.0}
    for name, template in candidates.items():
        for orientation, transform in ORIENTATIONS[:2]:
            placed = next(_placements(transform(np.asarray(template, dtype=np.float64)), size))[2]
            # A template that is nearly the identity (a Gaussian of sigma 0.25) makes the two terms
            # collinear: their weights (-271 and +272) would be the noise's, not a sharpening's.
            if abs(float(placed.ravel() @ identity.ravel())) > NEAR_IDENTITY * (float(np.linalg.norm(placed)) or 1.0):
                continue
            residual, coeffs = two_terms(placed)
            if residual < best["relative_residual"] - 1e-9:
                best = {"name": f"{coeffs[0]:.4g} x identity {coeffs[1]:+.4g} x {name}", "identity": float(coeffs[0]),
                        "scale": float(coeffs[1]), "term": name, "orientation": orientation, "offset": [0, 0],
                        "relative_residual": residual}
    return best


def _describe_match(found: dict) -> str:
    if found.get("relative_residual", 1.0) > CLOSE or found.get("name") is None:
        return "no known kernel"
    if "identity" in found:
        text = f"{found['identity']:.3g} x identity {found['scale']:+.3g} x {found['term']}"
    else:
        text = f"{found['name']} x {found['scale']:.4g}"
    if found["orientation"] != ORIENTATIONS[0][0]:
        text += f", {found['orientation']}"
    if any(found["offset"]):
        text += f", anchor offset ({found['offset'][0]:+d}, {found['offset'][1]:+d}) rows, columns"
    if found["relative_residual"] > IDENTIFIED:
        text = f"close to {text} (differs by {found['relative_residual']:.1%})"
    return text


def identify_spatial(kernel: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> dict:
    """The best description of one (K, K) kernel among single named kernels, a Gaussian and sharpen forms."""
    catalogue = {**named_kernels(), **(extra or {})}
    named, gaussian = match_kernel(kernel, catalogue), match_gaussian(kernel)
    # A named kernel has no free parameter: the fitted sigma must do clearly better to be preferred
    # (a noisy identity is not a Gaussian of sigma 0.27).
    simpler = named["relative_residual"] <= IDENTIFIED and gaussian["relative_residual"] > 0.5 * named["relative_residual"]
    best = named if simpler else min((named, gaussian), key=lambda c: c["relative_residual"])
    if best["relative_residual"] > IDENTIFIED:
        sharpen = match_sharpen(kernel, catalogue)
        if sharpen["relative_residual"] < best["relative_residual"] - 1e-9:
            best = sharpen
    best["text"] = _describe_match(best)
    best["identified"] = best["relative_residual"] <= IDENTIFIED
    return best


def identify_shape(kernel: np.ndarray) -> str:
    """:func:`identify_spatial`'s words for a kernel scaled so its taps sum to one (its shape,
    where another factor of the model holds its gain); as it is when its taps sum to zero."""
    kernel = np.asarray(kernel, dtype=np.float64)
    total = float(kernel.sum())
    return identify_spatial(kernel / total if abs(total) > 1e-9 else kernel)["text"]


def channel_structure(kernel: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None, float]:
    """(channel matrix (C_out, C_in), spatial kernel (K, K), separability) when the kernel factors
    as matrix x spatial (second singular value below SEPARABLE of the first), else (None, None, ratio)."""
    c_out, c_in, k, _ = kernel.shape
    flat = kernel.reshape(c_out * c_in, k * k)
    u, s, vt = np.linalg.svd(flat, full_matrices=False)
    ratio = float(s[1] / s[0]) if len(s) > 1 and s[0] > 0 else 0.0
    if ratio > SEPARABLE:
        return None, None, ratio
    spatial = vt[0].reshape(k, k)
    matrix = (u[:, 0] * s[0]).reshape(c_out, c_in)
    # Put the sign and size in the matrix: the spatial kernel's largest tap is +1.
    peak = spatial.ravel()[np.argmax(np.abs(spatial))]
    return matrix * peak, spatial / peak, ratio


def _describe_channels(matrix: np.ndarray) -> tuple[str, float]:
    """Words for a channel matrix and the overall gain it carries."""
    c_out, c_in = matrix.shape
    if c_out == 1 and c_in == 1:
        return "", float(matrix[0, 0])
    if c_out == 1:
        weights = matrix[0]
        gain = float(weights.sum())
        normalised = weights / gain if gain else weights
        named = next((n for n, w in GRAY_WEIGHTS.items() if np.max(np.abs(normalised - w)) < 2e-3), None)
        text = "RGB to gray with weights " + ", ".join(f"{w:.4f}" for w in normalised) + (f" ({named})" if named else "")
        return text, gain
    if c_in == 1:
        gains = matrix[:, 0]
        if np.allclose(gains, gains[0], rtol=1e-3):
            return "gray to RGB, the same on each channel", float(gains[0])
        return "gray to RGB with gains " + ", ".join(f"{g:.4g}" for g in gains), float(gains.mean())
    diagonal = np.diag(matrix)
    off = matrix - np.diag(diagonal)
    if np.max(np.abs(off)) <= 1e-3 * np.max(np.abs(diagonal)):
        if np.allclose(diagonal, diagonal[0], rtol=1e-3):
            return "the same kernel on each colour channel", float(diagonal[0])
        return "per-channel with gains " + ", ".join(f"{g:.4g}" for g in diagonal), float(diagonal.mean())
    return "channels mixed by the matrix " + np.array2string(matrix, precision=3), 1.0


def identify(model, extra: dict[str, np.ndarray] | None = None, noise_floor: float = 0.0,
             channel_names: tuple[str, ...] | None = None, placement=None) -> dict:
    """Identification of an affine model: channel structure, spatial kernel, offset; with ``text``.

    Example text: ``sobel_x (ksize 3) x 0.25, rotated 180 degrees (the tool convolves), offset +127.5``.
    An offset is stated when one exceeds half the output's ``noise_floor`` (a fit's offset
    on rounded outputs is not exactly zero). ``channel_names`` label the channels of a kernel
    that differs per channel (default: their numbers). ``placement``: where the outputs sit on
    the inputs' grid (:class:`img2kernel.sources.geometry.Placement`); a resize's kernel is named
    against the resamplers (:mod:`img2kernel.evaluate.resamplers`), a same-size kernel that no
    catalogue kernel explains is tried as a sub-pixel shift, and the geometry is said last.
    """
    from img2kernel.evaluate.resamplers import describe_resampler, match_resampler
    from img2kernel.sources.geometry import Placement

    placement = placement or Placement()
    kernel, bias = model.kernel, model.bias
    matrix, spatial, ratio = channel_structure(kernel)
    result: dict = {"separable_channels": matrix is not None, "channel_singular_ratio": ratio}
    if matrix is None:
        blocks = {}
        for o in range(kernel.shape[0]):
            for i in range(kernel.shape[1]):
                if np.max(np.abs(kernel[o, i])) > 1e-3 * np.max(np.abs(kernel)):
                    label = (f"{channel_names[o]}" if o == i else f"{channel_names[o]} <- {channel_names[i]}") if channel_names else f"out {o} <- in {i}"
                    blocks[label] = identify_spatial(kernel[o, i], extra)["text"]
        result["blocks"] = blocks
        text = "different kernels per channel: " + "; ".join(f"{k}: {v}" for k, v in blocks.items())
    else:
        channels, gain = _describe_channels(matrix)
        if placement.stride != (1, 1):  # a resize: the kernel is its resampler
            found = match_resampler(spatial * gain, placement.stride)
            found["text"] = describe_resampler(found, placement.stride, placement.origin)
        else:
            found = identify_spatial(spatial * gain, extra)
            if not found["identified"] and spatial.shape[0] > 1:
                shift = match_resampler(spatial * gain, (1, 1))
                if shift["identified"] and max(abs(c) for c in shift["centre"]) > 0.05:
                    found = {**shift, "text": describe_resampler(shift, (1, 1), (0, 0))}
        result.update(channels=channels, kernel=found)
        text = (channels + ", then " if channels else "") + found["text"]
    offsets = [b for b in bias if abs(b) > max(0.5 * noise_floor, 1e-6 * (1 + np.max(np.abs(kernel))))]
    result["truncates"] = bool(noise_floor >= ROUNDING_RMS and np.all(np.abs(bias + 0.5) <= TRUNCATION_TOLERANCE))
    if result["truncates"]:  # the same pixels as rounding v - 0.5: the model reproduces them as it is
        text += ", offset " + ", ".join(f"{b:+.2g}" for b in bias) + ": the tool truncates to integers instead of rounding"
    elif offsets:
        text += ", offset " + ", ".join(f"{b:+.4g}" for b in bias)
    result["offset"] = bias.tolist()
    if not placement.plain:
        text += ", then " + placement.describe()
    result["text"] = text
    result["identified"] = bool(matrix is not None and result["kernel"]["identified"])
    return result
