"""Tiled application of a model equals whole-image inference, at any size, tile and border rule."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
from PIL import Image, ImageFilter

from img2kernel import borders
from img2kernel.apply import apply_tiled, write_image
from img2kernel.borders import border_indices, reflect101
from img2kernel.cli.main import main
from img2kernel.sources.filters import build_filter
from img2kernel.models import AffineKernel, MagnitudeModel, load_model
from test_pairs import gray_photos, rgb_photos


def random_model(ksize=5, c_in=1, c_out=1, seed=3, output="float"):
    rng = np.random.default_rng(seed)
    return AffineKernel(rng.standard_normal((c_out, c_in, ksize, ksize)), rng.standard_normal(c_out), output)


def test_reflect101_is_opencvs_border():
    row = np.arange(5.0)[None]
    padded = cv2.copyMakeBorder(row, 0, 0, 3, 3, cv2.BORDER_REFLECT_101)[0]
    np.testing.assert_array_equal(row[0][reflect101(np.arange(-3, 8), 5)], padded)


@pytest.mark.parametrize("rule", ["reflect101", "reflect", "replicate", "wrap"])
def test_border_indices_are_opencvs_padding(rule):
    row = np.arange(6.0)[None]
    cv_rule = borders.PADDED_RULES[rule][0]
    padded = cv2.copyMakeBorder(row, 0, 0, 4, 4, cv_rule)[0]
    np.testing.assert_array_equal(row[0][border_indices(np.arange(-4, 10), 6, rule)], padded)


@pytest.mark.parametrize("tile", [1, 7, 32, 1000])
@pytest.mark.parametrize("shape", [(37, 53), (5, 91), (64, 64)])
def test_tiles_equal_whole_image_inference(gray_images, tile, shape):
    image = np.ascontiguousarray(np.tile(gray_images[0], (2, 2))[: shape[0], : shape[1]])
    model = random_model()
    whole = model.predict(image)
    np.testing.assert_allclose(apply_tiled(image, model, tile=tile), whole, rtol=1e-5, atol=1e-3)


# The unfiltered ring copies input pixels, so it needs as many output as input channels.
@pytest.mark.parametrize("rule, channels", [(rule, channels) for rule in borders.RULES
                                            for channels in [(1, 1), (3, 3), (3, 1), (1, 3)]
                                            if rule != "unfiltered" or channels[0] == channels[1]])
def test_tiles_equal_whole_image_for_every_border_rule_and_channel_layout(gray_images, rule, channels):
    c_in, c_out = channels
    planes = [np.tile(g, (1, 2))[:45, :70] for g in gray_images]
    image = np.dstack(planes) if c_in == 3 else planes[0]
    model = random_model(5, c_in, c_out, seed=c_in * 10 + c_out)
    tiled = apply_tiled(image, model, rule, tile=16, workers=2)
    np.testing.assert_allclose(tiled, model.predict(image, rule), rtol=1e-5, atol=2e-3)
    assert tiled.shape == image.shape[:2] + ((c_out,) if c_out > 1 else ())


def test_tiles_match_opencv_for_magnitude_and_uint8(gray_images):
    image = gray_images[1]
    magnitude = build_filter({"name": "m", "kind": "sobel_magnitude", "ksize": 3, "output": "float"})
    model = magnitude.model_of(np.stack(magnitude.kernels))
    np.testing.assert_allclose(apply_tiled(image, model, tile=16), magnitude.apply(image), rtol=1e-5, atol=1e-3)
    saved = build_filter({"name": "s", "kind": "sobel", "dx": 1, "dy": 0, "ksize": 3, "output": "abs_uint8"})
    np.testing.assert_array_equal(apply_tiled(image, saved.model_of(np.stack(saved.kernels)), tile=16), saved.apply(image))


def test_apply_command_reads_8_16_bit_and_colour_and_writes_float(tmp_path, gray_images):
    kernel = np.array([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    model = tmp_path / "sobel.safetensors"
    AffineKernel(kernel).save(model)
    gray = gray_images[0].astype(np.uint8)
    cv2.imwrite(str(tmp_path / "in8.png"), gray)
    cv2.imwrite(str(tmp_path / "in16.png"), gray.astype(np.uint16) * 256)
    bgr = np.dstack([gray, gray // 2, 255 - gray])
    cv2.imwrite(str(tmp_path / "colour.png"), bgr)
    expected = cv2.Sobel(gray.astype(np.float32), cv2.CV_32F, 1, 0, ksize=3)
    for name in ("in8.png", "in16.png"):
        assert main(["apply", str(model), str(tmp_path / name), str(tmp_path / "out.npy"), "--tile", "17"]) == 0
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-3)
    main(["apply", str(model), str(tmp_path / "colour.png"), str(tmp_path / "c.tif"), "--colour", "per-channel"])
    planes = cv2.imread(str(tmp_path / "c.tif"), cv2.IMREAD_UNCHANGED)
    assert planes.shape == gray.shape + (3,) and planes.dtype == np.float32
    for c in range(3):  # every plane, in the file's own channel order
        np.testing.assert_allclose(planes[..., c], cv2.Sobel(bgr[..., c].astype(np.float32), cv2.CV_32F, 1, 0), atol=1e-3)
    main(["apply", str(model), str(tmp_path / "colour.png"), str(tmp_path / "g.npy")])
    gray_of_colour = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    np.testing.assert_allclose(np.load(tmp_path / "g.npy"), cv2.Sobel(gray_of_colour, cv2.CV_32F, 1, 0), atol=1e-3)


def test_png_output_is_rounded_and_clipped_not_just_cast(tmp_path):
    values = np.array([[-20.0, 0.4, 0.6, 254.5, 300.0]], dtype=np.float32)
    write_image(tmp_path / "clipped.png", values)
    stored = cv2.imread(str(tmp_path / "clipped.png"), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint8
    np.testing.assert_array_equal(stored[0], [0, 0, 1, 254, 255])  # rint: 254.5 -> 254 (half to even)


def test_a_colour_model_writes_the_tools_8_bit_colour_file(tmp_path, gray_images):
    rgb = np.dstack(gray_images).astype(np.uint8)
    model = AffineKernel(np.eye(3)[:, :, None, None] * np.full((1, 1, 3, 3), 1 / 9), [10, 0, -10], output="uint8")
    model.save(tmp_path / "blur.safetensors", {"units": "stored", "border": "replicate"})
    cv2.imwrite(str(tmp_path / "in.png"), rgb[..., ::-1])
    assert main(["apply", str(tmp_path / "blur.safetensors"), str(tmp_path / "in.png"), str(tmp_path / "out.png")]) == 0
    written = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    expected = np.stack([np.clip(np.rint(cv2.blur(rgb[..., c].astype(np.float64), (3, 3), borderType=cv2.BORDER_REPLICATE)
                                          + b), 0, 255) for c, b in enumerate([10, 0, -10])], axis=-1)
    np.testing.assert_array_equal(written, expected.astype(np.uint8))


def test_worker_threads_give_the_same_result(gray_images):
    image = np.ascontiguousarray(np.tile(gray_images[0], (2, 2))[:61, :83])
    magnitude = build_filter({"name": "m", "kind": "sobel_magnitude", "ksize": 5, "output": "float"})
    model = magnitude.model_of(np.stack(magnitude.kernels))
    serial = apply_tiled(image, model, tile=9, workers=1)
    np.testing.assert_array_equal(apply_tiled(image, model, tile=9, workers=4), serial)


@pytest.mark.parametrize(
    "model, image_channels, border, tile, workers, message",
    [
        (random_model(3, 3, 1), 1, "reflect101", 8, 1, "takes 3 channel(s)"),
        (random_model(3), 1, "mirror", 8, 1, "unknown border rule"),
        (random_model(3), 1, "reflect101", 0, 1, "tile must be"),
        (random_model(3), 1, "reflect101", 8, 0, "workers must be"),
        (np.ones((1, 3, 3)), 1, "reflect101", 8, 1, "expected an img2kernel model"),
    ],
)
def test_bad_arguments_say_what_is_wrong(gray_images, model, image_channels, border, tile, workers, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        apply_tiled(gray_images[0], model, border, tile=tile, workers=workers)


def test_npy_to_npy_fills_a_memory_map_channel_by_channel(tmp_path, gray_images):
    magnitude = build_filter({"name": "m", "kind": "sobel_magnitude", "ksize": 3, "output": "float"})
    model = tmp_path / "magnitude.safetensors"
    MagnitudeModel(np.stack(magnitude.kernels)).save(model)
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
    AffineKernel(np.ones((3, 3))).save(model)
    colour_model = tmp_path / "rgb.safetensors"
    AffineKernel(np.ones((1, 3, 3, 3))).save(colour_model)
    nan_model = tmp_path / "nan.safetensors"
    save_file({"kernel": np.full((1, 1, 3, 3), np.nan), "bias": np.zeros(1)}, str(nan_model), metadata={"model": "affine"})
    empty_model = tmp_path / "empty.safetensors"
    save_file({"kernel": np.zeros((0, 3, 3)), "bias": np.zeros(0)}, str(empty_model), metadata={"model": "affine"})
    old_model = tmp_path / "old.safetensors"
    save_file({"kernel": np.ones((3, 3, 3))}, str(old_model), metadata={"combine": "none"})
    cv2.imwrite(str(tmp_path / "in.png"), gray_images[0].astype(np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    cases = [
        ([str(model), str(tmp_path / "in.png"), str(tmp_path / "out.xyz")], "cannot write .xyz"),
        ([str(model), str(tmp_path / "in.png"), str(tmp_path / "out.gif")], "cannot write .gif"),
        ([str(model), str(tmp_path / "in.png"), str(tmp_path / "in.png")], "would overwrite the input"),
        ([str(model), str(tmp_path / "in.png"), str(tmp_path / "missing" / "out.npy")], "does not exist"),
        ([str(tmp_path / "none.safetensors"), str(tmp_path / "in.png"), str(tmp_path / "out.npy")], "no such model file"),
        ([str(tmp_path / "notes.txt"), str(tmp_path / "in.png"), str(tmp_path / "out.npy")], "not a safetensors model file"),
        ([str(nan_model), str(tmp_path / "in.png"), str(tmp_path / "out.npy")], "NaN or infinite"),
        ([str(empty_model), str(tmp_path / "in.png"), str(tmp_path / "out.npy")], "is empty"),
        ([str(old_model), str(tmp_path / "in.png"), str(tmp_path / "out.npy")], "metadata 'model'"),
        ([str(colour_model), str(tmp_path / "in.png"), str(tmp_path / "out.npy")], "takes 3"),
        ([str(model), str(tmp_path / "notes.txt"), str(tmp_path / "out.npy")], "not a readable image"),
    ]
    for arguments, message in cases:
        with pytest.raises(SystemExit) as stopped:
            main(["apply", *arguments])
        assert stopped.value.code == 2
        error = capsys.readouterr().err
        assert message in error and "img2kernel apply:" in error, (message, error)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "empty.safetensors", "in.png", "k.safetensors", "nan.safetensors", "notes.txt", "old.safetensors", "rgb.safetensors"]


def test_a_gray_pairs_model_reads_a_colour_file_as_gray_or_per_plane(tmp_path, gray_images):
    rgb = np.dstack(gray_images).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), rgb[..., ::-1])
    AffineKernel(np.array([[0, 0, 0], [0, 2.0, 0], [0, 0, 0]]), [1.0]).save(tmp_path / "m.safetensors", {"units": "stored"})
    assert main(["apply", str(tmp_path / "m.safetensors"), str(tmp_path / "in.png"), str(tmp_path / "g.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "g.npy"), 2 * (rgb.astype(np.float64) @ [0.299, 0.587, 0.114]) + 1, rtol=1e-6)
    assert main(["apply", str(tmp_path / "m.safetensors"), str(tmp_path / "in.png"), str(tmp_path / "c.npy"),
                 "--colour", "per-channel"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), 2 * rgb.astype(np.float32) + 1)


@pytest.mark.parametrize("change, message", [
    ({"model": "magnitude"}, "its metadata says 'magnitude', whose tensors would be kernel"),
    ({"model": "rank"}, "rank model with tensors"),
    ({"model": "cnn"}, "cnn model with tensors"),
    ({"border": "sideways"}, "metadata 'border' is 'sideways', not one of"),
])
def test_a_model_file_whose_metadata_does_not_match_its_tensors_is_refused(tmp_path, change, message, capsys):
    from safetensors.numpy import load_file, save_file

    from img2kernel.models import load_model

    path = tmp_path / "m.safetensors"
    AffineKernel(np.ones((1, 1, 3, 3)) / 9, [10.0]).save(path, {"border": "reflect101"})
    with __import__("safetensors").safe_open(str(path), framework="numpy") as handle:
        metadata = dict(handle.metadata())
    relabelled = tmp_path / "relabelled.safetensors"
    save_file(load_file(str(path)), str(relabelled), metadata={**metadata, **change})
    with pytest.raises(ValueError, match=message) as raised:
        load_model(relabelled)
    assert str(relabelled) in str(raised.value)
    np.save(tmp_path / "in.npy", np.zeros((8, 8), np.float32))
    with pytest.raises(SystemExit) as exit_:
        main(["apply", str(relabelled), str(tmp_path / "in.npy"), str(tmp_path / "out.npy")])
    assert exit_.value.code == 2 and not (tmp_path / "out.npy").exists() and message in capsys.readouterr().err


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (mounting one needs root; elsewhere the test skips and says so)."""
    import subprocess

    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"a full disk needs a small tmpfs, and mount refused: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_is_said_in_one_line_and_the_earlier_file_is_kept(tmp_path, small_disk, gray_images, capsys):
    image = np.ascontiguousarray(np.tile(gray_images[0], (4, 4))[:300, :300]).astype(np.uint8)
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
    cv2.imwrite(str(tmp_path / "a" / "p.png"), image)
    cv2.imwrite(str(tmp_path / "b" / "p.png"), cv2.GaussianBlur(image, (3, 3), 0))
    model = small_disk / "kernel.safetensors"
    assert main(["fit", str(tmp_path / "a" / "p.png"), str(tmp_path / "b" / "p.png"), "-o", str(model), "--max-ksize", "3"]) == 0
    capsys.readouterr()
    earlier = {p.name: p.read_bytes() for p in small_disk.iterdir()}  # the model and its kernel.json
    import shutil

    (small_disk / "filler").write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 1))  # the disk is full
    runs = [("fit", [str(tmp_path / "a" / "p.png"), str(tmp_path / "b" / "p.png"), "-o", str(model), "--max-ksize", "3"]),
            ("apply", [str(model), str(tmp_path / "a" / "p.png"), str(small_disk / "out.png")]),
            ("apply", [str(model), str(tmp_path / "a" / "p.png"), str(small_disk / "out.npy")])]
    for command, arguments in runs:
        with pytest.raises(SystemExit) as stopped:
            main([command, *arguments])
        error = capsys.readouterr().err
        assert stopped.value.code == 2 and "the disk is full (" in error and "MB free)" in error, error
        assert error.splitlines()[-1].startswith(f"img2kernel {command}: {arguments[-1] if command == 'apply' else model}: ")
        assert "Traceback" not in error
    (small_disk / "filler").unlink()
    assert {p.name: p.read_bytes() for p in small_disk.iterdir()} == earlier


