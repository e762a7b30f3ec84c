"""An 8-bit rounding inside the tool (docs/design.md, "Roundings inside the tool").

Some tools convert 8-bit RGB to an 8-bit working space before their kernel: gray (Pillow's
``convert("L")``, ``cv2.cvtColor``), YCbCr (ffmpeg filters in yuv444p) and back to RGB. The
kernel fitted from RGB is still right (the rounding error is uncorrelated with the pixels),
but the residual carries that rounding through the kernel, far above the output's own floor,
and "not linear" would be the wrong answer. The rounding is computed, not assumed: with the
fitted kernel K and a space s = M rgb + m (:data:`img2kernel.colour.SPACES`),

- on the way in, e = round(s) - s reaches the output as (K M^+) * e;
- on the way back (a three-channel space, RGB out), the tool rounds its result in the space
  again: M^-1 (round(t) - t), t = M y + m, y the prediction including the first term.

The tool is linear up to that rounding when these terms, with least-squares weights near 1,
leave the residual at the output's own floor (and the few near-tie pixels a tool's fixed-point
conversion rounds the other way); the floor then includes them.
"""

from __future__ import annotations

import math

import numpy as np

from img2kernel.colour import SPACES, Space
from img2kernel.models import AffineKernel
from img2kernel.thresholds import LINEAR_FACTOR, ROUNDING_CONVENTIONS, ROUNDING_WEIGHT_TOLERANCE

MAX_VALUES = 1_000_000  # output values scored: one or two weights need few, and memory stays small


def terms(model: AffineKernel, space: Space, x: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The rounding's two terms on the valid region of one (H, W, 3) 8-bit input, whose ``prediction``
    by ``model`` is given: (H-2h, W-2h, C_out) each; the second is None where the tool does not come
    back from the space (gray)."""
    s = space.of(x)
    inward = np.rint(s) - s
    through = np.einsum("oikl,is->oskl", model.kernel, np.linalg.pinv(space.matrix))  # K M^+
    first = _valid(AffineKernel(through), inward)
    if space.channels != 3 or model.c_out != 3:
        return first, None
    back = space.of(prediction + first)
    return first, (np.rint(back) - back) @ np.linalg.inv(space.matrix).T


def _valid(model: AffineKernel, image: np.ndarray) -> np.ndarray:
    values = model.predict_valid(image, output="float")
    return values.reshape(values.shape[0], values.shape[1], -1)


def intermediate_rounding(model: AffineKernel, pairs, floor: float) -> dict | None:
    """The space whose 8-bit rounding explains ``model``'s residual on ``pairs`` down to ``floor``
    (within LINEAR_FACTOR), as ``{"space", "weights", "explained_rms", "remaining_rms", "floor"}``
    (``floor``: the output's with the rounding added); None when none does or none applies
    (inputs other than 8-bit RGB)."""
    if pairs.input_storage != "uint8" or pairs.c_in != 3:
        return None
    h = model.halo
    columns = {space.name: [] for space in SPACES}
    residuals, counted = [], 0
    for i, (x, y) in enumerate(zip(pairs.inputs, pairs.outputs)):
        if counted >= MAX_VALUES:
            break
        # A band of rows across the middle: memory stays a few times MAX_VALUES, whatever the image.
        valid_rows, width = y.shape[0] - 2 * h, y.shape[1] - 2 * h
        rows = min(valid_rows, max(1, (MAX_VALUES - counted) // max(width * model.c_out, 1)))
        r0 = (valid_rows - rows) // 2
        use = pairs.usable(i, None)[r0 + h : r0 + h + rows, h : h + width]
        if not use.any():
            continue
        band = np.asarray(x[r0 : r0 + rows + 2 * h], dtype=np.float64)
        prediction = _valid(model, band)
        residuals.append((np.asarray(y[r0 + h : r0 + h + rows, h : h + width], dtype=np.float64) - prediction)[use].ravel())
        counted += residuals[-1].size
        for space in SPACES:
            columns[space.name].append([t[use].ravel() for t in terms(model, space, band, prediction) if t is not None])
    if not residuals:
        return None
    residual = np.concatenate(residuals)
    found = None
    for space in SPACES:
        found = _best(found, _explain(space, residual, [np.concatenate(c) for c in zip(*columns[space.name])], floor))
    return found


def _explain(space: Space, residual: np.ndarray, columns: list[np.ndarray], floor: float) -> dict | None:
    """The rounding terms' least-squares weights and what they leave; None unless every weight is
    near 1 and the remainder is at the floor. A second term weighted near 0 (the tool does not
    round on the way back) is dropped and the first refitted alone."""
    for used in (columns, columns[:1]):
        design = np.stack(used, axis=1)
        weights, *_ = np.linalg.lstsq(design, residual, rcond=None)
        explained = design @ weights
        remaining = math.sqrt(float(np.mean(np.square(residual - explained))))
        explained_rms = math.sqrt(float(np.mean(np.square(explained))))
        # A tool's fixed-point conversion rounds a few near-tie pixels the other way.
        tolerance = LINEAR_FACTOR * math.hypot(floor, ROUNDING_CONVENTIONS * explained_rms)
        # The way back's term is attenuated: it rounds the fitted kernel's prediction, whose error
        # moves some of the tool's roundings, so its weight may sit further below 1.
        low = np.array([1 - ROUNDING_WEIGHT_TOLERANCE, 1 - 2 * ROUNDING_WEIGHT_TOLERANCE][: len(used)])
        if np.all((weights >= low) & (weights <= 1 + ROUNDING_WEIGHT_TOLERANCE)) and remaining <= tolerance:
            return {"space": space.name, "weights": weights.tolist(), "rounds_back": len(used) == 2,
                    "explained_rms": explained_rms, "remaining_rms": remaining,
                    "floor": math.sqrt(floor**2 + explained_rms**2)}
    return None


def _best(a: dict | None, b: dict | None) -> dict | None:
    """The candidate that leaves less."""
    if a is None or b is None:
        return a or b
    return a if a["remaining_rms"] <= b["remaining_rms"] else b
