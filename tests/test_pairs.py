"""Your own pairs: kernels behind other libraries' outputs (Pillow, scipy.ndimage, OpenCV),
found with their size, orientation, offset, channels and border rule; and bad input named."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
from PIL import Image, ImageFilter

from img2kernel.pipeline.config import ConfigError, check_filters
from img2kernel.sources.filters import deriv_kernel
from img2kernel.fit.lstsq import FitSample, normal_equations
from img2kernel.fit.pairs import fit_pairs, load_pairs, to_fit_pairs
from img2kernel.bench.pairs import ffmpeg_unsharp, ffmpeg_unsharp_kernel, gray_first
from img2kernel.evaluate.identify import ORIENTATIONS, identify, match_kernel
from img2kernel.evaluate.pairs import identification_of, precision_note, verdict
from img2kernel.thresholds import LINEAR_FACTOR, ROUNDING_RMS
from img2kernel.sources.pairs import list_pairs
from img2kernel.sources.pairs_store import build_pairs_store, read_pairs

SOBEL_X = deriv_kernel(1, 0, 3)
LABEL = "config/filters.yaml"


def rgb_photos(count: int = 4, size: tuple[int, int] = (96, 128)) -> list[np.ndarray]:
    """Centre crops of scikit-image's colour photos, uint8 RGB."""
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket(),
              skimage.data.immunohistochemistry()]
    crops = []
    for photo in photos[:count]:
        top, left = (photo.shape[0] - size[0]) // 2, (photo.shape[1] - size[1]) // 2
        crops.append(np.ascontiguousarray(photo[top : top + size[0], left : left + size[1], :3]))
    return crops


def gray_photos(count: int = 4, size=(96, 128)) -> list[np.ndarray]:
    return [cv2.cvtColor(p, cv2.COLOR_RGB2GRAY) for p in rgb_photos(count, size)]


def write_pairs(root: Path, inputs: list[np.ndarray], outputs: list[np.ndarray], out_suffix: str = ".png") -> dict:
    """Save with Pillow (PNG) or OpenCV (float TIFF); returns a pairs spec."""
    (root / "in").mkdir(parents=True, exist_ok=True)
    (root / "out").mkdir(parents=True, exist_ok=True)
    for i, (x, y) in enumerate(zip(inputs, outputs)):
        Image.fromarray(x).save(root / "in" / f"photo {i}.png")
        if out_suffix == ".png":
            Image.fromarray(y).save(root / "out" / f"photo {i}.png")
        else:
            cv2.imwrite(str(root / "out" / f"photo {i}{out_suffix}"), y[..., ::-1] if y.ndim == 3 else y)
    return {"name": "mine", "kind": "pairs", "inputs": str(root / "in"), "outputs": str(root / "out")}


def fit_spec(spec: dict, **options):
    loaded, manifest = read_pairs(spec, list_pairs(spec))
    pairs = to_fit_pairs(loaded, manifest)
    result = fit_pairs(pairs, **options)
    return result, identify(result.model, noise_floor=result.noise_floor), manifest


def uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("tool, orientation", [(ndi.convolve, "rotated 180 degrees (the tool convolves)"),
                                               (ndi.correlate, "as is")])
def test_scipy_convolve_and_correlate_are_told_apart(tmp_path, tool, orientation):
    photos = gray_photos()
    outputs = [uint8(tool(p.astype(np.float64), SOBEL_X / 8) + 128) for p in photos]
    result, found, _ = fit_spec(write_pairs(tmp_path, photos, outputs))
    assert result.linear and result.ksize == 3
    assert found["kernel"]["name"] == "sobel_x (ksize 3)" and found["kernel"]["scale"] == pytest.approx(0.125, rel=1e-3)
    assert found["kernel"]["orientation"].startswith(orientation)
    assert result.border["rule"] in ("reflect", "replicate") and "reflect" in result.border["equivalent"]
    assert abs(result.model.bias[0] - 128) < 1


def test_pillow_sharpen_on_colour_is_the_same_kernel_per_channel_with_its_own_border(tmp_path):
    photos = rgb_photos()
    outputs = [np.asarray(Image.fromarray(p).filter(ImageFilter.SHARPEN)) for p in photos]
    result, found, manifest = fit_spec(write_pairs(tmp_path, photos, outputs), max_ksize=5)
    assert manifest["channels"] == {"input": 3, "output": 3}
    assert result.linear and result.ksize == 3 and result.saturated_pixels > 0
    assert found["channels"] == "the same kernel on each colour channel"
    assert found["kernel"]["name"] == "Pillow SHARPEN" and found["kernel"]["scale"] == pytest.approx(1, abs=1e-3)
    assert result.border["rule"] == "unfiltered"  # Pillow's kernel filters copy the edge pixels


def test_opencv_rgb_to_gray_then_sobel_saved_as_float_tiff(tmp_path):
    photos = rgb_photos()
    # Gray in float32 (cv2.cvtColor on uint8 would round the gray image: a step no kernel has).
    outputs = [cv2.Sobel(cv2.cvtColor(p.astype(np.float32), cv2.COLOR_RGB2GRAY), cv2.CV_32F, 0, 1, ksize=5) for p in photos]
    result, found, manifest = fit_spec(write_pairs(tmp_path, photos, outputs, ".tif"))
    assert manifest["output_storage"] == "float32" and result.model.c_in == 3 and result.model.c_out == 1
    assert result.ksize == 5 and result.linear and result.border["rule"] == "reflect101"
    assert found["channels"].startswith("RGB to gray") and "Rec. 601" in found["channels"]
    assert found["kernel"]["name"] == "sobel_y (ksize 5)" and found["kernel"]["orientation"].startswith("as is")


def test_pillow_kernel_with_scale_and_offset(tmp_path):
    photos = gray_photos()
    kernel = ImageFilter.Kernel((3, 3), SOBEL_X.ravel().tolist(), scale=4, offset=100)
    outputs = [np.asarray(Image.fromarray(p).filter(kernel)) for p in photos]
    result, found, _ = fit_spec(write_pairs(tmp_path, photos, outputs))
    assert result.linear and found["kernel"]["name"] == "sobel_x (ksize 3)"
    assert found["kernel"]["scale"] == pytest.approx(0.25, rel=1e-3)
    assert found["kernel"]["orientation"].startswith("as is")  # Pillow flips rows (see below): sobel_x cannot tell
    assert abs(result.model.bias[0] - 100) < 1
    assert "offset +100" in found["text"] or "offset +99" in found["text"]


