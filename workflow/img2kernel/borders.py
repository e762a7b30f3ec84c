"""Image border rules: how a filter sees the pixels outside the image (docs/design.md, "Borders").

Names are the product's own; each maps to the OpenCV constant that pads that way:

- ``reflect101``: ``dcb|abcd|cba`` (OpenCV's default BORDER_REFLECT_101, numpy ``reflect``)
- ``reflect``: ``cba|abcd|dcb`` (BORDER_REFLECT, scipy.ndimage's default, numpy ``symmetric``)
- ``replicate``: ``aaa|abcd|ddd`` (BORDER_REPLICATE, scipy ``nearest``, numpy ``edge``)
- ``zero``: ``000|abcd|000`` (BORDER_CONSTANT, scipy ``constant``)
- ``wrap``: ``bcd|abcd|abc`` (BORDER_WRAP, scipy ``wrap``)
- ``unfiltered``: the edge ring of the output is the input as it was (tools that skip
  the pixels whose window leaves the image, as Pillow's kernel filters once did).
"""

from __future__ import annotations

import cv2
import numpy as np

PADDED_RULES = {
    "reflect101": (cv2.BORDER_REFLECT_101, "reflect"),
    "reflect": (cv2.BORDER_REFLECT, "symmetric"),
    "replicate": (cv2.BORDER_REPLICATE, "edge"),
    "zero": (cv2.BORDER_CONSTANT, "constant"),
    "wrap": (cv2.BORDER_WRAP, "wrap"),
}
# The same rules as other libraries name them: (OpenCV constant, scipy.ndimage mode, torch
# F.pad mode); None where the library has no such rule (OpenCV's filter2D refuses BORDER_WRAP,
# torch pads no edge-including reflection). img2kernel.evaluate.reproduce writes these calls.
LIBRARY_NAMES = {
    "reflect101": ("cv2.BORDER_REFLECT_101", "mirror", "reflect"),
    "reflect": ("cv2.BORDER_REFLECT", "reflect", None),
    "replicate": ("cv2.BORDER_REPLICATE", "nearest", "replicate"),
    "zero": ("cv2.BORDER_CONSTANT", "constant", "constant"),
    "wrap": (None, "wrap", "circular"),
}
RULES = (*PADDED_RULES, "unfiltered")
DEFAULT = "reflect101"


def best_rule(squares: dict[str, float], count: int) -> dict:
    """The rule whose predictions of a fit's edge ring are closest, from each rule's sum of squared
    errors over ``count`` ring values: {rule, rms (per rule), ring_pixels, equivalent (the rules as
    good: a 3x3 kernel reads one pixel outside, where reflect and replicate agree)}."""
    import math

    rms = {rule: math.sqrt(value / count) for rule, value in squares.items()}
    best = min(rms, key=rms.get)
    equivalent = [rule for rule, value in rms.items() if value <= rms[best] * (1 + 1e-9) + 1e-12]
    return {"rule": best, "rms": rms, "ring_pixels": count, "equivalent": equivalent}


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"unknown border rule {rule!r}; known: {', '.join(RULES)}")
    return rule


def pad(image: np.ndarray, halo: int, rule: str) -> np.ndarray:
    """``image`` (H, W) or (H, W, C) with ``halo`` pixels added on every side by ``rule``.

    ``unfiltered`` pads by replication: the ring it produces is overwritten afterwards
    (:func:`restore_unfiltered_ring`). Any image size works, even one smaller than the halo.
    """
    check_rule(rule)
    if halo == 0:
        return image
    cv_rule, np_mode = PADDED_RULES.get(rule, PADDED_RULES["replicate"])
    height, width = image.shape[:2]
    channels = image.shape[2] if image.ndim == 3 else 1
    if min(height, width) > halo and channels <= 4:
        return cv2.copyMakeBorder(np.ascontiguousarray(image), halo, halo, halo, halo, cv_rule, value=0)
    widths = ((halo, halo), (halo, halo)) + (((0, 0),) if image.ndim == 3 else ())
    return np.pad(image, widths, mode=np_mode)


def reflect101(indices: np.ndarray, size: int) -> np.ndarray:
    """Map indices outside [0, size) back inside by OpenCV's BORDER_REFLECT_101 (dcb|abcd|cba)."""
    if size == 1:
        return np.zeros_like(indices)
    period = 2 * (size - 1)
    folded = np.abs(indices) % period
    return np.where(folded >= size, period - folded, folded)


def border_indices(indices: np.ndarray, size: int, rule: str) -> np.ndarray:
    """Source index of each (possibly outside) index under a border rule; ``zero`` clips (the
    caller zeroes those pixels) and ``unfiltered`` replicates (its ring is restored later)."""
    if rule == "reflect101":
        return reflect101(indices, size)
    if rule == "reflect":
        folded = np.mod(indices, 2 * size)
        return np.where(folded >= size, 2 * size - 1 - folded, folded)
    if rule == "wrap":
        return np.mod(indices, size)
    return np.clip(indices, 0, size - 1)


def tile_with_halo(image: np.ndarray, y0: int, y1: int, x0: int, x1: int, halo: int, rule: str,
                   dtype: type = np.float32) -> np.ndarray:
    """Rows y0-halo..y1+halo and columns x0-halo..x1+halo in ``dtype``, outside pixels by ``rule``
    (what :func:`img2kernel.borders.pad` of the whole image holds there, without padding it)."""
    height, width = image.shape[:2]
    if y0 - halo >= 0 and x0 - halo >= 0 and y1 + halo <= height and x1 + halo <= width:
        return np.asarray(image[y0 - halo : y1 + halo, x0 - halo : x1 + halo], dtype=dtype)
    rows, cols = np.arange(y0 - halo, y1 + halo), np.arange(x0 - halo, x1 + halo)
    block = np.asarray(image[np.ix_(border_indices(rows, height, rule), border_indices(cols, width, rule))], dtype=dtype)
    if rule == "zero":
        outside = ((rows < 0) | (rows >= height))[:, None] | ((cols < 0) | (cols >= width))[None, :]
        block[outside] = 0
    return block


def ring_mask(shape: tuple[int, ...], halo: int) -> np.ndarray:
    """(H, W) bool: True on the outer ``halo`` rows and columns, where the border rule matters."""
    mask = np.zeros(shape[:2], dtype=bool)
    if halo:
        mask[:halo] = mask[-halo:] = True
        mask[:, :halo] = mask[:, -halo:] = True
    return mask


def restore_unfiltered_ring(output: np.ndarray, image: np.ndarray, halo: int) -> np.ndarray:
    """Copy ``image``'s edge ring into ``output`` (same shape), in place; returns ``output``."""
    if output.shape != image.shape:
        raise ValueError(
            f"border 'unfiltered' keeps the input's edge pixels, so input and output must have the same "
            f"channels; got input {image.shape} and output {output.shape}"
        )
    ring = ring_mask(image.shape, halo)
    output[ring] = image[ring]
    return output
