"""Filters: true kernels reproduce OpenCV's targets exactly with the reflect border, and only with it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from img2kernel.sources.filters import KINDS, build_filter, magnitude, random_kernel
from img2kernel.fit.convolve import correlate_numpy

LINEAR_SPECS = (
    [{"kind": "sobel", "dx": dx, "dy": dy, "ksize": 1} for dx, dy in ((1, 0), (0, 1), (2, 0), (0, 2))]
    + [
        {"kind": "sobel", "dx": dx, "dy": dy, "ksize": k}
        for k in (3, 5, 7)
        for dx, dy in ((1, 0), (0, 1), (1, 1), (2, 0), (0, 2), (2, 1))
    ]
    + [{"kind": "scharr", "dx": 1, "dy": 0}, {"kind": "scharr", "dx": 0, "dy": 1}]
    + [{"kind": "laplacian", "ksize": k} for k in (1, 3, 5, 7)]
    + [{"kind": "gaussian", "ksize": k, "sigma": s} for k in (3, 5, 7) for s in (0, 1.0, 2.5)]
    + [{"kind": "box", "ksize": k, "normalized": n} for k in (3, 5, 7) for n in (True, False)]
    + [
        {"kind": "random", "ksize": k, "seed": s, "distribution": d, "normalization": n}
        for k, s in ((3, 1), (5, 2), (7, 3))
        for d in ("normal", "uniform")
        for n in ("none", "sum", "unit_norm")
    ]
    + [{"kind": "custom", "kernel": [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]}]
)


def _id(spec):
    return "-".join(f"{v}" for k, v in spec.items() if k != "kernel")


@pytest.mark.parametrize("spec", LINEAR_SPECS, ids=_id)
def test_true_kernel_reproduces_target_with_reflect_border_only(spec, gray_images):
    filt = build_filter({"name": "f", "output": "float", **spec})
    assert filt.linear and filt.kernels[0].shape == (filt.ksize, filt.ksize)
    border_differs = False
    for image in gray_images:
        target = filt.apply(image)
        scale = float(np.ptp(target)) or 1.0
        reflect = correlate_numpy(image, filt.kernels[0], "reflect")
        assert np.max(np.abs(reflect - target)) <= 1e-5 * scale, "edges included"
        zeros = correlate_numpy(image, filt.kernels[0], "zeros")
        border_differs |= np.max(np.abs(zeros - target)) > 1e-3 * scale
        # ...and the difference is only at the border: the interior matches either way.
        p = filt.ksize // 2
        if p:
            interior = (slice(p, -p), slice(p, -p))
            assert np.max(np.abs(zeros[interior] - target[interior])) <= 1e-5 * scale
    assert border_differs, "zero padding must not reproduce OpenCV's border (that is the bias training avoids)"


def test_sobel_kernels_are_opencv_correlation_kernels():
    sobel_x = build_filter({"name": "f", "kind": "sobel", "dx": 1, "dy": 0, "ksize": 3})
    np.testing.assert_array_equal(sobel_x.kernels[0], [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    sobel_y = build_filter({"name": "f", "kind": "sobel", "dx": 0, "dy": 1, "ksize": 3})
    np.testing.assert_array_equal(sobel_y.kernels[0], [[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
    sobel_1 = build_filter({"name": "f", "kind": "sobel", "dx": 1, "dy": 0, "ksize": 1})
    np.testing.assert_array_equal(sobel_1.kernels[0], [[0, 0, 0], [-1, 0, 1], [0, 0, 0]])


def test_asymmetric_kernel_is_correlated_not_convolved(gray_images):
    """A kernel with one tap right of centre reads the pixel to the right: no flip anywhere."""
    kernel = [[0, 0, 0], [0, 0, 1], [0, 0, 0]]
    filt = build_filter({"name": "f", "kind": "custom", "kernel": kernel, "output": "float"})
    image = gray_images[0]
    target = filt.apply(image)
    np.testing.assert_array_equal(target[:, :-1], image[:, 1:])
    np.testing.assert_array_equal(correlate_numpy(image, filt.kernels[0])[:, :-1], image[:, 1:])


def test_sobel_magnitude_is_the_magnitude_of_the_two_kernels(gray_images):
    filt = build_filter({"name": "f", "kind": "sobel_magnitude", "ksize": 3, "output": "float"})
    assert not filt.linear and filt.combine == "magnitude" and len(filt.kernels) == 2
    image = gray_images[1]
    gx, gy = (correlate_numpy(image, k) for k in filt.kernels)
    np.testing.assert_allclose(filt.apply(image), np.hypot(gx, gy), rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("ksize", [3, 7])
def test_sobel_magnitude_targets_are_the_same_bits_on_every_run_and_thread(gray_images, ksize):
    """cv2.magnitude's last bit varied between identical pipeline runs; the targets must not."""
    from concurrent.futures import ThreadPoolExecutor

    filt = build_filter({"name": "f", "kind": "sobel_magnitude", "ksize": ksize, "output": "float"})
    images = [np.ascontiguousarray(np.tile(image, (3, 3))) for image in gray_images]
    serial = [filt.apply(image) for image in images]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(filt.apply, images * 4))
    for i, result in enumerate(threaded):
        np.testing.assert_array_equal(result, serial[i % len(images)])
    # And correctly rounded: the float64 magnitude of the (exact, integer) responses, rounded once.
    gx, gy = (correlate_numpy(images[0], k) for k in filt.kernels)
    np.testing.assert_array_equal(serial[0], np.sqrt(gx * gx + gy * gy).astype(np.float32))