def test_a_tool_that_truncates_is_said_to_and_reproduced(tmp_path):
    """ImageMagick and GraphicsMagick store 8 bits by truncation: the offset is -0.5, and said so."""
    photos = gray_photos(4, (96, 128))
    gauss = cv2.getGaussianKernel(5, 1.0) @ cv2.getGaussianKernel(5, 1.0).T
    outputs = [np.floor(cv2.filter2D(p.astype(np.float64), -1, gauss)).astype(np.uint8) for p in photos]
    result, found, _ = fit_spec(write_pairs(tmp_path, photos, outputs))
    assert result.linear and found["truncates"] and abs(result.model.bias[0] + 0.5) < 0.1
    assert found["text"].endswith("offset -0.5: the tool truncates to integers instead of rounding"), found["text"]
    made = result.model.predict(photos[0], result.border["rule"])
    assert np.mean(made == outputs[0]) > 0.98  # rounding v - 0.48 is the tool's floor(v) but where v is within 0.02 of .5
    rounded = [uint8(cv2.filter2D(p.astype(np.float64), -1, gauss)) for p in photos]
    assert not fit_spec(write_pairs(tmp_path / "rounded", photos, rounded))[1]["truncates"]


def said(result) -> str:
    """The verdict `img2kernel fit` and the evaluation print."""
    summary = result.summary()
    return verdict(summary, identification_of(result.model, summary))


def test_a_tool_that_works_in_8_bit_yuv_is_linear_up_to_that_rounding(tmp_path):
    """ffmpeg's RGB unsharp goes through yuv444p: its kernel is found, in RGB and in YCbCr, and the
    two 8-bit roundings inside the tool are computed from it, not called "not linear"."""
    photos = rgb_photos(4, (96, 128))
    result, _, _ = fit_spec(write_pairs(tmp_path, photos, [ffmpeg_unsharp(p) for p in photos]), max_ksize=7)
    assert result.residual_rms > LINEAR_FACTOR * ROUNDING_RMS  # the output's own floor would call it not linear
    assert result.linear and result.ksize == 5
    truth = ffmpeg_unsharp_kernel()
    assert np.max(np.abs(result.model.kernel - truth)) / np.max(np.abs(truth)) < 5e-3
    inside = result.precision["intermediate"]
    assert inside["space"] == "YCbCr, BT.601 limited range (ffmpeg's yuv444p)" and inside["rounds_back"]
    assert next(s for s in result.structures if s["chosen"])["structure"] == f"per-channel in {inside['space']}"
    text = said(result)
    assert text.startswith("linear up to an intermediate 8-bit rounding (the tool filters in 8-bit YCbCr, BT.601 limited "
                           "range (ffmpeg's yuv444p), rounding on the way in and back): in YCbCr"), text
    assert "Y: 2 x identity -1 x gaussian" in text.replace("2.01", "2").replace("1.01", "1") and "Cb: identity" in text, text


def test_a_tool_that_rounds_to_gray_first_is_linear_up_to_that_rounding(tmp_path):
    """Pillow's 8-bit gray, then a float Sobel: 3x3, RGB to gray with Rec. 601 weights, and the
    rounding (1 level RMS through the Sobel, against a float file's 1e-4) explained."""
    photos = rgb_photos(4, (96, 128))
    result, _, _ = fit_spec(write_pairs(tmp_path, photos, [gray_first(p) for p in photos], ".tif"), max_ksize=7)
    assert result.linear and result.ksize == 3 and result.residual_rms > 0.5
    text = said(result)
    assert text.startswith("linear up to an intermediate 8-bit rounding (the tool rounds to 8-bit gray with Rec. 601 weights "
                           "(Pillow, OpenCV) first): RGB to gray with weights"), text
    assert "(Rec. 601 (OpenCV, Pillow)), then sobel_x (ksize 3) x 1" in text, text
    note = precision_note(result.summary())
    assert note.startswith("that rounding, computed from the fitted kernel, accounts for 0.8")


@pytest.mark.parametrize("tool", [lambda p: np.asarray(Image.fromarray(p).filter(ImageFilter.MedianFilter(3))),
                                  lambda p: np.asarray(Image.fromarray(p).convert("L").filter(ImageFilter.MedianFilter(3)))],
                         ids=["median per channel", "gray, then a median"])
def test_no_rounding_explains_a_nonlinear_tool(tmp_path, tool):
    photos = rgb_photos(4, (96, 128))
    result, _, _ = fit_spec(write_pairs(tmp_path, photos, [tool(p) for p in photos]), max_ksize=5)
    assert not result.linear and result.precision["intermediate"] is None
    assert said(result).startswith("not a linear filter")


def test_8_bit_values_in_a_16_bit_file_are_judged_and_written_in_their_own_steps(tmp_path, capsys):
    from img2kernel.cli.main import main

    photos = gray_photos(5)
    gauss = cv2.getGaussianKernel(5, 1.0) @ cv2.getGaussianKernel(5, 1.0).T
    outputs = [uint8(cv2.filter2D(p.astype(np.float64), -1, gauss)).astype(np.uint16) * 257 for p in photos]
    spec = write_pairs(tmp_path, photos[:4], outputs[:4])
    result, _, _ = fit_spec(spec)
    assert result.linear and result.noise_floor == pytest.approx(257 * ROUNDING_RMS)
    assert result.model.output == "uint16_x257"
    assert said(result).startswith("linear, 8-bit values stored in a 16-bit file (x257): gaussian sigma 1 (5x5) x 257")
    files = [str(tmp_path / d / f"photo {i}.png") for i in range(4) for d in ("in", "out")]
    assert main(["fit", *files, "-o", str(tmp_path / "m.safetensors")]) == 0
    assert "8-bit values stored in a 16-bit file (x257)" in capsys.readouterr().out
    Image.fromarray(photos[4]).save(tmp_path / "fresh.png")  # a photo the fit never saw
    assert main(["apply", str(tmp_path / "m.safetensors"), str(tmp_path / "fresh.png"), str(tmp_path / "made.png")]) == 0
    made = np.asarray(Image.open(tmp_path / "made.png"))
    assert made.dtype == np.uint16 and np.all(made % 257 == 0) and np.mean(made == outputs[4]) > 0.97
    plain = [p.astype(np.uint16) * 256 + 17 for p in photos]  # a true 16-bit file: the step is one level
    assert fit_spec(write_pairs(tmp_path / "plain", photos[:4], plain[:4]))[0].precision["output_step"] == 1


