"""`img2kernel bench geometry`: outputs off their inputs' grid, made by other libraries, against the targets.

Each case makes pairs from the sample photos with a tool that crops, resizes or turns its
output (Pillow, OpenCV, numpy; ImageMagick where it is installed), saves them as 8-bit PNG
(or JPEG), fits them through the same code as a ``pairs`` filter and `img2kernel fit`, and
checks (docs/design.md, "Geometry"):

- the held-out PSNR of the fitted model against the tool's file (target: >= 50 dB; test pixels:
  a whole pair, or tiles for one pair; shown but not judged for a JPEG file, which differs from
  any exact model by its own compression);
- the words of the identification: the factor and the resampler, the crop, the shift and its
  amount, the turn;
- for the crop, the kernel's error against an independent float64 least squares at the true
  placement (target: within 2x of it, or 1e-3).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from img2kernel.bench.pairs import _fit_folder, _gray, _save, photos, reference_lstsq
from img2kernel.evaluate.pairs import heldout_scores, identification_of, verdict

PSNR_TARGET = 50.0
BLUR = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], np.float64) / 8


@dataclass
class GeometryCase:
    name: str
    tool: str
    make: Callable[[np.ndarray], np.ndarray]  # photo (RGB or gray uint8) -> the tool's output
    says: tuple[str, ...]  # words the identification must hold
    colour: bool = False
    count: int = 4
    size: tuple[int, int] = (256, 256)  # (height, width) of the inputs
    jpeg: tuple | None = None  # the output saved as a JPEG by (writer, quality)
    kernel: np.ndarray | None = None  # the true kernel, where the case checks it


def _pillow(resample: int, factor: int = 2):
    from PIL import Image

    def resize(photo: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(photo).resize((photo.shape[1] // factor, photo.shape[0] // factor), resample))
    return resize


def _pillow_to(numerator: int, denominator: int, resample: int):
    """Pillow's resize to numerator/denominator of the photo's size (any ratio)."""
    from PIL import Image

    def resize(photo: np.ndarray) -> np.ndarray:
        size = (photo.shape[1] * numerator // denominator, photo.shape[0] * numerator // denominator)
        return np.asarray(Image.fromarray(photo).resize(size, resample))
    return resize


def _opencv_to(numerator: int, denominator: int, interpolation: int):
    def resize(photo: np.ndarray) -> np.ndarray:
        size = (photo.shape[1] * numerator // denominator, photo.shape[0] * numerator // denominator)
        return cv2.resize(photo, size, interpolation=interpolation)
    return resize


def _blurred(photo: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(cv2.filter2D(photo.astype(np.float64), -1, BLUR)), 0, 255).astype(np.uint8)


def imagemagick() -> str | None:
    """ImageMagick's command (``magick`` or ``convert``) when it is installed, else None."""
    for command in ("magick", "convert"):
        path = shutil.which(command)
        if path and "ImageMagick" in subprocess.run([path, "-version"], capture_output=True, text=True).stdout:
            return path
    return None


def imagemagick_resize(percent: int):
    """ImageMagick's ``-resize {percent}%`` of a photo (through PNG files)."""
    from PIL import Image

    def resize(photo: np.ndarray) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="img2kernel-bench-im-") as folder:
            source, result = Path(folder) / "in.png", Path(folder) / "out.png"
            Image.fromarray(photo).save(source)
            subprocess.run([imagemagick(), str(source), "-resize", f"{percent}%", str(result)], check=True,
                           capture_output=True)
            with Image.open(result) as image:
                return np.asarray(image.convert("L" if photo.ndim == 2 else "RGB"))
    return resize


