"""Reading image files the same way everywhere: pixels as stored, RGB order, one error style.

``read_pixels`` returns values exactly as the file holds them (8-bit 0..255, 16-bit
0..65535, float as held) with the storage type's name, so a kernel fitted on them maps
the input file's values to the output file's values. Colour is RGB (OpenCV decodes BGR;
it is reordered here once). An alpha channel is dropped and reported, never composited.
EXIF orientation is applied (the pixels as a viewer shows them). ``image_header`` reads
size and channels without decoding the pixels. The pipeline's inputs store, the pairs
store, the config check, ``img2kernel fit`` and ``img2kernel apply`` all read through here.

Nothing is decoded before its header is checked: an encoded image may claim at most
:func:`max_pixels` pixels (a 3 MB PNG can claim 32000x32000 RGB, 3 GB decoded), and a
``.npy`` file must hold the bytes its header claims (80 bytes can claim 74 GiB).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import io
import os

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".npy")
STORAGE_OF_DTYPE = {"uint8": "uint8", "uint16": "uint16", "float32": "float32", "float64": "float64", "float16": "float32"}


class ImageReadError(ValueError):
    """A file that is not a readable image: ``name`` (its path or URL) and ``reason``, which the message joins."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = str(name), reason


def _unreadable(head: bytes, err: Exception) -> str:
    """Why bytes no decoder takes are not an image, in words: a web page or text saved under an
    image's name is the usual cause (a server's error or sign-in page), not a damaged file."""
    from PIL import UnidentifiedImageError

    start = head[:256].lstrip().lower()
    if not head:
        return "the file is empty"
    if start.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")):
        return "it holds an HTML or XML page, not an image (a server's error or sign-in page?)"
    if start[:1] in (b"{", b"["):
        return "it holds JSON text, not an image"
    if isinstance(err, UnidentifiedImageError):
        return "not a readable image (no decoder recognises its bytes)"
    return f"not a readable image ({err})"


# The pixels an encoded image may claim (268 megapixels: a 16000x16000 scan passes, a
# decompression bomb does not); the environment variable changes it for every reader.
DEFAULT_MAX_PIXELS = 1 << 28
MAX_PIXELS_VARIABLE = "IMG2KERNEL_MAX_PIXELS"


def max_pixels() -> int:
    """The one pixel limit every reader applies before decoding (``IMG2KERNEL_MAX_PIXELS`` or the default)."""
    value = os.environ.get(MAX_PIXELS_VARIABLE)
    if value is None:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise ImageReadError(f"{MAX_PIXELS_VARIABLE}={value!r}", "give the largest pixel count an image may have, a positive integer")
    return limit


def check_pixels(name: str, width: int, height: int) -> None:
    """Refuse, before decoding, an image whose header claims more than :func:`max_pixels` pixels."""
    limit = max_pixels()
    if width * height > limit:
        raise ImageReadError(name, f"its header claims {width}x{height} pixels ({width * height / 1e6:,.0f} megapixels), "
                             f"more than the {limit / 1e6:,.0f} megapixels an image may have (a decompression bomb?); "
                             f"set {MAX_PIXELS_VARIABLE} to a larger pixel count if it is real")


def _pil():
    """Pillow's Image module, its own bomb check off: :func:`check_pixels` applies the one limit first."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    return Image


def _check_npy(data: bytes, name: str) -> None:
    """A .npy file's bytes against what its header claims (shape x item size), before np.load allocates it."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(stream)
    except (ValueError, OSError, EOFError) as err:
        raise ImageReadError(name, f"not a readable .npy array ({err})") from None
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if len(data) - stream.tell() < claimed:
        raise ImageReadError(name, f"its .npy header claims a {'x'.join(map(str, shape))} {dtype} array "
                             f"({claimed / 2**30:,.1f} GiB) but the file holds {len(data) - stream.tell():,} bytes of data")


@dataclass(frozen=True)
class Header:
    height: int
    width: int
    channels: int  # 1 or 3 after dropping alpha
    storage: str = "uint8"  # the type read_pixels will return: uint8, uint16, float32 or float64


_PIL_CHANNELS = {"1": 1, "L": 1, "P": 3, "RGB": 3, "RGBA": 3, "LA": 1, "I": 1, "I;16": 1, "I;16B": 1, "I;16L": 1,
                 "F": 1, "CMYK": 3, "YCbCr": 3, "RGBX": 3, "PA": 3}


