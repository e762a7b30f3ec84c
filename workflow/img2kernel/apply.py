"""Apply a learned kernel to any image, tile by tile, equal to whole-image inference.

Each output tile is computed from its input tile plus a halo of K // 2 pixels; halo pixels
outside the image are taken by OpenCV's border rule (BORDER_REFLECT_101), so the tiled
result equals :func:`img2kernel.evaluate.predict` on the whole image, to float rounding,
while memory stays near input + output + one tile.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data import to_grayscale_float32
from .model import UINT8_MAX


def reflect101(indices: np.ndarray, size: int) -> np.ndarray:
    """Map indices outside [0, size) back inside by OpenCV's BORDER_REFLECT_101 (dcb|abcd|cba)."""
    if size == 1:
        return np.zeros_like(indices)
    period = 2 * (size - 1)
    folded = np.abs(indices) % period
    return np.where(folded >= size, period - folded, folded)


def apply_tiled(
    image: np.ndarray,
    kernels: np.ndarray,
    combine: str = "none",
    output: str = "float",
    tile: int = 1024,
    progress: bool = False,
) -> np.ndarray:
    """Filter a 2-D image (H, W) with (n, K, K) kernels; returns float32 (H, W).

    Args:
        image: any real dtype; converted tile by tile to float32.
        kernels: learned kernels, correlation orientation.
        combine: ``none`` or ``magnitude`` (as the model).
        output: ``uint8`` saturates and rounds like ``cv2.convertScaleAbs``.
        tile: side of an output tile in pixels.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image (H, W), got shape {image.shape}")
    if tile < 1:
        raise ValueError(f"tile must be at least 1 pixel, got {tile}")
    height, width = image.shape
    halo = kernels.shape[-1] // 2
    weight = torch.as_tensor(np.asarray(kernels, dtype=np.float32)[:, None])
    result = np.empty((height, width), dtype=np.float32)
    starts = [(y, x) for y in range(0, height, tile) for x in range(0, width, tile)]
    for y0, x0 in tqdm(starts, desc="tiles", disable=not progress, mininterval=1.0):
        y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
        rows = reflect101(np.arange(y0 - halo, y1 + halo), height)
        cols = reflect101(np.arange(x0 - halo, x1 + halo), width)
        block = np.asarray(image[np.ix_(rows, cols)], dtype=np.float32)
        with torch.no_grad():
            responses = F.conv2d(torch.from_numpy(block)[None, None], weight)[0]
            if combine == "magnitude":
                values = torch.sqrt(responses.square().sum(dim=0))
            else:
                values = responses[0]
            if output == "uint8":
                values = torch.round(values.abs().clamp(max=UINT8_MAX))
        result[y0:y1, x0:x1] = values.numpy()
    return result


def read_image(path: str | Path, colour: str = "gray") -> list[np.ndarray]:
    """Channels to filter: one grayscale plane (OpenCV's conversion), or each colour plane.

    8-bit values stay 0..255, 16-bit values are divided by 256 (exact), as in the store;
    ``.npy`` files are memory-mapped, so huge arrays are never loaded whole.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        array = np.load(path, mmap_mode="r")
        return [array] if array.ndim == 2 else [array[..., c] for c in range(array.shape[-1])]
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{path}: not an image OpenCV can read")
    if colour == "gray" or image.ndim == 2:
        return [to_grayscale_float32(image)]
    scale = np.float32(256) if image.dtype == np.uint16 else np.float32(1)
    return [image[..., c].astype(np.float32) / scale for c in range(min(3, image.shape[2]))]


def write_image(path: str | Path, planes: list[np.ndarray]) -> None:
    """``.npy`` and ``.tif(f)`` keep float32; ``.png`` and others are clipped and rounded to 8 bits."""
    path = Path(path)
    array = planes[0] if len(planes) == 1 else np.dstack(planes)
    if path.suffix.lower() == ".npy":
        np.save(path, array)
        return
    if path.suffix.lower() not in (".tif", ".tiff"):
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    if not cv2.imwrite(str(path), array):
        raise ValueError(f"{path}: OpenCV could not write this format")
