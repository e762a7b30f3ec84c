"""Pairs made by other libraries that land on every rung of the ladder, through the workflow
(train, evaluate, report) and ``img2kernel fit``: no job fails, several nonlinear
filters share one report, and the command line gives the pipeline's model."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import skimage.filters
from PIL import Image, ImageFilter

from img2kernel.bench.ladder import gamma_space_blur, linear_light_blur, radial_blur, vignetting
from img2kernel.bench.pairs import ffmpeg_unsharp, gray_first
from img2kernel.cli.main import main
from img2kernel.models import load_model
from conftest import snakemake, write_workdir
from test_pairs import gray_photos, rgb_photos

pytestmark = pytest.mark.workflow
GAUSS5 = cv2.getGaussianKernel(5, 1.0) @ cv2.getGaussianKernel(5, 1.0).T


def _tone_then_sharpen(g):
    toned = np.clip(np.rint(255 * (g / 255.0) ** 0.6), 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(toned).filter(ImageFilter.SHARPEN))


def _noisy_blur(c, seed):
    noisy = cv2.GaussianBlur(c, (3, 3), 0.8).astype(float) + np.random.default_rng(seed).normal(0, 2, c.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


# name: (photos, tool, file suffix of the tool's output, the rung it must land on or None)
CASES = {
    "pillow_median": ("gray", lambda g, i: np.asarray(Image.fromarray(g).filter(ImageFilter.MedianFilter(3))), ".png", "rank"),
    "cv2_erode": ("gray", lambda g, i: cv2.erode(g, np.ones((3, 3), np.uint8)), ".png", "rank"),
    "skimage_sobel": ("gray", lambda g, i: np.clip(np.rint(skimage.filters.sobel(g / 255.0) * 1020), 0, 255).astype(np.uint8),
                      ".png", "magnitude"),
    "pillow_unsharp": ("gray", lambda g, i: np.asarray(Image.fromarray(g).filter(ImageFilter.UnsharpMask(2, 150, 3))), ".png", None),
    "tone_sharpen": ("gray", lambda g, i: _tone_then_sharpen(g), ".png", None),
    "linear_light": ("rgb", lambda c, i: linear_light_blur(c).astype(np.uint8), ".png", "linear light"),  # GIMP's default
    "gamma_space": ("gray", lambda g, i: gamma_space_blur(g).astype(np.uint8), ".png", "two curves"),  # its own curves
    "vignetting": ("rgb", lambda c, i: vignetting(c).astype(np.uint8), ".png", "spatially varying"),  # a lens's
    "radial_blur": ("gray", lambda g, i: radial_blur(g).astype(np.uint8), ".png", "spatially varying"),
    "bilateral": ("gray", lambda g, i: cv2.bilateralFilter(g, 5, 40, 3), ".png", None),
    "blur_jpeg": ("rgb", lambda c, i: cv2.GaussianBlur(c, (5, 5), 1.0), ".jpg", None),  # colour, 4:2:0
    "median_jpeg": ("gray", lambda g, i: np.asarray(Image.fromarray(g).filter(ImageFilter.MedianFilter(3))), ".jpg", None),
    "rgb_noisy_blur": ("rgb", _noisy_blur, ".png", None),
    # A colour blur saved as a paletted PNG (64 colours): the reader turns the palette back into RGB.
    "rgb_paletted": ("rgb", lambda c, i: Image.fromarray(cv2.GaussianBlur(c, (3, 3), 0.8)).quantize(64), ".png", None),
    # What the files went through besides one rounding (bench.pairs emulates the tools not installed here).
    "ffmpeg_yuv": ("rgb", lambda c, i: ffmpeg_unsharp(c), ".png", None),
    "gray_first": ("rgb", lambda c, i: gray_first(c), ".tif", None),
    "x257": ("gray", lambda g, i: cv2.filter2D(g, -1, GAUSS5).astype(np.uint16) * 257, ".png", None),
}
SAID = {"ffmpeg_yuv": "linear up to an intermediate 8-bit rounding (the tool filters in 8-bit YCbCr, BT.601 limited range (ffmpeg's yuv444p)",
        "gray_first": "linear up to an intermediate 8-bit rounding (the tool rounds to 8-bit gray with Rec. 601 weights",
        "x257": "linear, 8-bit values stored in a 16-bit file (x257): gaussian sigma 1 (5x5) x 257"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ladder_pairs")
    photos = {"gray": gray_photos(4, (64, 80)), "rgb": rgb_photos(4, (64, 80))}
    filters = []
    for name, (kind, tool, suffix, _) in CASES.items():
        (workdir / name / "in").mkdir(parents=True)
        (workdir / name / "out").mkdir()
        for i, photo in enumerate(photos[kind]):
            Image.fromarray(photo).save(workdir / name / "in" / f"p{i}.png")
            made = tool(photo, i)
            made = made if isinstance(made, Image.Image) else Image.fromarray(made)  # a tool may hand back its own image (a palette)
            made.save(workdir / name / "out" / f"p{i}{suffix}", **({"quality": 85} if suffix == ".jpg" else {}))
        filters.append({"name": name, "kind": "pairs", "inputs": f"{name}/in", "outputs": f"{name}/out", "max_ksize": 7})
    write_workdir(workdir, filters, "sample")
    snakemake(workdir)
    return workdir


def test_every_rung_runs_through_train_evaluate_and_one_report(built):
    results = built / "results"
    html = (results / "report.html").read_text()
    for name, (_, _, _, rung) in CASES.items():
        evaluation = json.loads((results / "eval" / f"{name}.json").read_text())
        assert evaluation["filter"] == name and evaluation["verdict"] and name in html
        assert (results / "eval" / f"{name}.kernels.csv").exists() and (results / "plots" / name / "images.png").exists()
        if rung is not None:
            assert evaluation["model"] == rung, (name, evaluation["verdict"])
            assert evaluation["test_psnr"] > 40, (name, evaluation["test_psnr"])
    assert "3x3 median" in html and "minimum (erosion)" in html and "magnitude of 2" in html
    nonlinear = [n for n in CASES if json.loads((results / "eval" / f"{n}.json").read_text())["model"] != "linear"]
    assert len(nonlinear) >= 3
    table = (results / "tables" / "kernels.md").read_text()
    assert all(name in table for name in CASES)


def test_jpeg_outputs_are_judged_through_their_compression(built):
    """A colour blur saved as JPEG is linear within its compression; a median saved as JPEG is still a median."""
    results = built / "results"
    blur, median = (json.loads((results / "eval" / f"{n}.json").read_text()) for n in ("blur_jpeg", "median_jpeg"))
    assert blur["verdict"].startswith("linear, within JPEG q85 compression: the same kernel on each colour channel"), blur["verdict"]
    assert blur["ksize"] == 5 and "JPEG q85 files" in blur["compression_note"]
    assert median["model"] == "rank" and median["compression"]["quality"] == "q85", median["verdict"]
    assert "JPEG q85 files: fitted on their 8x8 blocks" in (results / "report.html").read_text()


def test_what_the_files_went_through_is_said_and_apply_reproduces_the_tool(built, tmp_path):
    """A rounding to 8-bit YCbCr or gray inside the tool, 8-bit values in 16-bit files: linear,
    said in the verdict and the report; `img2kernel apply` on a photo the fit never saw gives the
    tool's pixels (up to the rounding inside the tool, which the model does not do). Truncation
    takes the same path as any linear tool; test_pairs runs it through fit and apply."""
    results = built / "results"
    html = (results / "report.html").read_text()
    fresh = {"gray": gray_photos(5, (64, 80))[4], "rgb": rgb_photos(5, (64, 80))[4]}
    for name, words in SAID.items():
        evaluation = json.loads((results / "eval" / f"{name}.json").read_text())
        assert evaluation["linear"] and words in evaluation["verdict"], (name, evaluation["verdict"])
        kind, tool, suffix, _ = CASES[name]
        Image.fromarray(fresh[kind]).save(tmp_path / f"{name}.png")
        out = tmp_path / f"{name}_out{suffix}"
        assert main(["apply", str(results / "models" / f"{name}.safetensors"), str(tmp_path / f"{name}.png"), str(out)]) == 0
        ours, truth = np.asarray(Image.open(out)), np.asarray(tool(fresh[kind], 4))
        assert ours.dtype == truth.dtype and ours.shape == truth.shape, name
        difference = ours.astype(np.float64) - truth
        if name == "x257":  # the model writes the tool's own steps
            assert np.mean(difference == 0) > 0.97 and np.all(ours % 257 == 0), name
        else:  # the rounding inside the tool is left out: about its RMS
            assert np.sqrt(np.mean(difference**2)) < 1.5 * evaluation["noise_floor"], name
    for name in ("ffmpeg_yuv", "gray_first"):
        note = json.loads((results / "eval" / f"{name}.json").read_text())["precision_note"]
        assert note.startswith("that rounding, computed from the fitted kernel, accounts for") and note.split(";")[0] in html


def test_the_report_says_what_each_filter_is_and_fits_a_laptop_screen(built):
    from browser import chromium, image_check, layout

    report = built / "results" / "report.html"
    html = report.read_text()
    summary = html[html.index('<table class="summary">') : html.index("</table>", html.index('<table class="summary">'))]
    rows = summary.split("<tr>")[2:]
    assert len(rows) == len(CASES)
    for name, (_, _, _, rung) in CASES.items():
        row = next(r for r in rows if f">{name}</a>" in r)
        if rung is not None:  # a structure found exactly is shown as found, not as a failure
            assert "verdict ok\">found<" in row, row
    assert "not a linear filter" not in summary and summary.count("<th") == 6
    binary = chromium()
    if binary is None:
        pytest.skip("no Chromium on this machine (Debian package 'chromium'; `make test` installs it): report not checked in a browser")
    images, failed = image_check(binary, report)
    assert images == 3 * len(CASES) + 1 and failed == 0
    widths = layout(binary, report)
    assert widths["summary_right"] <= widths["window"] and widths["page"] <= widths["window"], widths


@pytest.mark.parametrize("name, said, tool, kind", [
    ("linear_light", "5x5 kernel in linear light (gaussian sigma ", linear_light_blur, "rgb"),
    ("gamma_space", "between two curves: a power curve (gamma 3", gamma_space_blur, "gray"),
])
def test_a_blur_between_curves_is_named_and_apply_reproduces_it(built, tmp_path, name, said, tool, kind):
    """An editor's colour blur in linear light (the sRGB curves on both sides of a Gaussian) and a
    tool's blur between its own curves (a power 3 decode and its inverse, both learned): said in
    the verdict and the report, and `img2kernel apply` gives the tool's pixels on a photo the fit
    never saw."""
    results = built / "results"
    evaluation = json.loads((results / "eval" / f"{name}.json").read_text())
    assert evaluation["model"] == CASES[name][3] and evaluation["test_psnr"] >= 45, evaluation["verdict"]
    assert said in evaluation["verdict"], evaluation["verdict"]
    assert said.split(" (")[0] in (results / "report.html").read_text()
    fresh = (rgb_photos if kind == "rgb" else gray_photos)(5, (64, 80))[4]
    Image.fromarray(fresh).save(tmp_path / "fresh.png")
    assert main(["apply", str(results / "models" / f"{name}.safetensors"), str(tmp_path / "fresh.png"),
                 str(tmp_path / "out.png")]) == 0
    ours, truth = np.asarray(Image.open(tmp_path / "out.png")).astype(np.float64), tool(fresh)
    assert ours.shape == truth.shape and 20 * np.log10(255 / np.sqrt(np.mean((ours - truth) ** 2))) >= 45


def test_a_vignetting_and_a_growing_blur_are_maps_drawn_in_the_report_and_apply_reproduces_them(built, tmp_path):
    """A lens's vignetting (colour) and a blur that grows towards the corners (gray): a gain map
    and a kernel map, said in the verdict, drawn in the report (the gain over the image, the
    kernels across it), and `img2kernel apply` gives the tool's pixels on a photo the fit never
    saw, at another size (positions are fractions of the image)."""
    results = built / "results"
    html = (results / "report.html").read_text()
    for name, model, tool, kind in (("vignetting", "gain_map", vignetting, "rgb"), ("radial_blur", "kernel_map", radial_blur, "gray")):
        evaluation = json.loads((results / "eval" / f"{name}.json").read_text())
        assert evaluation["model_class"] == model and evaluation["test_psnr"] >= 40, evaluation["verdict"]
        assert evaluation["model_description"].split(" (")[0] in evaluation["verdict"] and "at the corners" in evaluation["verdict"]
        assert evaluation["model_description"].split(":")[0] in html
        fresh = (rgb_photos if kind == "rgb" else gray_photos)(5, (96, 120))[4]
        Image.fromarray(fresh).save(tmp_path / f"{name}.png")
        out = tmp_path / f"{name}_out.png"
        assert main(["apply", str(results / "models" / f"{name}.safetensors"), str(tmp_path / f"{name}.png"), str(out)]) == 0
        ours, truth = np.asarray(Image.open(out)).astype(np.float64), tool(fresh)
        psnr = 20 * np.log10(255 / np.sqrt(np.mean((ours - truth) ** 2)))
        assert ours.shape == truth.shape and psnr >= 40, (name, psnr)


# Gray ladder rungs and a colour linear fit through a working space; a colour CNN climb and the
# colour gain map take the same function (fit.pairs_job.fit_and_climb), so they are left to the
# pipeline run above (the CNN's would cost 35 s more).
@pytest.mark.parametrize("name", ["pillow_median", "skimage_sobel", "ffmpeg_yuv", "linear_light", "gamma_space", "radial_blur"])
def test_img2kernel_fit_gives_the_pipelines_model(built, tmp_path, name, capsys):
    files = []
    for i in range(4):
        files += [str(built / name / "in" / f"p{i}.png"), next(str(p) for p in (built / name / "out").glob(f"p{i}.*"))]
    assert main(["fit", *files, "--max-ksize", "7", "-o", str(tmp_path / "m.safetensors")]) == 0
    printed = capsys.readouterr().out
    ours, ours_meta = load_model(tmp_path / "m.safetensors")
    theirs, theirs_meta = load_model(built / "results" / "models" / f"{name}.safetensors")
    assert type(ours) is type(theirs) and ours.describe() == theirs.describe()
    assert ours_meta["border"] == theirs_meta["border"]
    mine, pipeline = ours.tensors(), theirs.tensors()
    assert mine.keys() == pipeline.keys()
    for key in mine:
        np.testing.assert_array_equal(mine[key], pipeline[key], err_msg=key)
    evaluation = json.loads((built / "results" / "eval" / f"{name}.json").read_text())
    if evaluation["model"] != "linear":
        assert "ladder (held-out residual in noise floors):" in printed and "(chosen)" in printed