def image_header(path: str | Path, verify: bool = True) -> Header:
    """Size and channel count from the file's header; ``verify`` also checks a PNG's chunk CRCs
    (a truncated or damaged file fails here, before any job)."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "a folder, not an image file" if path.is_dir() else "no such file")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as err:
            raise ImageReadError(path, f"not a readable .npy array ({err})") from None
        return _npy_header(path, array)
    from PIL import UnidentifiedImageError

    try:
        with _pil().open(path) as image:
            mode, (width, height) = image.mode, image.size
            check_pixels(str(path), width, height)
            storage = _storage_of(image, path)  # from the open file's tags, before verify() consumes it
            if verify:
                image.verify()
        if mode == "P":  # reading the palette loads the file: after verify, in an open of its own
            with _pil().open(path) as image:
                gray_palette = _gray_palette(image)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        with open(path, "rb") as file:
            raise ImageReadError(path, _unreadable(file.read(256), err)) from None
    if mode not in _PIL_CHANNELS:
        raise ImageReadError(path, f"unsupported pixel mode {mode!r}")
    return Header(height, width, 1 if mode == "P" and gray_palette else _PIL_CHANNELS[mode], storage)


def _gray_palette(image) -> bool:
    """A palette of grays only (a gray GIF): its pixels are gray, whatever a decoder expands them to."""
    palette = np.asarray(image.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
    return bool(palette.size) and bool(np.all(palette == palette[:, :1]))


def _storage_of(image, path: Path) -> str:
    """The sample type an open file holds, from its header: Pillow's mode, a PNG's bit depth (Pillow
    opens 16-bit colour as 8-bit RGB) or a TIFF's BitsPerSample and SampleFormat tags."""
    if image.mode in ("I;16", "I;16B", "I;16L"):
        return "uint16"
    if image.mode == "F":
        return "float32"
    if image.format == "PNG":
        with open(path, "rb") as handle:
            head = handle.read(25)  # the signature, then IHDR: its bit depth is byte 24
        return "uint16" if len(head) == 25 and head[24] == 16 else "uint8"
    if image.format == "TIFF":
        bits, sample_format = image.tag_v2.get(258, 8), image.tag_v2.get(339, 1)
        bits = bits[0] if isinstance(bits, tuple) else bits
        sample_format = sample_format[0] if isinstance(sample_format, tuple) else sample_format
        if sample_format == 3:
            return "float64" if bits == 64 else "float32"
        return "uint16" if bits == 16 else "uint8"
    return "uint16" if image.mode == "I" else "uint8"


def _npy_header(path: Path, array: np.ndarray) -> Header:
    storage = STORAGE_OF_DTYPE.get(array.dtype.name, array.dtype.name)
    if array.ndim == 2:
        return Header(array.shape[0], array.shape[1], 1, storage)
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        return Header(array.shape[0], array.shape[1], 1 if array.shape[2] == 1 else 3, storage)
    raise ImageReadError(path, f"expected an (H, W) or (H, W, C) array with C in 1, 3, 4; got shape {array.shape}")


def read_pixels(path: str | Path) -> tuple[np.ndarray, str, list[str]]:
    """(pixels (H, W) or (H, W, 3) in RGB order, storage type, notes) of an image file or .npy.

    The array keeps the file's values and dtype (float16 widened to float32). ``notes``
    says what was converted (alpha dropped, palette expanded, EXIF orientation applied).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "a folder, not an image file" if path.is_dir() else "no such file")
    return decode_pixels(path.read_bytes(), str(path))  # a .npy file is told by its magic bytes


def decode_pixels(data: bytes, name: str) -> tuple[np.ndarray, str, list[str]]:
    """:func:`read_pixels` for encoded bytes (a file's, or a webdataset member's); ``name`` for errors."""
    notes: list[str] = []
    if data[:6] == b"\x93NUMPY":
        _check_npy(data, name)
        try:
            array = np.load(io.BytesIO(data))
        except (ValueError, OSError, EOFError) as err:
            raise ImageReadError(name, f"not a readable .npy array ({err})") from None
        return _settle(array, name, notes)
    orientation = _read_header(data, name, notes)  # before any decode
    array = _decode(data, name, notes)
    return _settle(_orient(array, orientation, notes), name, notes)


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


def _read_header(data: bytes, name: str, notes: list[str]) -> int:
    """One look at the encoded header, nothing decoded: refuse more pixels than the limit, say what
    the decoder will change (CMYK to RGB, one frame of several); returns the EXIF orientation."""
    from PIL import UnidentifiedImageError

    try:
        with _pil().open(io.BytesIO(data)) as header:
            check_pixels(name, *header.size)
            if header.mode == "CMYK":  # OpenCV converts it to RGB without a word
                notes.append("CMYK converted to RGB")
            frames = getattr(header, "n_frames", 1)
            if frames > 1:  # an animated PNG, a multi-page TIFF: one image is one frame
                notes.append(f"first of {frames} frames used")
            return header.getexif().get(274, 1)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return 1  # not Pillow's: OpenCV's decoder has its own limit, and says so when it refuses


def _orient(array: np.ndarray, orientation: int, notes: list[str]) -> np.ndarray:
    """The pixels as the file's EXIF orientation says to show them (cameras store them sideways)."""
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
        raise ImageReadError(name, f"expected a gray or colour image, got pixels of shape {array.shape}")
    storage = STORAGE_OF_DTYPE.get(array.dtype.name)
    if storage is None:
        raise ImageReadError(name, f"unsupported pixel type {array.dtype} (8/16-bit integers or floats)")
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ImageReadError(name, "holds NaN or infinite values")
    return array, storage, notes


