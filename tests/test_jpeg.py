"""Pairs whose outputs were saved as JPEG by Pillow and OpenCV: fitted through the compression (fit.jpeg)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from img2kernel.evaluate.pairs import compression_note, identification_of, verdict
from img2kernel.fit import jpeg
from img2kernel.fit.lstsq import FitSample
from img2kernel.fit.pairs import fit_pairs, to_fit_pairs
from img2kernel.images import jpeg_facts
from img2kernel.sources.pairs import list_pairs
from img2kernel.sources.pairs_store import read_pairs

from test_pairs import gray_photos, rgb_photos

GAUSS5 = cv2.getGaussianKernel(5, 1.0) @ cv2.getGaussianKernel(5, 1.0).T
SHARPEN = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float64)


def save_jpeg(path: Path, array: np.ndarray, quality: int, writer: str) -> None:
    if writer == "pillow":
        Image.fromarray(array).save(path, quality=quality)
    else:
        cv2.imwrite(str(path), array, [cv2.IMWRITE_JPEG_QUALITY, quality])


def jpeg_pairs(root: Path, kernel: np.ndarray, quality: int, writer: str, count: int, input_jpeg: bool = False):
    (root / "in").mkdir(parents=True)
    (root / "out").mkdir()
    for i, photo in enumerate(gray_photos(count, (384, 384))):
        if input_jpeg:  # a photo that was itself a JPEG: the tool filtered its decoded pixels
            save_jpeg(root / "in" / f"p{i}.jpg", photo, 90, writer)
            photo = np.asarray(Image.open(root / "in" / f"p{i}.jpg"))
        else:
            Image.fromarray(photo).save(root / "in" / f"p{i}.png")
        save_jpeg(root / "out" / f"p{i}.jpg", cv2.filter2D(photo, -1, kernel, borderType=cv2.BORDER_REFLECT_101),
                  quality, writer)
    spec = {"name": "jpeg", "kind": "pairs", "inputs": str(root / "in"), "outputs": str(root / "out")}
    loaded, manifest = read_pairs(spec, list_pairs(spec))
    return to_fit_pairs(loaded, manifest), manifest


def kernel_error(model, true: np.ndarray) -> float:
    return float(np.max(np.abs(model.kernel[0, 0] - true)) / np.max(np.abs(true)))


@pytest.mark.parametrize("writer", ["pillow", "opencv"])
@pytest.mark.parametrize("quality", [75, 85, 95])
def test_jpeg_facts_name_the_quality_and_the_grid(tmp_path, writer, quality):
    photo = gray_photos(1, (64, 64))[0]
    save_jpeg(tmp_path / "a.jpg", photo, quality, writer)
    cv2.imwrite(str(tmp_path / "b.jpg"), np.dstack([photo] * 3), [cv2.IMWRITE_JPEG_QUALITY, quality])
    Image.fromarray(photo).save(tmp_path / "c.png")
    gray, colour = jpeg_facts(tmp_path / "a.jpg"), jpeg_facts(tmp_path / "b.jpg")
    assert gray["quality"] == quality and gray["subsampling"] == "gray" and len(gray["luma_table"]) == 64
    assert colour["quality"] == quality and colour["components"] == 3 and colour["subsampling"] == "4:2:0"
    assert jpeg_facts(tmp_path / "c.png") is None


@pytest.mark.parametrize("kernel, quality, writer, count", [
    (GAUSS5, 85, "pillow", 5), (GAUSS5, 95, "opencv", 5), (SHARPEN, 85, "opencv", 3), (SHARPEN, 95, "pillow", 1),
])
def test_linear_tools_saved_as_jpeg_are_linear_and_exact_to_two_percent(tmp_path, kernel, quality, writer, count):
    pairs, manifest = jpeg_pairs(tmp_path, kernel, quality, writer, count)
    assert all("output_jpeg" in entry for entry in manifest["keys"].values())
    result = fit_pairs(pairs, max_ksize=7)
    summary = result.summary()
    assert result.linear and result.ksize == kernel.shape[0]
    assert kernel_error(result.model, kernel) <= 0.02
    assert summary["compression"]["quality"] == f"q{quality}" and summary["compression"]["refinement"]["newton_steps"] >= 1
    assert verdict(summary, identification_of(result.model, summary)).startswith(f"linear, within JPEG q{quality} compression")
    # The same pixels compared as pixels: a clipped ringing and zeroed coefficients pull the kernel off.
    pairs.output_jpeg = []
    plain = fit_pairs(pairs, ksize=kernel.shape[0])
    assert kernel_error(plain.model, kernel) > 2 * kernel_error(result.model, kernel)


def test_a_smooth_kernel_from_one_jpeg_pair_is_its_separable_part(tmp_path):
    """One pair, a Gaussian, q90: the full kernel's finest detail is what the quantizer zeroed;
    its separable part, held to the intervals, explains the file as well and is the one kept."""
    pairs, _ = jpeg_pairs(tmp_path, GAUSS5, 90, "pillow", 1)
    result = fit_pairs(pairs, max_ksize=7)
    chosen = next(s for s in result.structures if s["chosen"])
    assert result.linear and result.ksize == 5 and chosen["structure"].startswith("separable") and chosen["parameters"] == 10
    assert kernel_error(result.model, GAUSS5) <= 0.02
    assert np.linalg.matrix_rank(result.model.kernel[0, 0], tol=1e-9) == 1


def test_jpeg_on_both_sides(tmp_path):
    pairs, _ = jpeg_pairs(tmp_path, SHARPEN, 90, "pillow", 3, input_jpeg=True)
    result = fit_pairs(pairs, max_ksize=7)
    assert result.linear and result.ksize == 3 and kernel_error(result.model, SHARPEN) <= 0.02


def test_the_weighted_sums_are_least_squares_on_the_dct_rows(tmp_path):
    """The JPEG normal equations solve the weighted least squares of explicit DCT rows (numpy lstsq)."""
    pairs, _ = jpeg_pairs(tmp_path, SHARPEN, 85, "pillow", 1)
    grids = jpeg.grids_of(pairs)
    sample = FitSample(pairs.inputs[0], pairs.outputs[0], pairs.usable(0, None))
    equations = jpeg.jpeg_normal_equations([sample], grids, 3)
    kernel, bias = equations.solve(3)
    ok = jpeg.usable_blocks(sample, grids[0], 1)
    rows, targets, weights = [], [], []
    for features, target, steps in jpeg.band_rows(sample, grids[0], ok, 3, np.full(1, 128.0), np.full(1, 128.0)):
        rows.append(np.vstack([features, jpeg.constant_rows(len(steps) // 64)[None]]).T)
        targets.append(target[:, 0])
        weights.append(1 / np.sqrt(np.square(steps) + grids[0].roundings))
    a, b, w = np.vstack(rows), np.concatenate(targets), np.concatenate(weights)
    theta = np.linalg.lstsq(a * w[:, None], b * w, rcond=None)[0]
    assert np.allclose(kernel.reshape(-1), theta[:9], atol=1e-9)
    assert bias[0] == pytest.approx(theta[9] + 128 - 128 * theta[:9].sum(), abs=1e-7)


def test_a_linear_tool_leaves_at_most_the_floor_in_jpeg_units(tmp_path):
    from img2kernel.models import AffineKernel
    from img2kernel.thresholds import ROUNDING_RMS

    pairs, _ = jpeg_pairs(tmp_path, GAUSS5, 85, "pillow", 3)

    true = AffineKernel(GAUSS5[None, None], np.zeros(1))
    assert jpeg.jpeg_residual(true, pairs, jpeg.grids_of(pairs), None, 2) <= ROUNDING_RMS
    shifted = AffineKernel(np.roll(GAUSS5, 1, axis=1)[None, None], np.zeros(1))  # the wrong kernel is far off
    assert jpeg.jpeg_residual(shifted, pairs, jpeg.grids_of(pairs), None, 2) > 4 * ROUNDING_RMS


SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])


def colour_jpeg_pairs(root: Path, tool, quality: int, writer: str, count: int, subsampling: int | None = None):
    """RGB PNG inputs and the tool's RGB outputs saved as colour JPEGs (4:2:0 unless told)."""
    (root / "in").mkdir(parents=True)
    (root / "out").mkdir()
    for i, photo in enumerate(rgb_photos(count, (384, 384))):
        Image.fromarray(photo).save(root / "in" / f"p{i}.png")
        made = tool(photo)
        if writer == "pillow":
            Image.fromarray(made).save(root / "out" / f"p{i}.jpg", quality=quality,
                                       **({} if subsampling is None else {"subsampling": subsampling}))
        else:
            cv2.imwrite(str(root / "out" / f"p{i}.jpg"), made[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    spec = {"name": "jpeg", "kind": "pairs", "inputs": str(root / "in"), "outputs": str(root / "out")}
    loaded, manifest = read_pairs(spec, list_pairs(spec))
    return to_fit_pairs(loaded, manifest)


def test_a_colour_files_luma_is_its_y_plane(tmp_path):
    """The premise of luma_pairs: the JFIF luma of the decoded RGB is the file's own Y plane up to
    the decoder's RGB rounding, whatever the chroma subsampling did."""
    photo = rgb_photos(1, (128, 128))[0]
    Image.fromarray(photo).save(tmp_path / "a.jpg", quality=75)  # 4:2:0
    with Image.open(tmp_path / "a.jpg") as image:
        rgb = np.asarray(image, dtype=np.float64)
    with Image.open(tmp_path / "a.jpg") as image:
        image.draft("YCbCr", image.size)  # the decoder's planes, no colour conversion
        y_plane = np.asarray(image, dtype=np.float64)[..., 0]
    inside = (rgb.min(axis=2) > 0) & (rgb.max(axis=2) < 255)
    difference = (rgb @ jpeg.JFIF_LUMA - y_plane)[inside]
    assert np.abs(difference).max() <= 1.0 and np.sqrt(np.mean(difference**2)) < 0.35


@pytest.mark.parametrize("kernel, quality, writer, count, subsampling, target", [
    (GAUSS5, 85, "pillow", 3, None, 0.05), (SHARPEN, 85, "opencv", 3, None, 0.05), (SHARPEN, 95, "pillow", 1, 0, 0.02),
])
def test_one_kernel_on_each_channel_saved_as_colour_jpeg(tmp_path, kernel, quality, writer, count, subsampling, target):
    pairs = colour_jpeg_pairs(tmp_path, lambda p: cv2.filter2D(p, -1, kernel, borderType=cv2.BORDER_REFLECT_101),
                              quality, writer, count, subsampling)
    result = fit_pairs(pairs, max_ksize=7)
    summary = result.summary()
    assert result.linear and result.ksize == kernel.shape[0] and result.model.kernel.shape[:2] == (3, 3)
    true = np.eye(3)[:, :, None, None] * kernel
    assert float(np.max(np.abs(result.model.kernel - true)) / np.max(np.abs(kernel))) <= target
    text = verdict(summary, identification_of(result.model, summary))
    assert text.startswith(f"linear, within JPEG q{quality} compression: the same kernel on each colour channel"), text
    # The edge ring under JPEG noise tells reflect-101 from reflect only for the larger kernel.
    assert result.border["rule"] in ({"reflect101"} if kernel.shape[0] == 5 else {"reflect101", "reflect"})


def test_a_colour_jpeg_whose_channels_mix_is_fitted_on_pixels_and_says_so(tmp_path):
    pairs = colour_jpeg_pairs(tmp_path, lambda p: np.clip(p @ SEPIA.T, 0, 255).astype(np.uint8), 90, "pillow", 3)
    result = fit_pairs(pairs, max_ksize=5)
    summary = result.summary()
    assert summary["compression"]["kind"] == "jpeg-pixels" and summary["compression"]["luma_linear"]
    assert "fitted on their decoded pixels" in compression_note(summary)
    assert "within JPEG" not in verdict(summary, identification_of(result.model, summary))


@pytest.mark.parametrize("colour", [False, True])
def test_a_valid_mode_jpeg_output_has_its_grid_at_the_margin(tmp_path, colour):
    """An output 2 pixels smaller on every side (a 5x5 tool in valid mode) saved as JPEG: the
    file's 8x8 grid starts at the margin, and the fit goes through it."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    for i, photo in enumerate(rgb_photos(3, (384, 384)) if colour else gray_photos(3, (384, 384))):
        Image.fromarray(photo).save(tmp_path / "in" / f"p{i}.png")
        Image.fromarray(cv2.filter2D(photo, -1, GAUSS5)[2:-2, 2:-2]).save(tmp_path / "out" / f"p{i}.jpg", quality=90)
    spec = {"name": "jpeg", "kind": "pairs", "inputs": str(tmp_path / "in"), "outputs": str(tmp_path / "out")}
    loaded, manifest = read_pairs(spec, list_pairs(spec))
    result = fit_pairs(to_fit_pairs(loaded, manifest), max_ksize=7)
    assert manifest["keys"]["p0"]["placement"] == {"transform": "none", "origin": [2, 2], "stride": [1, 1], "end": [2, 2]}
    assert result.border["rule"] == "valid-mode output"
    assert result.linear and result.ksize == 5 and result.compression["kind"] == "jpeg"
    assert kernel_error(result.model, GAUSS5) <= 0.05
