"""Apply a learned kernel to any image, tile by tile, equal to whole-image inference.

Each output tile is computed from its input tile plus a halo of K // 2 pixels; halo pixels
outside the image are taken by OpenCV's border rule (BORDER_REFLECT_101), so the tiled
result equals :func:`img2kernel.evaluate.predict` on the whole image, to float rounding,
while memory stays near input + output + one tile per worker thread.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .data import to_grayscale_float32
from .filters import magnitude, saturate_uint8


def reflect101(indices: np.ndarray, size: int) -> np.ndarray:
    """Map indices outside [0, size) back inside by OpenCV's BORDER_REFLECT_101 (dcb|abcd|cba)."""
    if size == 1:
        return np.zeros_like(indices)
    period = 2 * (size - 1)
    folded = np.abs(indices) % period
    return np.where(folded >= size, period - folded, folded)


def _tile_with_halo(image: np.ndarray, y0: int, y1: int, x0: int, x1: int, halo: int) -> np.ndarray:
    """Rows y0-halo..y1+halo and columns x0-halo..x1+halo as float32, outside pixels by reflect-101."""
    height, width = image.shape
    top, bottom = max(y0 - halo, 0), min(y1 + halo, height)
    left, right = max(x0 - halo, 0), min(x1 + halo, width)
    pads = (top - (y0 - halo), (y1 + halo) - bottom, left - (x0 - halo), (x1 + halo) - right)
    block = np.asarray(image[top:bottom, left:right], dtype=np.float32)
    if not any(pads):
        return block
    if min(height, width) > halo:
        # The block reaches the image edge on every padded side and is at least halo + 1
        # pixels deep there, so reflecting the block is reflecting the image.
        return cv2.copyMakeBorder(block, *pads, cv2.BORDER_REFLECT_101)
    rows = reflect101(np.arange(y0 - halo, y1 + halo), height)
    cols = reflect101(np.arange(x0 - halo, x1 + halo), width)
    return np.asarray(image[np.ix_(rows, cols)], dtype=np.float32)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def apply_tiled(
    image: np.ndarray,
    kernels: np.ndarray,
    combine: str = "none",
    output: str = "float",
    tile: int = 1024,
    progress: bool = False,
    workers: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Filter a 2-D image (H, W) with (n, K, K) kernels; returns float32 (H, W).

    The model's function (correlation, ``magnitude`` combine, ``uint8`` saturation),
    computed per tile with ``cv2.filter2D`` on the tile and its halo. Tiles are
    independent, so rows of tiles run on ``workers`` threads (OpenCV releases the GIL);
    the result is the same for any number of workers.

    Args:
        image: any real dtype, e.g. a memory-mapped .npy; read tile by tile.
        kernels: learned kernels (n, K, K), correlation orientation.
        combine: ``none`` or ``magnitude`` (as the model).
        output: ``uint8`` saturates and rounds like ``cv2.convertScaleAbs``.
        tile: side of an output tile in pixels.
        progress: show a progress bar of tiles.
        workers: threads, each holding one tile at a time; default: the usable CPUs.
        out: a float32 (H, W) array to fill, e.g. one channel of a memory-mapped .npy;
            by default a new array.
    """
    kernels = np.asarray(kernels)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image (H, W), got shape {image.shape}")
    if kernels.ndim != 3 or kernels.shape[1] != kernels.shape[2] or kernels.shape[1] % 2 == 0:
        raise ValueError(f"expected kernels of shape (n, K, K) with K odd, got {kernels.shape}")
    if combine not in ("none", "magnitude"):
        raise ValueError(f"combine must be 'none' or 'magnitude', got {combine!r}")
    if combine == "magnitude" and kernels.shape[0] != 2:
        raise ValueError(f"combine 'magnitude' takes 2 kernels, got {kernels.shape[0]}")
    if output not in ("float", "uint8"):
        raise ValueError(f"output must be 'float' or 'uint8', got {output!r}")
    if tile < 1:
        raise ValueError(f"tile must be at least 1 pixel, got {tile}")
    workers = usable_cpus() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    height, width = image.shape
    halo = kernels.shape[-1] // 2
    kernels32 = [np.asarray(k, dtype=np.float32) for k in kernels]
    if out is None:
        result = np.empty((height, width), dtype=np.float32)
    elif out.shape != (height, width) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape {(height, width)}, got {out.dtype} {out.shape}")
    else:
        result = out
    rows = range(0, height, tile)
    bar = tqdm(total=len(rows) * -(-width // tile), desc="tiles", disable=not progress, mininterval=1.0)
    bar_lock = threading.Lock()  # tqdm's counter is not updated atomically

    def filter_row_of_tiles(y0: int) -> None:
        y1 = min(y0 + tile, height)
        for x0 in range(0, width, tile):
            x1 = min(x0 + tile, width)
            block = _tile_with_halo(image, y0, y1, x0, x1, halo)
            # BORDER_ISOLATED: the halo is already there; only the valid interior is kept.
            responses = [
                cv2.filter2D(block, cv2.CV_32F, k, borderType=cv2.BORDER_ISOLATED)[halo : halo + y1 - y0, halo : halo + x1 - x0]
                for k in kernels32
            ]
            values = magnitude(*responses) if combine == "magnitude" else responses[0]
            if output == "uint8":
                values = saturate_uint8(values)
            result[y0:y1, x0:x1] = values
            with bar_lock:
                bar.update()

    with bar:
        if workers == 1 or len(rows) == 1:
            for y0 in rows:
                filter_row_of_tiles(y0)
        else:
            with ThreadPoolExecutor(min(workers, len(rows))) as pool:
                list(pool.map(filter_row_of_tiles, rows))  # re-raises a worker's exception
    return result


def read_image(path: str | Path, colour: str = "gray") -> list[np.ndarray]:
    """Channels to filter: one grayscale plane (OpenCV's conversion), or each colour plane.

    8-bit values stay 0..255, 16-bit values are divided by 256 (exact), as in the store;
    ``.npy`` files are memory-mapped, so huge arrays are never loaded whole, and an
    (H, W, C) array gives its C planes as they are.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such input image")
    if path.suffix.lower() == ".npy":
        array = np.load(path, mmap_mode="r")
        if array.ndim not in (2, 3):
            raise ValueError(f"{path}: expected an (H, W) or (H, W, C) array, got shape {array.shape}")
        return [array] if array.ndim == 2 else [array[..., c] for c in range(array.shape[-1])]
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{path}: not an image OpenCV can read")
    if colour == "gray" or image.ndim == 2:
        return [to_grayscale_float32(image)]
    scale = np.float32(256) if image.dtype == np.uint16 else np.float32(1)
    return [image[..., c].astype(np.float32) / scale for c in range(min(3, image.shape[2]))]


def check_output_path(path: str | Path) -> None:
    """Fail before any work if ``path`` has a format nothing here writes, or no folder."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"{path}: folder {path.parent} does not exist")
    if path.suffix.lower() != ".npy" and not cv2.haveImageWriter(str(path)):
        raise ValueError(f"{path}: OpenCV cannot write {path.suffix or 'files without an extension'}; use .npy, .tif or .png")


def write_image(path: str | Path, array: np.ndarray) -> None:
    """``.npy`` and ``.tif(f)`` keep float32; ``.png`` and others are clipped and rounded to 8 bits.

    ``array`` is (H, W) or (H, W, C) float32.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        np.save(path, array)
        return
    if path.suffix.lower() not in (".tif", ".tiff"):
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    if not cv2.imwrite(str(path), array):
        raise ValueError(f"{path}: OpenCV could not write this format")


def apply_to_file(
    model: str | Path,
    source: str | Path,
    destination: str | Path,
    *,
    tile: int = 1024,
    colour: str = "gray",
    workers: int | None = None,
    progress: bool = False,
) -> tuple[int, ...]:
    """Filter the image file ``source`` with a learned model into ``destination``; returns its shape.

    Everything is checked before any tile is filtered. The output is written beside
    ``destination`` and moved into place when complete. A ``.npy`` destination is filled
    through a memory map, so neither the input nor the output of a ``.npy`` to ``.npy``
    run needs to fit in memory; other formats hold the output in memory to encode it.
    """
    from .files import load_kernels, written_whole

    if colour not in ("gray", "per-channel"):
        raise ValueError(f"colour must be 'gray' or 'per-channel', got {colour!r}")
    check_output_path(destination)
    kernels, metadata = load_kernels(model)
    planes = read_image(source, colour)
    shape = planes[0].shape + ((len(planes),) if len(planes) > 1 else ())
    to_npy = Path(destination).suffix.lower() == ".npy"
    with written_whole(destination) as partial:
        if to_npy:
            result = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=shape)
        else:
            result = np.empty(shape, dtype=np.float32)
        for channel, plane in enumerate(planes):
            apply_tiled(
                plane, kernels, metadata.get("combine", "none"), metadata.get("output", "float"), tile,
                progress=progress, workers=workers, out=result if len(planes) == 1 else result[..., channel],
            )
        if to_npy:
            del result  # unmapped; no msync: the page cache writes it back (as for store shards)
        else:
            write_image(partial, result)
    return shape
