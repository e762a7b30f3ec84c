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
RULES = (*PADDED_RULES, "unfiltered")
DEFAULT = "reflect101"


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
