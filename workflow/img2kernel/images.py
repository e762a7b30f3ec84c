"""Reading image files the same way everywhere: pixels as stored, RGB order, one error style.

``read_pixels`` returns values exactly as the file holds them (8-bit 0..255, 16-bit
0..65535, float as held) with the storage type's name, so a kernel fitted on them maps
the input file's values to the output file's values. Colour is RGB (OpenCV decodes BGR;
it is reordered here once). An alpha channel is dropped and reported, never composited.
EXIF orientation is applied (the pixels as a viewer shows them). ``image_header`` reads
size and channels without decoding the pixels. The pipeline's inputs store, the pairs
store and ``img2kernel apply`` all read through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".npy")
STORAGE_OF_DTYPE = {"uint8": "uint8", "uint16": "uint16", "float32": "float32", "float64": "float64", "float16": "float32"}


class ImageReadError(ValueError):
    """A file that is not a readable image; the message names it."""


@dataclass(frozen=True)
class Header:
    height: int
    width: int
    channels: int  # 1 or 3 after dropping alpha


_PIL_CHANNELS = {"1": 1, "L": 1, "P": 3, "RGB": 3, "RGBA": 3, "LA": 1, "I": 1, "I;16": 1, "I;16B": 1, "I;16L": 1,
                 "F": 1, "CMYK": 3, "YCbCr": 3, "RGBX": 3, "PA": 3}


def image_header(path: str | Path, verify: bool = True) -> Header:
    """Size and channel count from the file's header; ``verify`` also checks a PNG's chunk CRCs
    (a truncated or damaged file fails here, before any job)."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as err:
            raise ImageReadError(f"{path}: not a readable .npy array ({err})") from None
        return _npy_header(path, array)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            mode, (width, height) = image.mode, image.size
            if verify:
                image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: not a readable image ({err})") from None
    if mode not in _PIL_CHANNELS:
        raise ImageReadError(f"{path}: unsupported pixel mode {mode!r}")
    return Header(height, width, _PIL_CHANNELS[mode])


def _npy_header(path: Path, array: np.ndarray) -> Header:
    if array.ndim == 2:
        return Header(array.shape[0], array.shape[1], 1)
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        return Header(array.shape[0], array.shape[1], 1 if array.shape[2] == 1 else 3)
    raise ImageReadError(f"{path}: expected an (H, W) or (H, W, C) array with C in 1, 3, 4; got shape {array.shape}")


def read_pixels(path: str | Path) -> tuple[np.ndarray, str, list[str]]:
    """(pixels (H, W) or (H, W, 3) in RGB order, storage type, notes) of an image file or .npy.

    The array keeps the file's values and dtype (float16 widened to float32). ``notes``
    says what was converted (alpha dropped, palette expanded, EXIF orientation applied).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    return decode_pixels(path.read_bytes(), str(path))  # a .npy file is told by its magic bytes


def decode_pixels(data: bytes, name: str) -> tuple[np.ndarray, str, list[str]]:
    """:func:`read_pixels` for encoded bytes (a file's, or a webdataset member's); ``name`` for errors."""
    notes: list[str] = []
    if data[:6] == b"\x93NUMPY":
        import io

        try:
            array = np.load(io.BytesIO(data))
        except (ValueError, OSError, EOFError) as err:
            raise ImageReadError(f"{name}: not a readable .npy array ({err})") from None
        return _settle(array, name, notes)
    array = _decode(data, name, notes)
    return _settle(_orient(array, data, notes), name, notes)


# EXIF orientation (tag 274) -> how to turn the stored pixels upright, as Pillow's exif_transpose.
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def _orient(array: np.ndarray, data: bytes, notes: list[str]) -> np.ndarray:
    """The pixels as the file's EXIF orientation says to show them (cameras store them sideways)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            orientation = image.getexif().get(274, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return array
    if orientation in _ORIENT:
        notes.append("EXIF orientation applied")
        return np.ascontiguousarray(_ORIENT[orientation](array))
    return array


def _settle(array: np.ndarray, name: str, notes: list[str]) -> tuple[np.ndarray, str, list[str]]:
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
        notes.append("alpha channel dropped")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ImageReadError(f"{name}: expected a gray or colour image, got pixels of shape {array.shape}")
    storage = STORAGE_OF_DTYPE.get(array.dtype.name)
    if storage is None:
        raise ImageReadError(f"{name}: unsupported pixel type {array.dtype} (8/16-bit integers or floats)")
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ImageReadError(f"{name}: holds NaN or infinite values")
    return array, storage, notes


def _decode(data: bytes, name: str, notes: list[str]) -> np.ndarray:
    """OpenCV first (8/16-bit, float TIFF, every common format; alpha kept, not composited),
    Pillow for what it refuses."""
    import cv2

    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if image is not None:
        if image.ndim == 3 and image.shape[2] == 3:
            return image[..., ::-1].copy()
        if image.ndim == 3 and image.shape[2] == 4:
            return image[..., [2, 1, 0, 3]].copy()
        return image
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as pil:
            pil.load()
            if pil.mode == "P":
                pil = pil.convert("RGBA" if "transparency" in pil.info else "RGB")
                notes.append("palette expanded to RGB")
            if pil.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(pil, dtype=np.uint16)
            return np.asarray(pil)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{name}: not a readable image ({err})") from None