def test_magnitude_of_two_responses():
    gx, gy = np.array([[3.0, -5.0]], np.float32), np.array([[4.0, 12.0]], np.float32)
    result = magnitude(gx, gy)
    assert result.dtype == np.float32 and result.tolist() == [[5.0, 13.0]]
    assert gx.tolist() == [[3.0, -5.0]]  # inputs untouched


def test_uint8_output_saturates_the_absolute_value(gray_images):
    spec = {"name": "f", "kind": "sobel", "dx": 1, "dy": 0, "ksize": 3}
    linear = build_filter({**spec, "output": "float"}).apply(gray_images[0])
    saved = build_filter({**spec, "output": "abs_uint8"})
    assert not saved.linear
    out = saved.apply(gray_images[0])
    np.testing.assert_array_equal(out, np.clip(np.rint(np.abs(linear)), 0, 255))
    assert (np.abs(linear) > 255).any() and out.max() == 255


def test_jpeg_output_is_the_rounded_target_saved_by_pillow(gray_images, tmp_path):
    import io

    from PIL import Image

    spec = {"name": "f", "kind": "gaussian", "ksize": 5, "sigma": 1.0}
    linear = build_filter({**spec, "output": "float"}).apply(gray_images[0])
    saved = build_filter({**spec, "output": "jpeg", "quality": 85})
    assert not saved.linear and saved.expected_rung == "linear" and saved.model_output == "uint8"
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(linear), 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=85)
    np.testing.assert_array_equal(saved.apply(gray_images[0]), np.asarray(Image.open(buffer), dtype=np.float32))
    facts = saved.jpeg_facts()
    assert facts["quality"] == 85 and facts["components"] == 1 and facts["subsampling"] == "gray"
    assert build_filter({**spec, "output": "jpeg"}).quality == 90


def test_median_has_no_kernel(gray_images):
    filt = build_filter({"name": "m", "kind": "median", "ksize": 3, "output": "float"})
    assert filt.kernels is None and not filt.linear
    np.testing.assert_array_equal(filt.apply(gray_images[0]), cv2.medianBlur(gray_images[0], 3))


def test_random_kernels_repeat_for_a_seed_and_differ_across_seeds():
    a = random_kernel(5, 7, "normal", "none")
    np.testing.assert_array_equal(a, random_kernel(5, 7, "normal", "none"))
    assert not np.array_equal(a, random_kernel(5, 8, "normal", "none"))
    assert np.isclose(random_kernel(5, 7, "uniform", "sum").sum(), 1, atol=1e-6)
    assert np.isclose(np.linalg.norm(random_kernel(5, 7, "normal", "unit_norm")), 1, atol=1e-6)


def test_every_kind_is_in_the_schema():
    from img2kernel.pipeline.config import FILTERS_SCHEMA, load_yaml

    from img2kernel.sources import PAIRS

    schema = load_yaml(FILTERS_SCHEMA)
    # `pairs` is a source of pairs, not a filter we compute: it has no entry in KINDS.
    assert set(schema["$defs"]["filter"]["properties"]["kind"]["enum"]) == set(KINDS) | {PAIRS}
    assert set(KINDS) <= set(schema["$defs"])
