"""``img2kernel bench ladder``: the ladder of models on pairs made by other libraries.

Each case is a tool whose structure is known, applied to sample photos by scipy.ndimage,
Pillow, OpenCV or scikit-image and stored as that tool stores it; the pairs go through the
same fit as a ``pairs`` filter (linear fit, then the ladder). The targets
(docs/benchmarks.md, "The ladder of models"): rank filters up to 7x7 identified with the right footprint and rank and the
interior reproduced exactly; Sobel magnitudes >= 60 dB as ``magnitude``; blur then gamma and
clipped or absolute edge maps as ``curve`` within 2 noise floors; thresholded unsharp
masking as ``curve`` with its skip path, >= 40 dB; a blur in linear light as ``linear light``,
>= 45 dB; a blur between a tool's own curves (a power 3 and its inverse) as ``two curves``,
>= 45 dB; vignetting as a gain map and a blur growing towards the corners as a kernel map,
>= 40 dB; a filter no structured rung explains:
the CNN >= 3 dB above the best linear fit, or the table says it is not; each ladder <= 30 s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from img2kernel.fit.ladder import ladder_for_pairs
from img2kernel.fit.pairs import Pairs, fit_pairs
from img2kernel.models.rank import disk
from img2kernel.sources.pairs import SPLIT_CODES


@dataclass
class Case:
    name: str
    tool: Callable[[np.ndarray], np.ndarray]
    storage: str
    expected: str  # rung
    check: Callable[[object, dict], bool]  # (ladder, chosen row) -> target met
    target: str


def _u8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255)


def _pillow(filter_) -> Callable[[np.ndarray], np.ndarray]:
    from PIL import Image

    return lambda x: np.asarray(Image.fromarray(x.astype(np.uint8)).filter(filter_), dtype=np.float64)


def linear_light_blur(x: np.ndarray) -> np.ndarray:
    """An 8-bit image blurred in linear light, as editors do (GIMP's default): the sRGB decode,
    OpenCV's 5x5 Gaussian of sigma 1, the encode, rounded to 8 bits. Gray or colour."""
    from img2kernel.colour import srgb_decode, srgb_encode

    light = srgb_decode(np.asarray(x, dtype=np.float64) / 255)
    return _u8(255 * srgb_encode(cv2.GaussianBlur(light, (5, 5), 1.0)))


def gamma_space_blur(x: np.ndarray, gamma: float = 3.0) -> np.ndarray:
    """An 8-bit image blurred in a space of the tool's own: decoded by a power ``gamma`` (not
    sRGB's curve), OpenCV's 5x5 Gaussian of sigma 1.2, encoded by 1 / gamma, rounded. Gray or colour."""
    light = (np.asarray(x, dtype=np.float64) / 255) ** gamma
    return _u8(255 * np.clip(cv2.GaussianBlur(light, (5, 5), 1.2), 0, None) ** (1 / gamma))


def radius(height: int, width: int) -> np.ndarray:
    """(H, W) distance of each pixel centre from the image's centre, 1 at the corners."""
    rows, columns = np.mgrid[0:height, 0:width]
    return np.hypot((rows + 0.5) / height - 0.5, (columns + 0.5) / width - 0.5) / np.hypot(0.5, 0.5)


def vignetting(x: np.ndarray) -> np.ndarray:
    """A lens's vignetting: the image times 1 - 0.3 r^2 - 0.15 r^4 (r: 0 at the centre, 1 at the
    corners, where the gain is 0.55), rounded to 8 bits. Gray or colour."""
    r = radius(*x.shape[:2])
    gain = 1 - 0.3 * r**2 - 0.15 * r**4
    return _u8(np.asarray(x, dtype=np.float64) * (gain if x.ndim == 2 else gain[..., None]))


def radial_blur(x: np.ndarray) -> np.ndarray:
    """A blur that grows towards the corners as a lens's does: at each pixel a 7x7 Gaussian whose
    sigma rises linearly from 0.5 at the centre to 1.5 at the corners (OpenCV's kernels at 11
    sigmas, blended linearly between the two nearest), rounded to 8 bits. Gray or colour."""
    sigmas = np.linspace(0.5, 1.5, 11)
    image = np.asarray(x, dtype=np.float64)
    blurred = np.stack([cv2.GaussianBlur(image, (7, 7), s, borderType=cv2.BORDER_REFLECT_101) for s in sigmas])
    t = radius(*x.shape[:2]) * (len(sigmas) - 1)
    low = np.minimum(np.floor(t).astype(int), len(sigmas) - 2)
    frac = t - low
    if image.ndim == 3:
        low, frac = low[..., None], frac[..., None]
    pick = lambda i: np.take_along_axis(blurred, i[None], axis=0)[0]  # noqa: E731
    return _u8((1 - frac) * pick(low) + frac * pick(low + 1))


def _rank_case(name, tool, footprint: np.ndarray, rank: int) -> Case:
    def check(ladder, row):
        model = ladder.model
        return (ladder.chosen == "rank" and np.array_equal(model.footprint, footprint) and model.rank == rank
                and row["residual"] == 0)

    return Case(name, tool, "uint8", "rank", check, f"rank, footprint {footprint.shape[0]}x{footprint.shape[0]}, rank {rank}, exact")


def cases() -> list[Case]:
    from PIL import ImageFilter
    from scipy import ndimage
    from skimage.filters import sobel

    laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], float)
    square = lambda k: np.ones((k, k), bool)  # noqa: E731
    out: list[Case] = []
    for k in (3, 5, 7):
        out.append(_rank_case(f"scipy median {k}x{k}", lambda x, k=k: ndimage.median_filter(x, size=k), square(k), k * k // 2))
        out.append(_rank_case(f"cv2.erode {k}x{k}", lambda x, k=k: cv2.erode(x, np.ones((k, k), np.uint8)), square(k), 0))
        out.append(_rank_case(f"Pillow MaxFilter({k})", _pillow(ImageFilter.MaxFilter(k)), square(k), k * k - 1))
    out.append(_rank_case("scipy dilation, disk radius 2", lambda x: ndimage.grey_dilation(x, footprint=disk(2)), disk(2), 12))
    magnitude = lambda ladder, row: ladder.chosen == "magnitude" and row["psnr_db"] >= 60  # noqa: E731
    out.append(Case("sobel magnitude (float, cv2.Sobel)",
                    lambda x: np.sqrt(cv2.Sobel(x, cv2.CV_64F, 1, 0) ** 2 + cv2.Sobel(x, cv2.CV_64F, 0, 1) ** 2),
                    "float64", "magnitude", magnitude, "magnitude, >= 60 dB"))
    out.append(Case("skimage.filters.sobel (its own normalisation)", lambda x: sobel(x / 255.0), "float64", "magnitude",
                    magnitude, "magnitude, >= 60 dB"))
    curve = lambda ladder, row: ladder.chosen == "curve" and row["residual_in_floors"] <= 2  # noqa: E731
    out.append(Case("Gaussian 5x5 s1 then gamma 0.45, 8-bit", lambda x: _u8(255 * (cv2.GaussianBlur(x, (5, 5), 1.0) / 255) ** 0.45),
                    "uint8", "curve", curve, "curve, <= 2 noise floors"))
    out.append(Case("cv2.convertScaleAbs(Sobel x), clipped edge map", lambda x: _u8(np.abs(cv2.Sobel(x, cv2.CV_64F, 1, 0))),
                    "uint8", "curve", curve, "curve, <= 2 noise floors"))
    out.append(Case("|Laplacian|, 8-bit", lambda x: _u8(np.abs(cv2.filter2D(x, -1, laplacian))), "uint8", "curve", curve,
                    "curve, <= 2 noise floors"))
    out.append(Case("Pillow UnsharpMask(2, 150, threshold 3)", _pillow(ImageFilter.UnsharpMask(2, 150, 3)), "uint8", "curve",
                    lambda ladder, row: ladder.chosen == "curve" and ladder.model.skip is not None and row["psnr_db"] >= 40,
                    "curve with skip path, >= 40 dB"))

    out.append(Case("Gaussian 5x5 s1 in linear light (sRGB decode, blur, encode), 8-bit", linear_light_blur, "uint8",
                    "linear light", lambda ladder, row: ladder.chosen == "linear light" and row["psnr_db"] >= 45,
                    "linear light, >= 45 dB"))

    out.append(Case("Gaussian 5x5 s1.2 between a power 3 decode and its inverse, 8-bit", gamma_space_blur, "uint8",
                    "two curves", lambda ladder, row: ladder.chosen == "two curves" and row["psnr_db"] >= 45,
                    "two curves, >= 45 dB"))

    def field_check(model_name: str):
        return lambda ladder, row: ladder.chosen == "spatially varying" and ladder.model.name == model_name and row["psnr_db"] >= 40

    out.append(Case("vignetting, gain 1 - 0.3 r^2 - 0.15 r^4, 8-bit", vignetting, "uint8", "spatially varying",
                    field_check("gain_map"), "gain map, >= 40 dB"))
    out.append(Case("7x7 Gaussian blur, sigma 0.5 (centre) to 1.5 (corners), 8-bit", radial_blur, "uint8",
                    "spatially varying", field_check("kernel_map"), "kernel map, >= 40 dB"))

    def cnn_check(ladder, row):
        cnn = next((r for r in ladder.rows if r["model"] == "cnn"), None)
        return cnn is not None and cnn["psnr_db"] >= ladder.rows[0]["psnr_db"] + 3

    out.append(Case("cv2.bilateralFilter(5, 40, 3), 8-bit", lambda x: _u8(cv2.bilateralFilter(x.astype(np.float32), 5, 40, 3)),
                    "uint8", "cnn", cnn_check, "cnn >= 3 dB above linear, or said"))
    return out


def photo_pairs(tool, storage: str, count: int = 6, side: int = 256) -> Pairs:
    """Pairs of sample photos (center crops, gray, 8-bit values) and ``tool`` of them: 4 train, 1 val, 1 test."""
    from img2kernel.sources.downloads import sample_image_paths

    photos = []
    for path in sample_image_paths():
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is not None and min(image.shape) >= side:
            top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
            photos.append(image[top : top + side, left : left + side].astype(np.float64))
        if len(photos) == count:
            break
    outputs = [np.asarray(tool(x), dtype=np.float64) for x in photos]
    codes = [np.full(x.shape, SPLIT_CODES[s], np.uint8) for x, s in zip(photos, ["train"] * 4 + ["val", "test"])]
    return Pairs([f"photo{i}" for i in range(len(photos))], [x[..., None] for x in photos], [y[..., None] for y in outputs],
                 codes, "uint8", storage)


def bench_ladder(names: list[str] | None = None) -> list[dict]:
    """One row per case: what the ladder chose, its fit, the seconds, and whether the target was met."""
    rows = []
    for case in cases():
        if names and not any(n.lower() in case.name.lower() for n in names):
            continue
        pairs = photo_pairs(case.tool, case.storage)
        started = time.perf_counter()
        fit = fit_pairs(pairs, max_ksize=7)
        linear_seconds = time.perf_counter() - started
        ladder = ladder_for_pairs(pairs, fit)
        seconds = time.perf_counter() - started - linear_seconds
        row = next(r for r in ladder.rows if r["model"] == ladder.chosen)
        cnn = next((r for r in ladder.rows if r["model"] == "cnn"), None)
        rows.append({
            "tool": case.name,
            "chosen": ladder.chosen,
            "model": row["description"][:70],
            "params": row["params"],
            "floors": f"{row['residual_in_floors']:.3g}",
            "psnr_db": f"{row['psnr_db']:.1f}",
            "linear_psnr_db": f"{ladder.rows[0]['psnr_db']:.1f}",
            "cnn_psnr_db": f"{cnn['psnr_db']:.1f}" if cnn else "-",
            "rungs": len(ladder.rows),
            "ladder_s": round(seconds, 1),
            "target": case.target,
            "met": bool(case.check(ladder, row)) and seconds <= 30,
        })
    return rows