def cases() -> list[GeometryCase]:
    from PIL import Image

    half = ("resized by 1/2",)
    found = [
        GeometryCase("half size, box", "Pillow resize BOX", _pillow(Image.BOX), half + ("box (area average), antialiased",)),
        GeometryCase("half size, bilinear", "Pillow resize BILINEAR", _pillow(Image.BILINEAR),
                     half + ("triangle (bilinear), antialiased",)),
        GeometryCase("half size, bicubic, non-square", "Pillow resize BICUBIC", _pillow(Image.BICUBIC),
                     half + ("Keys cubic a = -0.5", "antialiased"), size=(192, 256)),
        GeometryCase("half size, Lanczos, colour", "Pillow resize LANCZOS", _pillow(Image.LANCZOS),
                     ("the same kernel on each colour channel",) + half + ("Lanczos 3, antialiased",), colour=True),
        GeometryCase("half size, Lanczos, one pair", "Pillow resize LANCZOS", _pillow(Image.LANCZOS),
                     half + ("Lanczos 3, antialiased",), count=1),
        GeometryCase("half size, area, colour non-square", "cv2.resize INTER_AREA",
                     lambda p: cv2.resize(p, (p.shape[1] // 2, p.shape[0] // 2), interpolation=cv2.INTER_AREA),
                     half + ("box (area average), antialiased",), colour=True, size=(192, 256)),
        GeometryCase("third size, area", "cv2.resize INTER_AREA",
                     lambda p: cv2.resize(p, (p.shape[1] // 3, p.shape[0] // 3), interpolation=cv2.INTER_AREA),
                     ("resized by 1/3", "box (area average), antialiased"), size=(255, 255)),
        GeometryCase("3/4 size, Lanczos", "Pillow resize LANCZOS", _pillow_to(3, 4, Image.LANCZOS),
                     ("resized by 3/4", "Lanczos 3, antialiased", "pixel centres aligned")),
        GeometryCase("3/4 size, bicubic, colour non-square", "Pillow resize BICUBIC", _pillow_to(3, 4, Image.BICUBIC),
                     ("the same kernel on each colour channel", "resized by 3/4", "Keys cubic a = -0.5", "antialiased"),
                     colour=True, size=(192, 256)),
        GeometryCase("3/4 size, bilinear, not antialiased", "cv2.resize INTER_LINEAR", _opencv_to(3, 4, cv2.INTER_LINEAR),
                     ("resized by 3/4", "triangle (bilinear), not antialiased")),
        GeometryCase("256 to 170 (a ratio of 85/128), bilinear", "Pillow resize BILINEAR", _pillow_to(170, 256, Image.BILINEAR),
                     ("resized by 0.6641", "triangle (bilinear), antialiased")),
        GeometryCase("twice the size, bicubic", "Pillow resize BICUBIC", _pillow_to(2, 1, Image.BICUBIC),
                     ("resized by 2", "Keys cubic a = -0.5", "not antialiased"), size=(128, 128)),
        GeometryCase("three times the size, bicubic, one pair", "cv2.resize INTER_CUBIC", _opencv_to(3, 1, cv2.INTER_CUBIC),
                     ("resized by 3", "Keys cubic a = -0.75"), count=1, size=(96, 96)),
        GeometryCase("half size, bilinear, JPEG q95", "Pillow resize BILINEAR, Pillow JPEG", _pillow(Image.BILINEAR),
                     half + ("triangle (bilinear), antialiased",), jpeg=("pillow", 95)),
        GeometryCase("3x3 kernel, then cropped 3 left, 5 top, 1 right, 1 bottom", "cv2.filter2D, numpy crop",
                     lambda p: _blurred(p)[5:-1, 3:-1],
                     ("cropped: 3 columns off the left, 1 off the right, 5 rows off the top, 1 off the bottom",),
                     kernel=BLUR),
        GeometryCase("sub-pixel shift (+0.3, -0.4)", "cv2.warpAffine INTER_LINEAR",
                     lambda p: cv2.warpAffine(p, np.float32([[1, 0, 0.3], [0, 1, -0.4]]), p.shape[1::-1],
                                              borderMode=cv2.BORDER_REFLECT101),
                     ("a shift by (+0.31, -0.41) px (right, down) with triangle (bilinear)",)),
        GeometryCase("3x3 kernel, then rotated 90 degrees", "cv2.filter2D, np.rot90", lambda p: np.rot90(_blurred(p), -1),
                     ("then rotated 90 degrees clockwise",)),
        GeometryCase("flipped left to right, colour", "numpy", lambda p: p[:, ::-1], ("identity", "then flipped left to right"),
                     colour=True),
    ]
    if imagemagick():
        found += [GeometryCase("half size, ImageMagick -resize 50%", "ImageMagick", imagemagick_resize(50), half),
                  GeometryCase("3/4 size, ImageMagick -resize 75%", "ImageMagick", imagemagick_resize(75),
                               ("resized by 3/4", "the tool truncates")),
                  GeometryCase("twice the size, ImageMagick -resize 200%", "ImageMagick", imagemagick_resize(200),
                               ("resized by 2", "Mitchell-Netravali"), size=(128, 128))]
    return found


def bench_geometry() -> list[dict]:
    """One row per case (:func:`cases`): placement, words and held-out PSNR against the targets."""
    rows = []
    if imagemagick() is None:
        rows.append({"case": "ImageMagick -resize 50%, 75%, 200%", "tool": "ImageMagick", "met": "skipped: not installed"})
    with tempfile.TemporaryDirectory(prefix="img2kernel-bench-geometry-") as root:
        for n, case in enumerate(cases()):
            folder = Path(root) / str(n)
            (folder / "in").mkdir(parents=True)
            (folder / "out").mkdir()
            for i, photo in enumerate(photos(case.count, max(case.size))):
                photo = photo[: case.size[0], : case.size[1]]
                photo = np.ascontiguousarray(photo if case.colour else _gray(photo))
                _save(folder / "in", f"p{i}", photo, ".png")
                _save(folder / "out", f"p{i}", np.ascontiguousarray(case.make(photo)), ".png", case.jpeg)
            pairs, result, _, seconds = _fit_folder(folder, 15)
            summary = result.summary()
            found = identification_of(result.model, summary)
            scores = [m["psnr"] for _, m, _ in heldout_scores(result.model, result.border["rule"], pairs, "test", whole=False)]
            psnr = float(np.mean(scores)) if scores else float("nan")
            row = {"case": case.name, "tool": case.tool, "linear": result.linear, "held_out_psnr_db": psnr,
                   "identification": found["text"], "fit_s": seconds}
            # A JPEG file differs from any exact model by its own compression: its PSNR is shown, not judged.
            row["psnr_target"] = "n/a (JPEG)" if case.jpeg else f">= {PSNR_TARGET:g}"
            met = (result.linear and (case.jpeg is not None or psnr >= PSNR_TARGET)
                   and all(words in found["text"] for words in case.says))
            if case.kernel is not None:
                scale = float(np.max(np.abs(case.kernel)))
                truth = case.kernel.shape[-1]
                kernel = result.model.kernel[0, 0]
                error = (float(np.max(np.abs(kernel - case.kernel))) / scale if kernel.shape == case.kernel.shape
                         else float("nan"))
                reference = float(np.max(np.abs(reference_lstsq(pairs, truth)[0, 0] - case.kernel))) / scale
                row.update(kernel_error=error, lstsq64_error=reference)
                met = met and error <= max(2 * reference, 1e-3)
            row["verdict"] = verdict(summary, found).split(":")[0]
            row["met"] = bool(met)
            rows.append(row)
    return rows