def _decode(data: bytes, name: str, notes: list[str]) -> np.ndarray:
    """OpenCV first (8/16-bit, float TIFF, every common format; alpha kept, not composited),
    Pillow for what it refuses."""
    import cv2
    from PIL import UnidentifiedImageError

    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    except cv2.error as err:
        raise ImageReadError(name, f"OpenCV could not decode it ({str(err).strip().splitlines()[-1]})") from None
    if image is not None:
        if image.ndim == 3 and image.shape[2] == 3:
            return image[..., ::-1].copy()
        if image.ndim == 3 and image.shape[2] == 4:
            return image[..., [2, 1, 0, 3]].copy()
        return image
    try:
        with _pil().open(io.BytesIO(data)) as pil:
            pil.load()
            if pil.mode == "P":
                pil = pil.convert("RGBA" if "transparency" in pil.info else "RGB")
                notes.append("palette expanded to RGB")
            if pil.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(pil, dtype=np.uint16)
            return np.asarray(pil)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(name, _unreadable(data[:256], err)) from None


# The IJG example luminance table (ITU T.81, Annex K), natural order: libjpeg, Pillow, OpenCV,
# ImageMagick and most cameras scale it by the quality setting, so a file's own table names it.
IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])


def ijg_table(quality: int) -> np.ndarray:
    """The luminance table libjpeg writes at ``quality`` (1..100), natural order."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((IJG_LUMA * scale + 50) // 100, 1, 255)


def jpeg_facts(path) -> dict | None:
    """What a JPEG file's compression did, from its header (nothing decoded), or None for other files;
    ``path`` a file's path or an open binary file (read from its start).

    Returns ``{"luma_table": 64 steps in natural row-major order, "components": 1 or 3,
    "subsampling": "gray" | "4:4:4" | "4:2:2" | "4:2:0" | "other", "quality": the IJG quality whose
    table it is (None when no quality gives that table), "quality_estimate": the nearest one}``.
    Decoded pixels are the inverse DCT of each 8x8 block's coefficients times these steps,
    rounded (docs/design.md, "JPEG files").
    """
    if hasattr(path, "read"):
        path.seek(0)
        marker = path.read(2)
        path.seek(0)
    else:
        with open(path, "rb") as handle:
            marker = handle.read(2)
    if marker != b"\xff\xd8":
        return None
    try:
        with _pil().open(path) as image:
            layers, tables = getattr(image, "layer", None), getattr(image, "quantization", None)
            if not layers or not tables:
                return None
            luma = np.asarray(tables[layers[0][3]], dtype=np.int64)
    except (OSError, SyntaxError, ValueError, KeyError, IndexError):
        return None
    if len(layers) == 1:
        subsampling = "gray"
    else:
        factors = [(h, v) for _, h, v, _ in layers]
        chroma_full = all(f == factors[1] for f in factors[2:])
        subsampling = {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0"}.get(factors[0], "other") if chroma_full and factors[1] == (1, 1) else "other"
    distances = {q: float(np.abs(ijg_table(q) - luma).sum()) for q in range(1, 101)}
    nearest = min(distances, key=distances.get)
    return {"luma_table": luma.tolist(), "components": len(layers), "subsampling": subsampling,
            "quality": nearest if distances[nearest] == 0 else None, "quality_estimate": nearest}