def test_pillow_applies_its_kernels_flipped_up_down(tmp_path):
    """Found here, not told: Pillow's Kernel filter reads its kernel's rows in reverse order."""
    photos = gray_photos()
    outputs = [np.asarray(Image.fromarray(p).filter(ImageFilter.EMBOSS)) for p in photos]
    result, found, _ = fit_spec(write_pairs(tmp_path, photos, outputs))
    assert result.linear and found["identified"]
    assert found["kernel"]["name"] == "Pillow EMBOSS" and found["kernel"]["orientation"] == "flipped up-down"
    assert found["text"].startswith("Pillow EMBOSS x 1, flipped up-down, offset +128")


def test_8_bit_saturation_is_left_out_of_the_fit(tmp_path):
    photos = gray_photos()
    sharpen = np.array([[0, -2, 0], [-2, 9, -2], [0, -2, 0]], dtype=np.float32)
    outputs = [cv2.filter2D(p, -1, sharpen) for p in photos]  # OpenCV saturates uint8 results
    result, found, _ = fit_spec(write_pairs(tmp_path, photos, outputs))
    clipped = sum(int(((o == 0) | (o == 255)).sum()) for o in outputs)
    assert result.saturated_pixels == clipped > 1000
    assert result.linear and result.ksize == 3
    assert np.max(np.abs(result.model.kernel[0, 0] - sharpen)) / 9 < 1e-3


def test_a_kernel_larger_than_3x3_has_its_size_found(tmp_path):
    photos = gray_photos()
    kernel = np.random.default_rng(5).normal(size=(7, 7)).astype(np.float32)
    outputs = [cv2.filter2D(p.astype(np.float32), cv2.CV_32F, kernel) for p in photos]
    result, found, _ = fit_spec(write_pairs(tmp_path, photos, outputs, ".tif"), max_ksize=11)
    assert result.ksize == 7 and result.linear
    assert [s["ksize"] for s in result.sizes] == [1, 3, 5, 7, 9, 11]
    ls = result.model.kernel[0, 0]
    assert np.max(np.abs(ls - kernel)) / np.max(np.abs(kernel)) < 1e-5
    assert found["text"] == "no known kernel"


def test_one_pair_alone_is_split_by_tiles_and_reproduced(tmp_path):
    photo = gray_photos(1, (160, 200))[0]
    output = uint8(ndi.correlate(photo.astype(np.float64), deriv_kernel(0, 1, 3) / 4 + 0, mode="nearest") + 128)
    spec = write_pairs(tmp_path, [photo], [output])
    result, found, manifest = fit_spec(spec)
    assert manifest["split_mode"] == "tiles" and manifest["splits"] == {"tiles": 1}
    assert result.residual_split == "val" and result.linear
    assert found["kernel"]["name"] == "sobel_y (ksize 3)"
    assert result.border["rule"] == "replicate" or "replicate" in result.border["equivalent"]


def test_a_nonlinear_tool_is_judged_not_linear(tmp_path):
    photos = gray_photos()
    outputs = [np.asarray(Image.fromarray(p).filter(ImageFilter.MedianFilter(3))) for p in photos]
    result, _, _ = fit_spec(write_pairs(tmp_path, photos, outputs), max_ksize=5)
    assert not result.linear and result.residual_rms > 3 * result.noise_floor


def test_gray_to_colour_with_gains_per_channel(tmp_path):
    photos = gray_photos()
    outputs = [np.dstack([uint8(0.5 * p), uint8(0.8 * p), uint8(0.3 * p + 40)]) for p in photos]
    result, found, manifest = fit_spec(write_pairs(tmp_path, photos, outputs), max_ksize=3)
    assert manifest["channels"] == {"input": 1, "output": 3} and result.ksize == 1
    assert found["channels"].startswith("gray to RGB with gains")
    np.testing.assert_allclose(result.model.kernel[:, 0, 0, 0], [0.5, 0.8, 0.3], atol=2e-3)
    np.testing.assert_allclose(result.model.bias, [0, 0, 40], atol=0.5)


def test_a_valid_mode_output_is_aligned(tmp_path):
    photos = gray_photos()
    kernel = np.random.default_rng(2).normal(size=(5, 5))
    outputs = [ndi.correlate(p.astype(np.float64), kernel)[2:-2, 2:-2].astype(np.float32) for p in photos]
    result, _, _ = fit_spec(write_pairs(tmp_path, photos, outputs, ".tif"), max_ksize=7)
    assert result.ksize == 5 and result.border["rule"] == "valid-mode output"
    assert np.max(np.abs(result.model.kernel[0, 0] - kernel)) < 1e-4


def test_a_colour_matrix_then_a_blur_is_a_channel_matrix_times_one_kernel(tmp_path):
    """A tool that mixes the channels pays for the cross-channel sums and has them found."""
    photos = rgb_photos()
    matrix = np.array([[0.8, 0.15, 0.05], [0.1, 0.8, 0.1], [0.05, 0.15, 0.8]], dtype=np.float32)
    outputs = [cv2.GaussianBlur(cv2.transform(p.astype(np.float32), matrix), (5, 5), 1.0) for p in photos]
    result, _, _ = fit_spec(write_pairs(tmp_path, photos, outputs, ".tif"), max_ksize=7)
    chosen = next(s["structure"] for s in result.structures if s["chosen"])
    assert result.linear and result.ksize == 5 and chosen == "channel matrix x one kernel"
    gaussian = cv2.getGaussianKernel(5, 1.0) @ cv2.getGaussianKernel(5, 1.0).T
    truth = matrix[:, :, None, None] * gaussian
    assert np.max(np.abs(result.model.kernel - truth)) < 1e-4


