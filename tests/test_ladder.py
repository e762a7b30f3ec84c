"""The ladder of models: each rung recovers a known structure from pairs made by other
libraries (scipy.ndimage, Pillow, OpenCV, scikit-image), the selection picks the simplest
adequate rung, and every rung's model saves, loads and applies tile by tile as it predicts."""

from __future__ import annotations

import math
import re

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFilter
from scipy import ndimage

from conftest import real_images
from img2kernel.apply import apply_tiled
from img2kernel.fit import rungs
from img2kernel.fit.ladder import Given, best_candidate, choose, climb, ladder_for_pairs
from img2kernel.fit.tiles import heldout_rms, ladder_data
from img2kernel.fit.pairs import Pairs, fit_pairs
from img2kernel.models import (MODELS, AffineKernel, CnnModel, CurveModel, GainMapModel, KernelMapModel, LinearLightModel,
                               ResampleModel,
                               MagnitudeModel, RankModel, TwoCurveModel, load_model)
from img2kernel.models.rank import disk
from img2kernel.sources.pairs import SPLIT_CODES


@pytest.fixture(autouse=True)
def quick_fits(monkeypatch):
    """A shorter CNN budget than a real run (these tests check what it reports, not how well
    it fits), curves of 3x3 and 5x5 only (every structure here fits in 5x5), and 6,000
    training windows for the gradient-fitted rungs."""
    monkeypatch.setattr(rungs, "CNN_ITERATIONS", 150)
    monkeypatch.setattr(rungs, "SMOOTH_ROWS", 6000)
    monkeypatch.setattr(rungs, "CURVE_SIZES", (3, 5))


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Six 8-bit photo crops, as float64 arrays of integer values."""
    return [im.astype(np.float64) for im in real_images(6, (112, 112))]


def make_pairs(photos, tool, storage: str = "uint8") -> Pairs:
    """Pairs of (photo, tool(photo)): four train images, one val, one test."""
    outputs = [np.asarray(tool(x), dtype=np.float64) for x in photos]
    codes = [np.full(x.shape, SPLIT_CODES[s], np.uint8) for x, s in zip(photos, ["train"] * 4 + ["val", "test"])]
    return Pairs([f"p{i}" for i in range(len(photos))], [x[..., None] for x in photos], [y[..., None] for y in outputs],
                 codes, "uint8", storage)


def pillow(filter_) -> callable:
    return lambda x: np.asarray(Image.fromarray(x.astype(np.uint8)).filter(filter_), dtype=np.float64)


def to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255)


def data_for(pairs: Pairs):
    fit = fit_pairs(pairs, max_ksize=7)
    return fit, ladder_data(pairs, "val", fit.noise_floor, seed=0)


@pytest.mark.parametrize(
    "tool, footprint, rank",
    [
        (lambda x: ndimage.median_filter(x, size=3), np.ones((3, 3), bool), 4),
        (lambda x: ndimage.grey_erosion(x, size=(5, 5)), np.ones((5, 5), bool), 0),
        (lambda x: ndimage.grey_dilation(x, footprint=disk(2)), disk(2), 12),
        (pillow(ImageFilter.MedianFilter(5)), np.ones((5, 5), bool), 12),
        (pillow(ImageFilter.MinFilter(3)), np.ones((3, 3), bool), 0),
        (pillow(ImageFilter.MaxFilter(7)), np.ones((7, 7), bool), 48),
    ],
    ids=["scipy-median3", "scipy-erosion5", "scipy-dilation-disk5", "pillow-median5", "pillow-min3", "pillow-max7"],
)
def test_rank_rung_finds_footprint_and_rank_of_other_libraries(photos, tool, footprint, rank):
    _, data = data_for(make_pairs(photos, tool))
    model, residual = best_candidate(rungs.fit_rank(data, 0), data)
    assert np.array_equal(model.footprint, footprint) and model.rank == rank and (model.scale, model.offset) == (1.0, 0.0)
    assert residual == 0.0  # the interior is reproduced exactly


def test_curve_rung_finds_blur_then_gamma_and_absolute_laplacian(photos, monkeypatch):
    monkeypatch.setattr(rungs, "SMOOTH_ROWS", 10_000)  # a 24-knot gamma curve wants the product's sample
    gamma = make_pairs(photos, lambda x: to_uint8(255 * (cv2.GaussianBlur(x, (5, 5), 1.0) / 255) ** 0.45))
    _, data = data_for(gamma)
    model, residual = best_candidate(rungs.fit_curve(data, 0), data)
    assert residual <= 2 * data.noise_floor and "gamma 0.4" in model.describe()

    laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], float)
    edges = make_pairs(photos, lambda x: to_uint8(np.abs(cv2.filter2D(x, -1, laplacian))))
    _, data = data_for(edges)
    model, residual = best_candidate(rungs.fit_curve(data, 0), data)
    assert residual <= 2 * data.noise_floor and "V-shaped" in model.describe()


def test_curve_rung_with_skip_path_reproduces_thresholded_unsharp_masking(photos):
    def unsharp(x):
        detail = x - cv2.GaussianBlur(x, (5, 5), 1.5)
        return to_uint8(x + 1.5 * np.where(np.abs(detail) > 4, detail, 0))

    fit, data = data_for(make_pairs(photos, unsharp))
    model, residual = best_candidate(rungs.fit_curve(data, 0), data)
    assert model.skip is not None and 20 * math.log10(255 / residual) >= 40
    assert residual < 0.6 * fit.residual_rms  # far better than the best single kernel


def test_magnitude_rung_explains_scikit_images_sobel_with_its_own_normalisation(photos, monkeypatch):
    from skimage.filters import sobel

    pairs = make_pairs(photos, lambda x: sobel(x / 255.0), storage="float64")
    fit, data = data_for(pairs)
    ladder = climb(data, {"linear": Given(fit.model.with_output("float"), fit.residual_rms)})
    row = ladder.rows[-1]
    assert ladder.chosen == "magnitude" and row["psnr_db"] >= 60 and row["adequate"]
    assert [r["model"] for r in ladder.rows] == ["linear", "rank", "linear light", "curve", "magnitude"]  # nothing above it is tried


def test_a_blur_in_linear_light_is_the_linear_light_rung_and_a_gamma_after_a_blur_is_not(photos):
    from img2kernel.bench.ladder import linear_light_blur
    from img2kernel.colour import srgb_decode, srgb_encode

    z = np.linspace(-0.1, 1.2, 1001)
    np.testing.assert_allclose(srgb_decode(srgb_encode(z)), z, atol=1e-12)  # the curves invert each other beyond 0..1 too
    ladder = ladder_for_pairs(pairs := make_pairs(photos, linear_light_blur), fit_pairs(pairs, max_ksize=7))
    row = ladder.rows[-1]
    assert ladder.chosen == "linear light" and row["adequate"] and row["psnr_db"] >= 45, ladder.rows
    assert ladder.model.describe().startswith("5x5 kernel in linear light (gaussian sigma 1 (5x5)")
    assert not ladder.rows[0]["adequate"]  # the same kernel on the encoded pixels is not enough
    gamma = make_pairs(photos, lambda x: to_uint8(255 * (cv2.GaussianBlur(x, (5, 5), 1.0) / 255) ** 0.45))
    _, data = data_for(gamma)
    model, residual = best_candidate(rungs.fit_linear_light(data, 0), data)
    assert residual > 2 * data.noise_floor  # a curve after the kernel only is the curve rung's, not this one's


def test_a_blur_between_a_tools_own_curves_is_found_with_both_curves_named(photos):
    """A power 3 decode, a Gaussian, the inverse encode: not sRGB's curves (the linear-light rung
    leaves several floors), so both curves are learned, and named as the powers they are."""
    from img2kernel.bench.ladder import gamma_space_blur

    ladder = ladder_for_pairs(pairs := make_pairs(photos, gamma_space_blur), fit_pairs(pairs, max_ksize=7))
    row = ladder.rows[-1]
    assert ladder.chosen == "two curves" and row["adequate"] and row["psnr_db"] >= 45, ladder.rows
    assert not next(r for r in ladder.rows if r["model"] == "linear light")["adequate"]
    text = ladder.model.describe()
    sigma = float(re.search(r"gaussian sigma ([\d.]+)", text).group(1))
    assert 1.1 <= sigma <= 1.3, text
    gammas = [float(g) for g in re.findall(r"power curve \(gamma ([\d.]+)\)", text)]
    assert len(gammas) == 2 and 2.7 <= gammas[0] <= 3.3 and 0.3 <= gammas[1] <= 0.37, text


@pytest.mark.parametrize("tool, name", [("vignetting", "gain_map"), ("radial_blur", "kernel_map")])
def test_vignetting_is_a_gain_map_and_a_blur_growing_towards_the_corners_a_kernel_map(photos, tool, name):
    from img2kernel.bench import ladder as cases

    pairs = make_pairs(photos, getattr(cases, tool))
    ladder = ladder_for_pairs(pairs, fit_pairs(pairs, max_ksize=7))
    row = next(r for r in ladder.rows if r["model"] == ladder.chosen)
    assert ladder.chosen == "spatially varying" and ladder.model.name == name and row["psnr_db"] >= 40, ladder.rows
    assert not any(r["adequate"] for r in ladder.rows[:-1])  # no shift-invariant rung explains it
    gains = ladder.model.survey()["gains"]
    if name == "gain_map":  # 1 - 0.3 r^2 - 0.15 r^4: 1 at the centre, 0.55 at the corners
        assert ladder.model.ksize == 1 and abs(gains[4, 4] - 1) < 0.03 and abs(gains[0, 0] - 0.55) < 0.06, gains
        assert "at the centre to 0.5" in ladder.model.describe() and "at the corners" in ladder.model.describe()
    else:  # a blur: no gain change, wider at the corners than at the centre
        assert np.all(np.abs(gains - 1) < 0.03), gains
        assert "px at the centre" in ladder.model.describe()


def test_maps_are_fitted_only_where_tile_wise_fits_change_with_the_place(photos):
    from img2kernel.bench.ladder import vignetting
    from img2kernel.fit.rungs import tile_variation
    from img2kernel.thresholds import VARIATION_MIN

    _, varying = data_for(make_pairs(photos, vignetting))
    assert tile_variation(varying.train) >= VARIATION_MIN
    _, median = data_for(make_pairs(photos, pillow(ImageFilter.MedianFilter(3))))
    assert tile_variation(median.train) < VARIATION_MIN
    with pytest.raises(rungs.NotTried, match="tile-wise fits do not change with the place"):
        rungs.fit_field(median, 0)
    ladder = climb(median, {"linear": Given(AffineKernel(np.ones((1, 1, 3, 3)) / 9))},
                   rung_fits=[("spatially varying", rungs.fit_field)])
    assert [r["model"] for r in ladder.rows] == ["linear"]
    assert ladder.notes[0].startswith("spatially varying: not tried: tile-wise fits do not change with the place")


def test_a_varying_model_is_scored_on_tiles_where_they_lie_in_their_images(photos):
    """Tiles carry their place: a gain map's own outputs score zero on tiles, and would not if
    each tile were taken for a whole image."""
    model = GainMapModel(np.array([[0.5, 1.0, 0.5], [1.0, 1.2, 1.0], [0.5, 1.0, 0.7]]), np.ones((3, 3)) / 9)
    pairs = make_pairs(photos, lambda x: model.predict(x, "reflect101"), storage="float64")
    tiles = ladder_data(pairs, "val", 1.0).heldout
    assert heldout_rms(model, tiles) < 1e-9
    tiles.where[:, :2] = 0
    tiles.where[:, 2:] = tiles.y.shape[1:]
    assert heldout_rms(model, tiles) > 1


def test_selection_is_the_first_adequate_rung_else_the_best_psnr():
    row = lambda psnr, adequate: {"psnr_db": psnr, "adequate": adequate}  # noqa: E731
    assert choose([row(30, False), row(45, True), row(80, True)]) == 1
    assert choose([row(30, False), row(40.0, False), row(40.3, False), row(35, False)]) == 1  # within 0.5 dB: the smaller
    assert choose([row(30, False), row(40.0, False), row(43, False)]) == 2


def test_median_climbs_to_rank_and_a_linear_tool_pays_nothing(photos, monkeypatch):
    fit, data = data_for(make_pairs(photos, pillow(ImageFilter.MedianFilter(3))))
    ladder = climb(data, {"linear": Given(fit.model.with_output("float"), fit.residual_rms)})
    assert ladder.chosen == "rank" and ladder.model.describe() == "3x3 median"
    assert [r["model"] for r in ladder.rows] == ["linear", "rank"]  # the first rung after linear explains it
    assert not ladder.rows[0]["adequate"] and ladder.rows[-1]["residual"] == 0

    def no_fit(*args):
        raise AssertionError("a linear filter must not climb")

    monkeypatch.setattr(rungs, "RUNGS", [(rung, no_fit) for rung, _ in rungs.RUNGS])
    linear = make_pairs(photos, lambda x: to_uint8(cv2.GaussianBlur(x, (3, 3), 0.8)))
    linear_fit = fit_pairs(linear, max_ksize=5)
    only = ladder_for_pairs(linear, linear_fit)
    assert linear_fit.linear and only.chosen == "linear" and len(only.rows) == 1 and only.model is linear_fit.model


def test_a_filter_no_structured_rung_explains_falls_to_the_cnn_with_its_size(photos, monkeypatch):
    # The curve and magnitude rungs are left out to keep this fast; the median test climbs them.
    monkeypatch.setattr(rungs, "RUNGS", [r for r in rungs.RUNGS if r[0] in ("rank", "cnn")])
    bilateral = make_pairs(photos, lambda x: to_uint8(cv2.bilateralFilter(x.astype(np.float32), 5, 40, 3)))
    fit, data = data_for(bilateral)
    ladder = climb(data, {"linear": Given(fit.model.with_output("float"), fit.residual_rms)})
    cnn = next(r for r in ladder.rows if r["model"] == "cnn")
    assert [r["model"] for r in ladder.rows] == ["linear", "rank", "cnn"] and not any(r["adequate"] for r in ladder.rows)
    assert cnn["params"] == ladder.rows[-1]["params"] > 500 and "not an identification" in cnn["description"]


def every_model() -> list:
    rng = np.random.default_rng(0)
    width = 8
    return [
        AffineKernel(rng.normal(size=(1, 1, 5, 5))),
        CurveModel(rng.normal(size=(3, 3)), 0.5, np.linspace(-200, 200, 24), rng.normal(size=24) * 50, rng.normal(size=(3, 3))),
        MagnitudeModel(rng.normal(size=(3, 1, 5, 5))),
        RankModel(disk(2), 7, scale=0.9, offset=3.0),
        LinearLightModel(rng.normal(size=(5, 5)) / 5, 0.01, 255.0),
        TwoCurveModel(np.linspace(0, 255, 17), np.linspace(0, 1, 17) ** 2.2, rng.normal(size=(3, 3)) / 3, 0.1,
                      np.linspace(-1, 2, 24), 255 * np.clip(np.linspace(-1, 2, 24), 0, None) ** 0.45),
        GainMapModel(rng.uniform(0.5, 1.0, size=(5, 5)), rng.normal(size=(3, 3)), 2.0),
        KernelMapModel(rng.normal(size=(3, 3, 5, 5)), -1.0),
        ResampleModel(np.linspace(-2, 2, 17), np.maximum(0, 1 - np.abs(np.linspace(-2, 2, 17)) / 2), [-0.5, 0.5], [1.0, 1.0],
                      (0.75, 2.0), [1.5], between_passes="horizontal first"),
        ResampleModel.named([(6, 0.1, 4 / 3), (2, 0.0, 1.0)], (0.75, 2.0), [0.5], output="uint8"),
        CnnModel(rng.normal(size=(width, 3, 3)), rng.normal(size=width), rng.normal(size=(width, width, 3, 3)) / 8,
                 rng.normal(size=width), rng.normal(size=width), [0.1], rng.normal(size=(5, 5)), 40.0),
    ]


@pytest.mark.parametrize("model", every_model(), ids=lambda m: m.name)
def test_every_ladder_model_round_trips_and_applies_tile_by_tile_as_it_predicts(tmp_path, photos, model):
    assert set(MODELS) == {"affine", "resample", "linear_light", "curve", "magnitude", "rank", "two_curves", "gain_map",
                           "kernel_map", "cnn"}
    assert MODELS[model.name] is type(model)
    path = tmp_path / f"{model.name}.safetensors"
    model.save(path, {"border": "reflect101"})
    loaded, metadata = load_model(path)
    assert type(loaded) is type(model) and loaded.describe() == model.describe() and metadata["model"] == model.name
    image = photos[0][:101, :87]
    whole = model.predict(image, "reflect101")
    np.testing.assert_array_equal(loaded.predict(image, "reflect101"), whole)
    for tile in (7, 37):
        np.testing.assert_allclose(apply_tiled(image.astype(np.float32), loaded, "reflect101", tile=tile), whole,
                                   rtol=1e-5, atol=1e-3 * (np.abs(whole).max() + 1))


def test_a_colour_tool_gets_a_per_channel_rank_model_that_apply_runs(tmp_path, photos, monkeypatch):
    monkeypatch.setattr(rungs, "RUNGS", [("rank", rungs.fit_rank)])
    rgb = [np.stack([x, np.roll(x, 7, axis=0), 255 - x], axis=2) for x in photos]
    outputs = [np.asarray(Image.fromarray(x.astype(np.uint8)).filter(ImageFilter.MinFilter(3)), dtype=np.float64) for x in rgb]
    codes = [np.full(x.shape[:2], SPLIT_CODES[s], np.uint8) for x, s in zip(rgb, ["train"] * 4 + ["val", "test"])]
    pairs = Pairs([f"p{i}" for i in range(6)], rgb, outputs, codes, "uint8", "uint8")
    ladder = ladder_for_pairs(pairs, fit_pairs(pairs, max_ksize=5))
    assert ladder.chosen == "rank" and ladder.model.c_in == ladder.model.c_out == 3
    assert ladder.model.describe() == "3x3 minimum (erosion) on each channel, rounded and clipped to 8 bits"
    prediction = ladder.model.predict(rgb[5], "reflect101")
    np.testing.assert_array_equal(prediction, outputs[5])  # edges too: Pillow's border equals reflect101 for a minimum


def test_smallest_form_of_a_sobel_is_rank_one_and_two_bit_taps(photos):
    from img2kernel.sources.filters import deriv_kernel
    from img2kernel.fit.pairs import heldout_rms as pairs_heldout_rms
    from img2kernel.fit.smallest import smallest_forms

    sobel = deriv_kernel(1, 0, 3)
    pairs = make_pairs(photos, lambda x: cv2.filter2D(x, -1, sobel), storage="float64")
    model = AffineKernel(sobel[None, None])
    rows = smallest_forms(model, lambda m: pairs_heldout_rms(m, pairs, "val", 1), 1e-12 * 100, 1020.0)
    assert [r["form"] for r in rows] == ["full 3x3 taps, float64", "separable rank 1", "int3 taps, one scale per kernel"]
    assert rows[1]["kernel_weights"] == 6 and rows[1]["residual"] < 1e-9 and rows[2]["residual"] < 1e-9

    random = np.random.default_rng(1).normal(size=(5, 5))
    pairs = make_pairs(photos, lambda x: cv2.filter2D(x, -1, random), storage="float64")
    rows = smallest_forms(AffineKernel(random[None, None]), lambda m: pairs_heldout_rms(m, pairs, "val", 2), 1e-9, 255.0)
    assert rows[1]["form"].startswith("separable rank 5") and rows[2]["form"].startswith("no bit width")


def test_one_ladder_sentence_serves_both_evaluations():
    from img2kernel.fit.ladder import ladder_sentence

    linear = {"model": "linear", "description": "3x3 affine kernel", "adequate": False, "residual_in_floors": 80.0,
              "psnr_db": 20.0}
    rank = {"model": "rank", "description": "3x3 median", "adequate": True, "residual_in_floors": 0.0, "psnr_db": math.inf}
    cnn = {"model": "cnn", "description": "small CNN", "adequate": False, "residual_in_floors": 7.4, "psnr_db": 41.6, "identifies": False}
    assert ladder_sentence([linear], "linear") == ""
    assert ladder_sentence([linear, rank], "rank") == "; it is a 3x3 median (rank model, held-out residual 0.00x the floor)"
    assert ladder_sentence([linear, rank], "rank", "rank").endswith("the floor; the true structure)")
    assert ladder_sentence([linear, rank], "rank", "curve").endswith("; its true structure is a curve model)")
    assert ladder_sentence([linear, cnn], "cnn") == ("; no rung reaches the floor: the cnn model comes closest (small CNN, "
                                                     "41.6 dB held out, a fit, not an identification)")


def test_a_curve_keeps_its_end_segments_beyond_the_outer_knots(photos):
    # An edge map fitted on a photo's typical responses must keep rising on a stronger edge:
    # |laplacian| as a V through knots at -40, 0, 40, applied to responses up to +-1000.
    laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], float)
    model = CurveModel(laplacian, 0.0, [-40.0, 0.0, 40.0], [40.0, 0.0, 40.0])
    image = photos[0][..., None]
    truth = np.abs(cv2.filter2D(photos[0], -1, laplacian, borderType=cv2.BORDER_REFLECT_101))
    assert truth.max() > 200  # far past the last knot
    np.testing.assert_allclose(model.predict(image, "reflect101"), truth, atol=1e-9)


def test_climb_stops_at_the_first_rung_within_two_floors_and_else_takes_the_best_psnr(photos):
    # Residuals given in noise floors: exactly LINEAR_FACTOR floors is adequate, a hair above is not.
    from img2kernel.thresholds import LINEAR_FACTOR

    fit, data = data_for(make_pairs(photos, lambda x: to_uint8(cv2.GaussianBlur(x, (3, 3), 0.8))))
    model, floor = fit.model.with_output("float"), data.noise_floor
    rung_fits = [("rank", None), ("curve", None), ("magnitude", None)]

    def ladder(*in_floors):
        given = {rung: Given(model, f * floor) for rung, f in zip(["linear", "rank", "curve", "magnitude"], in_floors)}
        return climb(data, given, rung_fits=rung_fits)

    at_boundary = ladder(9.0, LINEAR_FACTOR, 0.1, 0.0)
    assert at_boundary.chosen == "rank" and [r["model"] for r in at_boundary.rows] == ["linear", "rank"]
    above = ladder(9.0, LINEAR_FACTOR * 1.001, 0.1, 0.0)
    assert above.chosen == "curve" and [r["model"] for r in above.rows] == ["linear", "rank", "curve"]
    near = ladder(9.0, LINEAR_FACTOR * 1.05, LINEAR_FACTOR, 0.0)  # rank is 0.4 dB off, but only curve is adequate
    assert near.chosen == "curve"
    none = ladder(9.0, 4.0, 3.0, 2.9)  # none adequate: curve is within PSNR_TOLERANCE_DB of the best
    assert not any(r["adequate"] for r in none.rows) and none.chosen == "curve"
    worst_last = ladder(9.0, 4.0, 3.0, 9.0)
    assert worst_last.chosen == "curve"
    far = ladder(9.0, 4.0, 3.0, 2.0)  # 3.5 dB better: the larger rung wins
    assert far.chosen == "magnitude"