@pytest.mark.parametrize("ksize", [3, 11])
def test_a_rounded_model_gives_the_same_pixels_tiled_and_whole(gray_images, ksize):
    # Least-squares taps (no short binary fractions) on a 6-megapixel photo: a value whose float32
    # sum moved with the tile's size would round to another level.
    image = cv2.resize(np.tile(gray_images[0], (3, 3)).astype(np.uint8), (3000, 2000), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(ksize)
    kernel = rng.normal(size=(ksize, ksize))
    model = AffineKernel(0.7 * kernel / kernel.sum(), np.array([3.3]), output="uint8")
    whole = apply_tiled(image, model, tile=4096, workers=1)
    np.testing.assert_array_equal(apply_tiled(image, model, tile=700, workers=2), whole)
    np.testing.assert_array_equal(model.predict(image), whole)


def test_an_h_w_1_image_keeps_its_unfiltered_ring_tiled(gray_images):
    image = gray_images[0].astype(np.float32)[..., None]  # one channel with its axis, as the pairs hold it
    model = random_model(ksize=5)
    whole = model.predict(image, "unfiltered")
    np.testing.assert_allclose(apply_tiled(image, model, "unfiltered", tile=17), whole, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(apply_tiled(image, model, "unfiltered", tile=17)[:2], image[:2, :, 0])


# Each reproduction snippet, run as a user would paste it, against the tool's own file.
WRAP_KERNEL = np.array([[0.11, 0.21, 0.05], [0.13, 0.29, 0.07], [0.02, 0.06, 0.03]], np.float32)  # no rounding ties
REPRODUCED_TOOLS = {
    "Pillow EMBOSS, colour (unfiltered ring)": (lambda p: np.asarray(Image.fromarray(p).filter(ImageFilter.EMBOSS)), True),
    "cv2.filter2D sharpen, gray (reflect101)": (
        lambda p: cv2.filter2D(p, -1, np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)), False),
    "scipy correlate, gray (reflect), float TIFF": (
        lambda p: ndi.correlate(p.astype(np.float32), np.arange(9, dtype=np.float32).reshape(3, 3) / 36, mode="reflect"), False),
    "cv2.filter2D per channel, colour (wrap)": (
        lambda p: np.dstack([cv2.filter2D(np.pad(p[..., c], 1, mode="wrap"), -1, WRAP_KERNEL * (0.5 + 0.25 * c))[1:-1, 1:-1]
                             for c in range(3)]), True),
}


@pytest.mark.parametrize("name", list(REPRODUCED_TOOLS))
def test_each_reproduction_snippet_gives_the_tools_file(tmp_path, name, capsys):
    tool, colour = REPRODUCED_TOOLS[name]
    photos = rgb_photos(3, (64, 72)) if colour else gray_photos(3, (64, 72))
    files = []
    for i, photo in enumerate(photos):
        made = tool(photo)
        files += [str(tmp_path / f"in{i}.png"), str(tmp_path / (f"out{i}.tif" if made.dtype == np.float32 else f"out{i}.png"))]
        Image.fromarray(photo).save(files[-2])
        (cv2.imwrite(files[-1], made) if made.dtype == np.float32 else Image.fromarray(made).save(files[-1]))
    assert main(["fit", *files, "--max-ksize", "5", "-o", str(tmp_path / "m.safetensors")]) == 0
    assert "the same in OpenCV" in capsys.readouterr().out
    code = json.loads((tmp_path / "m.json").read_text())["reproduce"]
    assert set(code) == {"opencv", "scipy", "torch"}
    fresh = (rgb_photos(4, (80, 64)) if colour else gray_photos(4, (80, 64)))[3]  # a photo the fit never saw
    truth = tool(fresh)
    model, metadata = load_model(tmp_path / "m.safetensors")
    ours = model.predict(fresh, metadata["border"])  # what `img2kernel apply` writes
    for library, snippet in code.items():
        scope = {"src": fresh}
        exec(snippet, scope)  # noqa: S102 - the snippet the user is told to paste
        out = scope["out"]
        assert out.shape == truth.shape and out.dtype == truth.dtype, (library, out.shape, out.dtype)
        if truth.dtype == np.uint8:
            assert np.mean(out == ours) >= 0.999, (library, np.mean(out == ours))  # ties may round either way
            # The tool's file: exact for integer kernels; a kernel fitted to 1e-3 moves values near .5.
            assert np.mean(out == truth) >= 0.97 and np.max(np.abs(out.astype(int) - truth)) <= 1, (library, np.mean(out == truth))
        else:
            assert np.max(np.abs(out - truth)) < 1e-3 * np.max(np.abs(truth)), library