def test_channels_that_mix_at_a_larger_size_than_their_own_kernels_are_sized_by_the_full_system(tmp_path):
    """Each channel's own kernel is 3x3 but green leaks into red through a 7x7 kernel: the size a
    kernel per channel would choose cannot hold it, so the full system's size search runs."""
    photos = rgb_photos()
    leak = np.random.default_rng(3).normal(size=(7, 7)).astype(np.float32) / 10

    def tool(p):
        f = p.astype(np.float32)
        out = np.dstack([cv2.blur(f[..., c], (3, 3), borderType=cv2.BORDER_REFLECT_101) for c in range(3)])
        out[..., 0] += cv2.filter2D(f[..., 1], -1, leak, borderType=cv2.BORDER_REFLECT_101)
        return out

    result, _, _ = fit_spec(write_pairs(tmp_path, photos, [tool(p) for p in photos], ".tif"), max_ksize=9)
    assert next(s["structure"] for s in result.structures if s["chosen"]) == "full"
    assert result.ksize == 7 and result.linear
    np.testing.assert_allclose(result.model.kernel[0, 1], leak, atol=1e-4)
    np.testing.assert_allclose(result.model.kernel[1, 1, 2:5, 2:5], np.full((3, 3), 1 / 9), atol=1e-4)


def test_sums_of_each_channel_alone_are_the_diagonal_blocks_of_the_full_sums():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    y = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    use = rng.random((40, 50)) < 0.6
    full = normal_equations([FitSample(x, y, use)], 5, input_storage="uint8", output_storage="uint8")
    own = normal_equations([FitSample(x, y, use)], 5, input_storage="uint8", output_storage="uint8",
                           cross_channel=False)
    for c in range(3):
        block = slice(25 * c, 25 * (c + 1))
        np.testing.assert_array_equal(own.xx[block, block], full.xx[block, block])
    np.testing.assert_array_equal(own.xy, full.xy)
    for structure in ("per-channel", "shared"):
        np.testing.assert_allclose(own.solve_structured(3, structure)[0], full.solve_structured(3, structure)[0],
                                   rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="cross_channel=True"):
        own.solve(3)
    mixing = np.zeros((3, 3, 3, 3))
    mixing[0, 1, 1, 1] = 1.0
    with pytest.raises(ValueError, match="mixes channels"):
        own.rms_residual(3, mixing, np.zeros(3))


def test_window_columns_are_each_masked_pixels_window():
    from numpy.lib.stride_tricks import sliding_window_view

    from img2kernel.fit.lstsq import window_columns

    rng = np.random.default_rng(4)
    band = rng.normal(size=(9, 20, 2))
    for mask in (np.ones((5, 16), bool), rng.random((5, 16)) < 0.5):
        expected = sliding_window_view(band, (5, 5), axis=(0, 1))[mask].reshape(int(mask.sum()), -1).T
        np.testing.assert_array_equal(window_columns(band, mask, 5), expected)


