"""Apply a learned model to any image, tile by tile, equal to whole-image inference.

Each output tile is the model's valid prediction (:meth:`img2kernel.models.Model.predict_valid`)
of its input tile plus a halo of K // 2 pixels; halo pixels outside the image are taken by
the model's border rule, so the tiled result equals :meth:`Model.predict` on the whole image,
to float rounding, while memory stays near input + output + one tile per worker thread.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from img2kernel import borders
from img2kernel.models import Model
from img2kernel.models.base import Location, stored_as
from img2kernel.sources.geometry import Placement


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def apply_tiled(
    image: np.ndarray,
    model: Model,
    border: str = borders.DEFAULT,
    tile: int = 1024,
    progress: bool = False,
    workers: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Filter an (H, W) or (H, W, C_in) image with ``model``; returns float32 (H, W[, C_out]).

    Tiles are independent, so rows of tiles run on ``workers`` threads (OpenCV releases
    the GIL); the result is the same for any number of workers.

    Args:
        image: any real dtype, e.g. a memory-mapped .npy; read tile by tile.
        model: any :class:`img2kernel.models.Model`.
        border: a rule of :mod:`img2kernel.borders` (the one the model was found with).
        tile: side of an output tile in pixels.
        progress: show a progress bar of tiles.
        workers: threads, each holding one tile at a time; default: the usable CPUs.
        out: an array of the output's shape to fill (e.g. a memory-mapped .npy): float32, float64,
            or the integer type of the model's rounded output step.
    """
    if not isinstance(model, Model):
        raise ValueError(f"expected an img2kernel model, got {type(model).__name__}")
    borders.check_rule(border)
    channels = 1 if image.ndim == 2 else image.shape[2] if image.ndim == 3 else -1
    if channels != model.c_in:
        raise ValueError(f"the model takes {model.c_in} channel(s); the image has shape {image.shape}")
    if tile < 1:
        raise ValueError(f"tile must be at least 1 pixel, got {tile}")
    workers = usable_cpus() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    height, width = image.shape[:2]
    halo = model.halo
    if model.resamples:
        # A resize reads the whole image through sparse weights per axis (memory: the image and
        # its output); a given ``out`` sets the output's size (a tool that resizes to a fixed size).
        size = out.shape[:2] if out is not None else model.output_size(height, width)
        values = model.predict(image, border, np.float64, size=size)
        result = out if out is not None else np.empty(values.shape, dtype=np.float32)
        result[...] = values.reshape(result.shape)
        return result
    shape = (height, width) + ((model.c_out,) if model.c_out > 1 else ())
    if out is None:
        result = np.empty(shape, dtype=np.float32)
    elif out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape}")
    else:
        result = out
    # A rounded output is computed in float64: float32 sums differ by a few ulps with the tile's
    # size (OpenCV's code paths), enough to move a value across a rounding boundary. A float64
    # ``out`` is filled at full precision too.
    dtype = np.float32 if model.output == "float" and result.dtype != np.float64 else np.float64
    rows = range(0, height, tile)
    bar = tqdm(total=len(rows) * -(-width // tile), desc="tiles", disable=not progress, mininterval=1.0)
    bar_lock = threading.Lock()  # tqdm's counter is not updated atomically

    def filter_row_of_tiles(y0: int) -> None:
        y1 = min(y0 + tile, height)
        for x0 in range(0, width, tile):
            x1 = min(x0 + tile, width)
            block = borders.tile_with_halo(image, y0, y1, x0, x1, halo, border)
            values = model.predict_valid(block, dtype=dtype, at=Location(y0, x0, height, width))
            if border == "unfiltered" and halo:
                inner = block[halo : halo + y1 - y0, halo : halo + x1 - x0]
                if values.size != inner.size:
                    raise ValueError("border 'unfiltered' needs as many output channels as input channels")
                inner = inner.reshape(values.shape)  # an (h, w, 1) image and its (h, w) output
                # the image's edge ring, where it crosses this tile (not a whole-image mask per tile)
                rows, cols = np.arange(y0, y1), np.arange(x0, x1)
                ring = ((rows < halo) | (rows >= height - halo))[:, None] | ((cols < halo) | (cols >= width - halo))[None, :]
                values[ring] = inner[ring]
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


WRITABLE = (".npy", ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".webp")


def check_output_path(path: str | Path, source: str | Path | None = None) -> None:
    """Fail before any work if ``path`` has a format nothing here writes, no folder, or is the input."""
    import cv2

    path = Path(path)
    if source is not None and Path(source).exists() and path.exists() and path.resolve() == Path(source).resolve():
        raise ValueError(f"{path}: the output would overwrite the input; choose another output path")
    if not path.parent.is_dir():
        raise ValueError(f"{path}: folder {path.parent} does not exist")
    if path.suffix.lower() not in WRITABLE or (path.suffix.lower() != ".npy" and not cv2.haveImageWriter(str(path))):
        raise ValueError(f"{path}: cannot write {path.suffix or 'files without an extension'}; use one of {', '.join(WRITABLE)}")


def write_image(path: str | Path, array: np.ndarray, storage: str = "float") -> None:
    """Write an (H, W) or (H, W, C) float32 result (colour in RGB order).

    ``.npy`` and ``.tif(f)`` keep float32, unless ``storage`` is ``uint8``/``uint16`` (the
    model reproduces a tool's integer files), which they then hold; ``.png`` is 16-bit for
    ``uint16`` and otherwise rounded and clipped to 8 bits; other formats 8 bits.
    """
    import cv2

    from img2kernel.models.base import output_step
    from img2kernel.thresholds import STORAGE_RANGE

    path = Path(path)
    suffix = path.suffix.lower()
    if storage in STORAGE_RANGE:
        array = output_step(array, storage).astype(storage)
    if suffix == ".npy":
        np.save(path, array)
        return
    keeps_16_bits = suffix == ".png" and array.dtype == np.uint16
    if suffix not in (".tif", ".tiff") and not keeps_16_bits:
        array = output_step(array, "uint8").astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 3:
        array = array[..., ::-1]  # OpenCV writes BGR
    if not cv2.imwrite(str(path), np.ascontiguousarray(array)):
        raise ValueError(f"{path}: OpenCV could not write it")  # the format was checked before any work


def read_for_model(path: str | Path, model: Model, units: str, colour: str) -> tuple[np.ndarray, list[str]]:
    """The input array a model expects, and notes; see :func:`apply_to_file` for the rules."""
    import cv2

    from img2kernel.images import ImageReadError, read_pixels

    path = Path(path)
    if path.suffix.lower() == ".npy":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such input image")
        try:  # memory-mapped: a header that claims more than the file holds fails here, allocating nothing
            pixels = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{path}: not a readable .npy array ({err})") from None
        if pixels.ndim not in (2, 3):
            raise ValueError(f"{path}: expected an (H, W) or (H, W, C) array, got shape {pixels.shape}")
        return pixels, []
    try:
        pixels, storage, notes = read_pixels(path)
    except ImageReadError as err:
        raise ValueError(str(err)) from None
    if units == "stored" and model.c_in == 1 and pixels.ndim == 3 and colour == "gray":
        # as a pairs store turns a colour file into the gray a one-channel fit read
        from img2kernel.sources.pairs_store import as_channels

        pixels, note = as_channels(pixels, 1)
        pixels = pixels[..., 0].astype(np.float32)
        notes.append(note)
    if units != "stored":  # as the inputs store holds images (img2kernel.sources.downloads.to_grayscale_float32)
        if model.c_in == 1 and pixels.ndim == 3 and colour == "gray":
            pixels = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY)  # rounded in the file's depth
            notes.append("colour converted to gray")
        if storage == "uint16":  # the 8-bit scale: 16-bit / 256, exact in float32
            pixels = pixels.astype(np.float32) / np.float32(256)
    return pixels, notes


def apply_to_file(
    model_path: str | Path,
    source: str | Path,
    destination: str | Path,
    *,
    tile: int = 1024,
    colour: str = "gray",
    workers: int | None = None,
    progress: bool = False,
) -> tuple[int, ...]:
    """Filter the image file ``source`` with a learned model into ``destination``; returns its shape.

    Everything is checked before any tile is filtered. A model fitted on your own pairs
    (``units: stored``) reads the input's values as stored and writes the output the way
    the tool stored it (8-bit, 16-bit or float), with the border rule that was found. A
    model of our own filters reads 16-bit files on the 8-bit scale (divided by 256). Either
    kind, when it takes one channel and the file is in colour, converts colour to gray
    (``colour="gray"``, as its store did) or filters each colour plane (``colour="per-channel"``).
    A model fitted on outputs cropped, resized or turned from their inputs' grid writes the
    tool's size and orientation (its placement, :mod:`img2kernel.sources.geometry`).
    The output is written beside ``destination``
    and moved into place when complete; a ``.npy`` destination is filled through a memory map.
    """
    from img2kernel.pipeline.files import written_whole
    from img2kernel.models import load_model

    if colour not in ("gray", "per-channel"):
        raise ValueError(f"colour must be 'gray' or 'per-channel', got {colour!r}")
    check_output_path(destination, source)
    model, metadata = load_model(model_path)
    border = metadata.get("border", borders.DEFAULT)
    border = border if border in borders.RULES else borders.DEFAULT
    pixels, _ = read_for_model(source, model, metadata.get("units", "8-bit scale"), colour)
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    per_plane = model.c_in == 1 and channels > 1
    if not per_plane and channels != model.c_in:
        raise ValueError(f"{source}: has {channels} channel(s), the model {model_path} takes {model.c_in}")
    # the tool's output on the input's grid, or on its own for a resize
    full_shape = model.output_size(*pixels.shape[:2]) + ((channels,) if per_plane else (model.c_out,) if model.c_out > 1 else ())
    placement = Placement.from_dict(metadata.get("placement"))  # the tool's crop, resize or turn
    shape = placement.file_shape(pixels.shape[:2]) + full_shape[2:]
    storage = stored_as(model.output)
    to_npy = Path(destination).suffix.lower() == ".npy"
    mapped = to_npy and storage == "float" and placement.plain
    with written_whole(destination) as partial:
        if mapped:
            result = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=shape)
        else:
            result = np.empty(full_shape, dtype=np.float32)
        if per_plane:
            for c in range(channels):
                result[..., c] = apply_tiled(pixels[..., c], model, border, tile, progress=progress, workers=workers)
        else:
            apply_tiled(pixels, model, border, tile, progress=progress, workers=workers, out=result)
        if mapped:
            del result  # unmapped; no msync: the page cache writes it back (as for store shards)
        else:
            write_image(partial, np.ascontiguousarray(placement.sample(result)), storage)
    return shape
