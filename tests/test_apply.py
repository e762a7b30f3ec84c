"""Tiled application of a learned kernel equals whole-image inference, at any size and tile."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from img2kernel.apply import apply_tiled, read_image, reflect101, write_image
from img2kernel.cli import main
from img2kernel.evaluate import predict
from img2kernel.filters import build_filter


def test_reflect101_is_opencvs_border():
    row = np.arange(5.0)[None]
    padded = cv2.copyMakeBorder(row, 0, 0, 3, 3, cv2.BORDER_REFLECT_101)[0]
    np.testing.assert_array_equal(row[0][reflect101(np.arange(-3, 8), 5)], padded)


@pytest.mark.parametrize("tile", [1, 7, 32, 1000])
@pytest.mark.parametrize("shape", [(37, 53), (5, 91), (64, 64)])
def test_tiles_equal_whole_image_inference(gray_images, tile, shape):
    image = np.ascontiguousarray(np.tile(gray_images[0], (2, 2))[: shape[0], : shape[1]])
    kernel = np.stack(build_filter({"name": "r", "kind": "random", "ksize": 5, "seed": 3, "distribution": "normal",
                                    "normalization": "none"}).kernels)
    whole = predict(kernel, image)
    np.testing.assert_allclose(apply_tiled(image, kernel, tile=tile), whole, rtol=1e-5, atol=1e-3)


def test_tiles_match_opencv_for_magnitude_and_uint8(gray_images):
    image = gray_images[1]
    magnitude = build_filter({"name": "m", "kind": "sobel_magnitude", "ksize": 3, "output": "float"})
    np.testing.assert_allclose(apply_tiled(image, np.stack(magnitude.kernels), "magnitude", tile=16),
                               magnitude.apply(image), rtol=1e-5, atol=1e-3)
    saved = build_filter({"name": "s", "kind": "sobel", "dx": 1, "dy": 0, "ksize": 3, "output": "uint8"})
    np.testing.assert_array_equal(apply_tiled(image, np.stack(saved.kernels), output="uint8", tile=16), saved.apply(image))


def test_apply_command_reads_8_16_bit_and_colour_and_writes_float(tmp_path, gray_images):
    from safetensors.numpy import save_file

    kernel = np.array([[[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]])
    model = tmp_path / "sobel.safetensors"
    save_file({"kernel": kernel}, str(model), metadata={"combine": "none", "output": "float"})
    gray = gray_images[0].astype(np.uint8)
    cv2.imwrite(str(tmp_path / "in8.png"), gray)
    cv2.imwrite(str(tmp_path / "in16.png"), gray.astype(np.uint16) * 256)
    cv2.imwrite(str(tmp_path / "colour.png"), np.dstack([gray, gray // 2, 255 - gray]))
    expected = cv2.Sobel(gray.astype(np.float32), cv2.CV_32F, 1, 0, ksize=3)
    for name in ("in8.png", "in16.png"):
        assert main(["apply", str(model), str(tmp_path / name), str(tmp_path / "out.npy"), "--tile", "17"]) == 0
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-3)
    main(["apply", str(model), str(tmp_path / "colour.png"), str(tmp_path / "c.tif"), "--colour", "per-channel"])
    planes = cv2.imread(str(tmp_path / "c.tif"), cv2.IMREAD_UNCHANGED)
    assert planes.shape == gray.shape + (3,) and planes.dtype == np.float32
    np.testing.assert_allclose(planes[..., 0], expected, atol=1e-3)
    write_image(tmp_path / "clipped.png", expected)
    assert cv2.imread(str(tmp_path / "clipped.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    assert len(read_image(tmp_path / "colour.png")) == 1


def test_worker_threads_give_the_same_result(gray_images):
    image = np.ascontiguousarray(np.tile(gray_images[0], (2, 2))[:61, :83])
    kernels = np.stack(build_filter({"name": "m", "kind": "sobel_magnitude", "ksize": 5, "output": "float"}).kernels)
    serial = apply_tiled(image, kernels, "magnitude", tile=9, workers=1)
    np.testing.assert_array_equal(apply_tiled(image, kernels, "magnitude", tile=9, workers=4), serial)


@pytest.mark.parametrize(
    "kernels, combine, output, workers, message",
    [
        (np.ones((1, 4, 4)), "none", "float", 1, "K odd"),
        (np.ones((3, 3)), "none", "float", 1, "(n, K, K)"),
        (np.ones((1, 3, 3)), "magnitude", "float", 1, "takes 2 kernels"),
        (np.ones((2, 3, 3)), "sum", "float", 1, "combine must be"),
        (np.ones((1, 3, 3)), "none", "float16", 1, "output must be"),
        (np.ones((1, 3, 3)), "none", "float", 0, "workers must be"),
    ],
)
def test_bad_arguments_say_what_is_wrong(gray_images, kernels, combine, output, workers, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        apply_tiled(gray_images[0], kernels, combine, output, workers=workers)


def test_npy_to_npy_fills_a_memory_map_channel_by_channel(tmp_path, gray_images):
    from safetensors.numpy import save_file

    magnitude = build_filter({"name": "m", "kind": "sobel_magnitude", "ksize": 3, "output": "float"})
    kernels = np.stack(magnitude.kernels)
    model = tmp_path / "magnitude.safetensors"
    save_file({"kernel": kernels}, str(model), metadata={"combine": "magnitude", "output": "float"})
    image = np.dstack(gray_images[:2])
    np.save(tmp_path / "in.npy", image)
    assert main(["apply", str(model), str(tmp_path / "in.npy"), str(tmp_path / "out.npy"), "--tile", "19", "--workers", "2"]) == 0
    result = np.load(tmp_path / "out.npy")
    assert result.shape == image.shape and result.dtype == np.float32
    for channel in range(2):
        np.testing.assert_allclose(result[..., channel], magnitude.apply(gray_images[channel]), rtol=1e-5, atol=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy", "magnitude.safetensors", "out.npy"]  # no partial file


def test_apply_command_names_what_is_wrong_before_writing(tmp_path, gray_images, capsys):
    from safetensors.numpy import save_file

    model = tmp_path / "k.safetensors"
    save_file({"kernel": np.ones((1, 3, 3))}, str(model))
    cv2.imwrite(str(tmp_path / "in.png"), gray_images[0].astype(np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    cases = [
        ([str(model), str(tmp_path / "in.png"), str(tmp_path / "out.xyz")], "OpenCV cannot write .xyz"),
        ([str(model), str(tmp_path / "in.png"), str(tmp_path / "missing" / "out.npy")], "does not exist"),
        ([str(tmp_path / "none.safetensors"), str(tmp_path / "in.png"), str(tmp_path / "out.npy")], "no such model file"),
        ([str(tmp_path / "notes.txt"), str(tmp_path / "in.png"), str(tmp_path / "out.npy")], "not a safetensors model file"),
        ([str(model), str(tmp_path / "notes.txt"), str(tmp_path / "out.npy")], "not an image OpenCV can read"),
    ]
    for arguments, message in cases:
        with pytest.raises(SystemExit) as stopped:
            main(["apply", *arguments])
        assert stopped.value.code == 2
        error = capsys.readouterr().err
        assert message in error and "img2kernel apply:" in error, error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "k.safetensors", "notes.txt"]