def test_float32_sums_of_8_bit_data_are_exact():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (70, 90, 1)).astype(np.float32)
    y = rng.integers(0, 256, (70, 90, 1)).astype(np.float32)
    use = np.ones((70, 90), bool)
    exact = normal_equations([FitSample(x, y, use)], 5, input_storage="uint8", output_storage="uint8")
    reference = normal_equations([FitSample(x, y, use)], 5, input_storage="float64", output_storage="float64")
    assert exact.exact and not reference.exact
    for k in (1, 3, 5):
        a, b = exact.solve(k), reference.solve(k)
        np.testing.assert_allclose(a[0], b[0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(a[1], b[1], rtol=1e-9, atol=1e-9)


def test_the_pairs_store_keeps_values_as_stored_and_keys_safe(tmp_path):
    photos = gray_photos(3)
    outputs = [(p.astype(np.uint16) * 257) for p in photos]
    spec = write_pairs(tmp_path, photos, outputs)
    manifest = build_pairs_store(spec, tmp_path / "s" / "in", tmp_path / "s" / "out")
    assert manifest["input_storage"] == "uint8" and manifest["output_storage"] == "uint16"
    pairs, _ = load_pairs(tmp_path / "s" / "in", tmp_path / "s" / "out")
    assert pairs.keys == ["photo_0", "photo_1", "photo_2"]  # "photo 0.png": spaces become _
    np.testing.assert_array_equal(pairs.outputs[0][..., 0], outputs[0])
    assert sorted(manifest["splits"]) == ["test", "train", "val"]


# ----------------------------------------------------------------------------- bad input


def filters_document(**entry):
    return {"filters": [{"name": "mine", "kind": "pairs", **entry}]}


def error_of(document) -> str:
    with pytest.raises(ConfigError) as raised:
        check_filters(copy.deepcopy(document), LABEL)
    return str(raised.value)


def test_bad_folders_are_named_before_any_job(tmp_path):
    (tmp_path / "empty").mkdir()
    where = f"{LABEL}: filter 'mine' (entry 1): field"
    message = error_of(filters_document(inputs=str(tmp_path / "missing"), outputs=str(tmp_path / "empty")))
    assert message.startswith(f"{where} 'inputs': folder") and "does not exist" in message
    message = error_of(filters_document(inputs=str(tmp_path / "empty"), outputs=str(tmp_path / "empty")))
    assert "field 'inputs'" in message and "holds no images" in message
    assert "either a table or" in error_of(filters_document(inputs="a", outputs="b", table="t.csv"))
    assert "field 'outputs': a pairs filter needs" in error_of(filters_document(inputs="a"))


def test_unmatched_files_are_listed_with_counts(tmp_path):
    photos = gray_photos(3)
    spec = write_pairs(tmp_path, photos, photos)
    for i in range(3, 10):
        Image.fromarray(photos[0]).save(tmp_path / "in" / f"extra {i}.png")
    Image.fromarray(photos[0]).save(tmp_path / "out" / "lonely.png")
    message = error_of({"filters": [spec]})
    assert "7 input(s) without an output: extra 3.png, extra 4.png, extra 5.png, extra 6.png, extra 7.png and 2 more" in message
    assert "1 output(s) without an input: lonely.png" in message


def test_pairs_of_different_sizes_name_both_shapes(tmp_path):
    photos = gray_photos(2)
    spec = write_pairs(tmp_path, photos, [photos[0], np.pad(photos[1], ((0, 4), (0, 0)))])
    message = error_of({"filters": [spec]})
    assert "sizes differ: input" in message and "is 128x96" in message and "is 128x100" in message


def test_channel_counts_that_differ_between_pairs(tmp_path):
    photos = rgb_photos(2)
    spec = write_pairs(tmp_path, [photos[0], cv2.cvtColor(photos[1], cv2.COLOR_RGB2GRAY)], photos)
    message = error_of({"filters": [spec]})
    assert "field 'inputs'" in message and "photo 1.png has 1 channel(s) but" in message


def test_a_black_and_white_photo_stored_as_rgb_among_colour_ones_is_colour(tmp_path):
    photos = rgb_photos(3)
    gray = cv2.cvtColor(photos[1], cv2.COLOR_RGB2GRAY)
    photos[1] = np.dstack([gray] * 3)
    _, _, manifest = fit_spec(write_pairs(tmp_path, photos, photos), max_ksize=1)
    assert manifest["channels"] == {"input": 3, "output": 3}


def test_truncated_and_unreadable_files_are_named(tmp_path):
    photos = gray_photos(2)
    spec = write_pairs(tmp_path, photos, photos)
    damaged = tmp_path / "out" / "photo 1.png"
    damaged.write_bytes(damaged.read_bytes()[:200])
    message = error_of({"filters": [spec]})
    assert "field 'outputs'" in message and "photo 1.png: not a readable image" in message
    damaged.write_text("<html><head><title>404 Not Found</title></head></html>")  # a saved error page
    assert "photo 1.png: it holds an HTML or XML page, not an image" in error_of({"filters": [spec]})


def test_an_animated_gif_is_read_as_its_first_frame_and_said(tmp_path):
    photos = gray_photos(3)
    spec = write_pairs(tmp_path, photos, [uint8(p * 0.5) for p in photos])
    first = tmp_path / "out" / "photo 0.png"
    frames = [Image.open(first).copy(), Image.fromarray(photos[0])]
    first.unlink()
    frames[0].save(tmp_path / "out" / "photo 0.gif", save_all=True, append_images=frames[1:])
    check_filters({"filters": [dict(spec)]}, LABEL)  # a gray palette is one channel, like the PNGs
    result, _, manifest = fit_spec(spec, max_ksize=1)
    assert manifest["pairs"] == 3 and manifest["conversions"]["output: first of 2 frames used"] == 1
    assert result.linear and result.model.kernel[0, 0, 0, 0] == pytest.approx(0.5, abs=2e-3)


def test_a_table_without_its_columns(tmp_path):
    table = tmp_path / "pairs.csv"
    table.write_text("input,result\na.png,b.png\n")
    message = error_of(filters_document(table=str(table)))
    assert "field 'table'" in message and "has no 'output' column (columns: input, result)" in message


@pytest.mark.parametrize("cells, said", [([1, 2], "row 1: column 'input' holds int 1, not a path or URL"),
                                         ([b"a.png", b"b.png"], "row 1: column 'input' holds bytes b'a.png'"),
                                         (["a.png", None], "row 2: column 'input' is empty")])
def test_parquet_cells_that_are_not_text_are_named_with_their_type(tmp_path, cells, said):
    import pandas as pd

    table = tmp_path / "pairs.parquet"
    pd.DataFrame({"input": cells, "output": ["x.png", "y.png"]}).to_parquet(table)
    message = error_of(filters_document(table=str(table)))
    assert "field 'table'" in message and f"pairs.parquet: {said}" in message


def test_a_table_of_paths_and_file_urls(tmp_path):
    photos = gray_photos(3)
    write_pairs(tmp_path, photos, [uint8(ndi.correlate(p.astype(float), SOBEL_X) / 4 + 128) for p in photos])
    rows = [f"{tmp_path / 'in' / f'photo {i}.png'},file://{tmp_path / 'out' / f'photo {i}.png'}" for i in range(3)]
    (tmp_path / "pairs.csv").write_text("input,output\n" + "\n".join(rows) + "\n")
    table_spec = {"name": "mine", "kind": "pairs", "table": str(tmp_path / "pairs.csv")}
    check_filters({"filters": [table_spec]}, LABEL)
    result, found, _ = fit_spec(table_spec)
    assert result.linear and found["kernel"]["name"] == "sobel_x (ksize 3)"
    (tmp_path / "pairs.csv").write_text("input,output\n" + "\n".join(rows + [f"file://{tmp_path / 'in'},{tmp_path / 'out'}"]))
    message = error_of({"filters": [{"name": "mine", "kind": "pairs", "table": str(tmp_path / "pairs.csv")}]})
    assert "field 'table'" in message and f"{tmp_path / 'in'}: a folder, not an image file" in message


def test_a_url_table_is_fetched_with_img2dataset_from_a_loopback_server(tmp_path, image_server):
    base, served = image_server
    photos = gray_photos(3)
    outputs = [uint8(ndi.correlate(p.astype(float), SOBEL_X) / 4 + 128) for p in photos]
    rows = []
    for i, (x, y) in enumerate(zip(photos, outputs)):
        Image.fromarray(x).save(served / f"before{i}.png")
        Image.fromarray(y).save(served / f"after{i}.png")
        rows.append(f"{base}/before{i}.png,{base}/after{i}.png")
    (tmp_path / "pairs.csv").write_text("input,output\n" + "\n".join(rows) + "\n")
    spec = {"name": "web", "kind": "pairs", "table": str(tmp_path / "pairs.csv")}
    check_filters({"filters": [spec]}, LABEL)  # URLs are not opened before the job
    manifest = build_pairs_store(spec, tmp_path / "s" / "in", tmp_path / "s" / "out")
    assert manifest["pairs"] == 3
    pairs, _ = load_pairs(tmp_path / "s" / "in", tmp_path / "s" / "out")
    for key, x, y in zip(pairs.keys, pairs.inputs, pairs.outputs):
        i = int(key[-1])  # keys from the input URL's name: before0, before1, ...
        np.testing.assert_array_equal(x[..., 0], photos[i])
        np.testing.assert_array_equal(y[..., 0], outputs[i])
    result = fit_pairs(pairs, max_ksize=5)
    assert result.linear and math.isclose(result.model.kernel[0, 0, 1, 2], 0.5, abs_tol=1e-2)


def test_mixed_storage_types_are_refused_naming_files(tmp_path):
    photos = gray_photos(3)
    spec = write_pairs(tmp_path, photos, photos)
    (tmp_path / "out" / "photo 2.png").unlink()
    cv2.imwrite(str(tmp_path / "out" / "photo 2.tif"), photos[2].astype(np.float32))
    with pytest.raises(ValueError, match="output files mix storage types"):
        read_pairs(spec, list_pairs(spec))
    # ... and at the config check, from the headers, before any job: a float TIFF, and a 16-bit PNG
    assert "field 'outputs': output files mix storage types" in error_of(filters_document(**spec))
    (tmp_path / "out" / "photo 2.tif").unlink()
    cv2.imwrite(str(tmp_path / "out" / "photo 2.png"), photos[2].astype(np.uint16) * 257)
    assert "photo 2.png is uint16" in error_of(filters_document(**spec))
    cv2.imwrite(str(tmp_path / "out" / "photo 2.png"), cv2.cvtColor(photos[2], cv2.COLOR_GRAY2BGR).astype(np.uint16) * 257)
    for i in (0, 1):  # every output colour 16-bit: one type, accepted (Pillow alone would call it 8-bit RGB)
        cv2.imwrite(str(tmp_path / "out" / f"photo {i}.png"), cv2.cvtColor(photos[i], cv2.COLOR_GRAY2BGR).astype(np.uint16) * 257)
    check_filters(filters_document(**spec), LABEL)
    assert read_pairs(spec, list_pairs(spec))[1]["output_storage"] == "uint16"


@pytest.mark.parametrize("target", ["input", "output", "sidecar", "folder"])
def test_fit_refuses_an_output_path_that_is_a_pair_file_or_a_folder_before_any_work(tmp_path, target, capsys):
    from img2kernel.cli.main import main

    photo = gray_photos(1, (32, 40))[0]
    Image.fromarray(photo).save(tmp_path / "a.png")
    Image.fromarray(cv2.GaussianBlur(photo, (3, 3), 0)).save(tmp_path / "b.png")
    (tmp_path / "b.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    out = {"input": "a.png", "output": "b.png", "sidecar": "b.safetensors", "folder": "."}[target]
    with pytest.raises(ValueError, match="overwrite one of the pairs' files|is a folder"):
        from img2kernel.cli.fit import fit_files

        fit_files([str(tmp_path / "a.png"), str(tmp_path / "b.json" if target == "sidecar" else tmp_path / "b.png")],
                  tmp_path / out)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    with pytest.raises(SystemExit) as stopped:
        main(["fit", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "b.png")])
    assert stopped.value.code != 0 and "overwrite one of the pairs' files" in capsys.readouterr().err
    assert (tmp_path / "b.png").read_bytes() == before["b.png"]


def test_every_source_writes_the_training_table_in_one_schema(tmp_path):
    import pandas as pd

    from img2kernel.fit.history import COLUMNS, write_history

    write_history([{"step": 1, "ksize": 3, "train_rms": 0.3, "heldout_rms": 0.31}], "kernel size", tmp_path / "p.csv")
    write_history([{"step": 1, "seconds": 0.1, "train_loss": 1e-3, "lr": 1.0}], "gradient step", tmp_path / "g.csv", ksize=3)
    pairs, ours = pd.read_csv(tmp_path / "p.csv"), pd.read_csv(tmp_path / "g.csv")
    assert list(pairs.columns) == list(ours.columns) == COLUMNS
    assert pairs["stage"].tolist() == ["kernel size"] and ours["ksize"].tolist() == [3]
    with pytest.raises(ValueError, match="not in its schema"):
        write_history([{"residual": 1.0}], "kernel size", tmp_path / "x.csv")


@pytest.mark.parametrize("field, value, message", [
    ("then", "abs", "field 'then': a pairs filter has no then"),
    ("output", "abs_uint8", "field 'output': a pairs filter has no output"),
    ("train", {"ksize": 5}, "field 'train.ksize': a pairs filter is fitted by least squares and the ladder, which read only train.seed"),
])
def test_fields_a_pairs_filter_would_ignore_are_refused(tmp_path, field, value, message):
    photos = gray_photos(3)
    spec = write_pairs(tmp_path, photos, photos)
    assert f"{LABEL}: filter 'mine' (entry 1): {message}" in error_of(filters_document(**{**spec, field: value}))
    check_filters(filters_document(**{**spec, "train": {"seed": 3}}), LABEL)  # the one training setting it reads


@pytest.mark.parametrize("name", ["a<b>c", "a{b}c"])
def test_a_file_name_snakemake_would_expand_is_refused_at_the_config_check(tmp_path, name):
    photos = gray_photos(3)
    spec = write_pairs(tmp_path, photos, photos)
    for folder in ("in", "out"):
        (tmp_path / folder / "photo 0.png").rename(tmp_path / folder / f"{name}.png")
    message = error_of(filters_document(**spec))
    assert f"field 'inputs': {tmp_path / 'in' / name}.png: a path with" in message and "rename the file" in message


def test_a_ksize_larger_than_the_smallest_image_is_refused_at_the_config_check(tmp_path):
    photos = gray_photos(3)
    spec = write_pairs(tmp_path, photos, photos)
    Image.fromarray(photos[0][:9, :12]).save(tmp_path / "in" / "photo 0.png")
    Image.fromarray(photos[0][:9, :12]).save(tmp_path / "out" / "photo 0.png")
    message = error_of(filters_document(**spec, ksize=11, max_ksize=11))
    assert "field 'ksize': a 11x11 kernel is larger than" in message and "photo 0.png, whose shorter side is 9 pixels" in message


def test_a_pair_whose_url_fails_is_skipped_and_counted_not_fatal(tmp_path, image_server):
    base, served = image_server
    photos = gray_photos(5)
    rows = []
    for i, x in enumerate(photos):
        Image.fromarray(x).save(served / f"before{i}.png")
        if i > 1:  # the first pair's output is missing (the server answers 404), the second a web page
            Image.fromarray(x).save(served / f"after{i}.png")
        rows.append(f"{base}/before{i}.png,{base}/after{i}.png")
    (served / "after1.png").write_text("<!DOCTYPE html>\n<html><body>Please sign in</body></html>\n")
    (tmp_path / "pairs.csv").write_text("input,output\n" + "\n".join(rows) + "\n")
    spec = {"name": "web", "kind": "pairs", "table": str(tmp_path / "pairs.csv")}
    stores = tmp_path / "results" / "store" / "pairs" / "web"
    (stores / ".fetching" / "left by a killed run").mkdir(parents=True)
    manifest = build_pairs_store(spec, stores / "inputs", stores / "outputs", timeout=5, retries=0)
    assert manifest["pairs"] == 3 and sum(manifest["skipped"].values()) == 2
    reasons = list(manifest["skipped"])
    assert "output could not be downloaded" in reasons[0]
    assert reasons[1] == "output: it holds an HTML or XML page, not an image (a server's error or sign-in page?)"
    assert not (stores / ".fetching").exists()  # the work folder lives beside the stores and is removed


def test_a_repeated_table_row_is_dropped_and_counted_so_no_pair_is_both_trained_and_tested(tmp_path):
    photos = gray_photos(4)
    write_pairs(tmp_path, photos, photos)
    rows = [f"{tmp_path / 'in' / f'photo {i}.png'},{tmp_path / 'out' / f'photo {i}.png'}" for i in range(4)]
    (tmp_path / "pairs.csv").write_text("input,output\n" + "\n".join(rows + rows[:2]) + "\n")
    spec = {"name": "mine", "kind": "pairs", "table": str(tmp_path / "pairs.csv")}
    manifest = build_pairs_store(spec, tmp_path / "s" / "in", tmp_path / "s" / "out")
    assert manifest["pairs"] == 4 and manifest["skipped"] == {"a repeat of an earlier row of the table": 2}
    assert sorted(manifest["keys"]) == ["photo_0", "photo_1", "photo_2", "photo_3"]  # no photo_0_2: the repeat is gone


def test_an_image_smaller_than_the_largest_kernel_tried_is_refused_at_the_config_check(tmp_path):
    photos = gray_photos(3)
    spec = write_pairs(tmp_path, photos, photos)
    Image.fromarray(photos[0][:1, :1]).save(tmp_path / "in" / "tiny.png")
    Image.fromarray(photos[0][:1, :1]).save(tmp_path / "out" / "tiny.png")
    message = error_of(filters_document(**spec))
    assert "field 'max_ksize': a 15x15 kernel is larger than" in message and "tiny.png, whose shorter side is 1 pixels" in message


@pytest.mark.parametrize("orientation", [name for name, _ in ORIENTATIONS])
def test_each_orientation_of_an_asymmetric_kernel_is_named(orientation):
    # A template no flip or turn maps onto itself, so each orientation has one right answer.
    template = np.arange(1.0, 10.0).reshape(3, 3) ** 1.5
    transform = dict(ORIENTATIONS)[orientation]
    found = match_kernel(0.5 * transform(template), {"mine": template})
    assert found["orientation"] == orientation and found["relative_residual"] < 1e-12
    assert found["scale"] == pytest.approx(0.5)


def test_the_8_bit_floor_is_what_rounding_leaves_and_noise_above_two_floors_is_not_linear(tmp_path):
    # A true linear tool rounded to 8 bits leaves 1/sqrt(12) levels RMS, so its residual sits at
    # one floor; the same tool with 0.66 levels of added noise is 2.5 floors: not linear.
    photos = gray_photos()
    blur = np.array([[1, 2, 1], [2, 5, 2], [1, 2, 1]], dtype=np.float64) / 17.0
    exact = [cv2.filter2D(p.astype(np.float64), -1, blur) for p in photos]
    clean, _, _ = fit_spec(write_pairs(tmp_path / "clean", photos, [uint8(e) for e in exact]), max_ksize=3)
    assert clean.linear and clean.residual_rms / clean.noise_floor == pytest.approx(1.0, abs=0.1)
    rng = np.random.default_rng(3)
    noisy_outputs = [uint8(e + rng.normal(scale=0.66, size=e.shape)) for e in exact]
    noisy, _, _ = fit_spec(write_pairs(tmp_path / "noisy", photos, noisy_outputs), max_ksize=3)
    assert not noisy.linear and 2.2 < noisy.residual_rms / noisy.noise_floor < 2.8


def test_two_pairs_are_each_split_by_tiles_so_no_pixel_is_both_trained_and_scored(tmp_path):
    photos = gray_photos(2, (128, 128))
    outputs = [uint8(cv2.GaussianBlur(p.astype(np.float64), (3, 3), 0.8)) for p in photos]
    spec = write_pairs(tmp_path, photos, outputs)
    loaded, manifest = read_pairs(spec, list_pairs(spec))
    pairs = to_fit_pairs(loaded, manifest)
    assert manifest["split_mode"] == "tiles" and manifest["splits"] == {"tiles": 2}
    for index in range(2):  # each pair holds train, val and test pixels, each pixel in one split
        masks = {split: pairs.known(index, split) for split in ("train", "val", "test")}
        assert all(mask.sum() >= 32 * 32 for mask in masks.values())
        assert int(sum(m.astype(int) for m in masks.values()).max()) == 1
    result = fit_pairs(pairs, max_ksize=3)
    assert result.residual_split == "val" and result.linear


@pytest.mark.parametrize("shape, halo", [((40, 50), 3), ((5, 50), 3), ((40, 4), 2), ((3, 3), 2), ((9, 9), 1)])
def test_the_ring_strips_cover_the_edge_ring_once(shape, halo):
    from img2kernel import borders
    from img2kernel.fit.pairs import ring_strips

    covered = np.zeros(shape, dtype=int)
    for r0, r1, c0, c1 in ring_strips(shape, halo):
        covered[r0:r1, c0:c1] += 1
    np.testing.assert_array_equal(covered, borders.ring_mask(shape, halo).astype(int))


def test_the_size_keeps_a_gaussians_small_outer_taps(tmp_path):
    """A 13x13 Gaussian of sigma 1.5 saved as 8-bit: its outer taps are tiny, but six photos
    show them; the size found is within 2x of float64 least squares at the true size."""
    gauss = cv2.getGaussianKernel(13, 1.5) @ cv2.getGaussianKernel(13, 1.5).T
    photos = gray_photos(6, (160, 160))
    outputs = [uint8(cv2.filter2D(p.astype(np.float64), -1, gauss)) for p in photos]
    result, _, _ = fit_spec(write_pairs(tmp_path, photos, outputs))
    assert result.linear and result.ksize >= 11
    h = (13 - result.ksize) // 2
    found = np.pad(result.model.kernel[0, 0], h)
    at_truth = fit_spec(write_pairs(tmp_path / "true", photos, outputs), ksize=13)[0].model.kernel[0, 0]
    assert np.abs(found - gauss).max() <= 2 * np.abs(at_truth - gauss).max()


@pytest.mark.parametrize("name, tool, separable", [
    ("gaussian 7x7", lambda p: uint8(cv2.filter2D(p.astype(np.float64), -1, cv2.getGaussianKernel(7, 1.2) @ cv2.getGaussianKernel(7, 1.2).T)), True),
    ("sobel_x", lambda p: cv2.filter2D(p.astype(np.float32), -1, SOBEL_X.astype(np.float32)), True),
    ("Pillow EMBOSS", lambda p: np.asarray(Image.fromarray(p).filter(ImageFilter.EMBOSS)), False),
])
def test_a_separable_kernel_is_fitted_as_two_1d_kernels_and_only_then(tmp_path, name, tool, separable):
    photos = gray_photos(4)
    outputs = [tool(p) for p in photos]
    suffix = ".tif" if outputs[0].dtype == np.float32 else ".png"
    result, found, _ = fit_spec(write_pairs(tmp_path, photos, outputs, suffix), max_ksize=9)
    chosen = next(s for s in result.structures if s["chosen"])
    assert result.linear and chosen["structure"].startswith("separable") == separable, (name, result.structures)
    if name == "sobel_x":  # exact: the separable solve is the same least squares
        np.testing.assert_allclose(result.model.kernel[0, 0], SOBEL_X, atol=1e-6)
    if name == "gaussian 7x7":  # 13 free taps instead of 49: closer to the truth than the full kernel
        gauss = cv2.getGaussianKernel(7, 1.2) @ cv2.getGaussianKernel(7, 1.2).T
        full_kernel, _ = full_equations_solution(tmp_path, 7)
        assert np.abs(result.model.kernel[0, 0] - gauss).max() < np.abs(full_kernel[0, 0] - gauss).max()


def full_equations_solution(folder: Path, ksize: int):
    """The full (unstructured) least-squares kernel and bias of a written pairs folder."""
    spec = {"name": "mine", "kind": "pairs", "inputs": str(folder / "in"), "outputs": str(folder / "out")}
    pairs = to_fit_pairs(*read_pairs(spec, list_pairs(spec)))
    return normal_equations(pairs.samples("train"), ksize, input_storage="uint8", output_storage="uint8").solve(ksize)


def test_noise_buys_no_taps(tmp_path):
    """A 3x3 sharpen with noise of 2 levels added before saving: far above the 8-bit floor,
    and still 3x3."""
    rng = np.random.default_rng(5)
    photos = gray_photos(6, (128, 128))
    sharpen = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float64)
    outputs = [uint8(cv2.filter2D(p.astype(np.float64), -1, sharpen) + rng.normal(0, 2, p.shape)) for p in photos]
    result, _, _ = fit_spec(write_pairs(tmp_path, photos, outputs))
    assert not result.linear and result.ksize == 3


def test_a_tool_no_kernel_explains_is_not_named_after_its_closest_kernel(tmp_path):
    """A tool no kernel explains (a gamma curve) is still best fitted by some kernel; naming it
    "identity x 1.2" would read as an identification: the closest kernel is said as such."""
    photos = gray_photos(4, (96, 96))
    result, _, _ = fit_spec(write_pairs(tmp_path, photos, [uint8(255 * (p / 255.0) ** 2.2) for p in photos]),
                            max_ksize=5)
    summary = result.summary()
    found = identification_of(result.model, summary)
    assert not result.linear and not found["identified"]
    assert found["text"].startswith("no kernel explains it (the closest: ")
    assert verdict(summary, found).startswith("not a linear filter")
    sharpened = [uint8(cv2.filter2D(p.astype(np.float32), -1, np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)))
                 for p in photos]
    linear, _, _ = fit_spec(write_pairs(tmp_path / "sharpen", photos, sharpened), max_ksize=5)
    named = identification_of(linear.model, linear.summary())
    assert linear.linear and named["identified"] and named["text"].startswith("sharpen")


@pytest.mark.parametrize("side, make, says", [
    (256, lambda p: cv2.resize(p, (12, 24), interpolation=cv2.INTER_AREA),
     "the output is 0.0938 x 0.0938 times the input's size (a resize by more than 8x)"),
    (96, lambda p: np.pad(p, 4), "the output is 8 columns and 8 rows larger (padding?)"),
    (128, lambda p: p[70:, :], "the output is 0 columns and 70 rows smaller, not in proportion (a crop wider than 64 pixels?)"),
])
def test_outputs_off_the_inputs_grid_are_refused_saying_what_they_look_like(tmp_path, side, make, says):
    """Sizes no placement explains (a resize beyond 8x, padding of a photo that is not square, a
    crop wider than the search) are refused before any work, in the geometry they suggest, by the
    config check (naming the entry and field) and by `img2kernel fit` alike."""
    from img2kernel.cli.main import main

    photos = gray_photos(2, (side, 128))
    spec = write_pairs(tmp_path, photos, [make(p) for p in photos])
    message = error_of({"filters": [spec]})
    assert "field 'outputs'" in message and "sizes differ: input" in message and says in message
    assert "cropped by at most 64 pixels on each axis or reduced by an integer factor" in message
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *[str(tmp_path / d / "photo 0.png") for d in ("in", "out")], "-o", str(tmp_path / "m.safetensors")])
    assert exit_info.value.code != 0 and not (tmp_path / "m.safetensors").exists()
