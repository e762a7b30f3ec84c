"""Outputs off the input's grid: crops, integer resizes, flips and rotations, sub-pixel shifts.

Made by Pillow, OpenCV and numpy (ImageMagick where installed): each is placed on its input's
grid by the evidence, fitted by `img2kernel fit`, named, and reproduced by `img2kernel apply`
on a photo the fit never saw.
"""

from __future__ import annotations

import subprocess
import textwrap

import cv2
import numpy as np
import pytest
from PIL import Image

from img2kernel.bench.geometry import imagemagick, imagemagick_resize
from img2kernel.cli.main import main
from img2kernel.models import load_model
from img2kernel.evaluate.resamplers import RESAMPLERS
from img2kernel.models import ResampleModel
from img2kernel.sources.geometry import TRANSFORM_WORDS, Placement, allowed, candidates, locate, source_cells
from test_pairs import gray_photos, rgb_photos, uint8

BLUR = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], np.float32) / 8


def blurred(photo: np.ndarray) -> np.ndarray:
    return uint8(cv2.filter2D(photo.astype(np.float32), -1, BLUR))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean(np.square(a.astype(np.float64) - b.astype(np.float64)))
    return float("inf") if error == 0 else 10 * np.log10(255.0**2 / error)


@pytest.mark.parametrize("transform", list(TRANSFORM_WORDS))
@pytest.mark.parametrize("stride, origin", [((1, 1), (0, 0)), ((1, 1), (5, 3)), ((2, 2), (1, 1)), ((3, 2), (2, 0))])
def test_a_placement_puts_the_file_back_where_it_sampled_it(transform, stride, origin):
    full = np.arange(40 * 36, dtype=np.float64).reshape(40, 36)
    rows, cols = -(-(40 - origin[0] - 1) // stride[0]), -(-(36 - origin[1] - 1) // stride[1])
    placement = Placement(transform, origin, stride, (40 - origin[0] - stride[0] * (rows - 1) - 1,
                                                        36 - origin[1] - stride[1] * (cols - 1) - 1))
    file = placement.sample(full)
    assert file.shape == placement.file_shape(full.shape)
    placed = placement.place(file, full.shape)
    known = np.isfinite(placed)
    assert known.sum() == file.size and np.array_equal(placed[known], full[known])
    assert Placement.from_dict(placement.to_dict()) == placement
    rows, cols = np.indices(file.shape)
    cell_r, cell_c = source_cells(transform, placement.sampled_shape(full.shape), rows.ravel(), cols.ravel())
    sampled = full[origin[0] :: stride[0], origin[1] :: stride[1]]
    assert np.array_equal(sampled[cell_r, cell_c], file.ravel())


def test_sizes_alone_allow_crops_integer_resizes_and_turns_only():
    assert candidates((100, 80), (100, 80)) and candidates((100, 80), (80, 100))
    assert {c.stride for c in candidates((450, 300), (225, 150))} == {(2, 2)}
    assert not candidates((100, 80), (104, 80))  # padding
    assert not candidates((256, 128), (170, 85))  # a resize by 1.5
    assert not candidates((200, 200), (120, 200))  # a crop of 80 rows


def test_sizes_allow_a_resize_by_any_ratio_on_its_own_grid_but_not_a_wide_crop_or_padding():
    assert allowed((256, 128), (170, 85)) and allowed((100, 80), (300, 240)) and allowed((192, 256), (144, 192))
    assert allowed((300, 200), (225, 100))  # 3/4 down, 1/2 across: a fixed factor per axis
    assert not allowed((200, 200), (120, 200))  # 80 rows off: one axis alone is a crop
    assert not allowed((100, 80), (104, 80)) and not allowed((100, 100), (10, 10))  # padding; beyond 1/8
    placement = Placement(scale=(0.75, 0.75))
    assert placement.file_shape((256, 200)) == (192, 150) and Placement.from_dict(placement.to_dict()) == placement
    assert placement.describe() == "resized by 3/4" and Placement(scale=(2.0, 2.0)).describe() == "resized by 2"
    with pytest.raises(ValueError, match="scale must be two ratios"):
        Placement.from_dict({"scale": [0.5]})


@pytest.mark.parametrize("resample, between", [(Image.LANCZOS, "horizontal first"), (Image.BICUBIC, "horizontal first")])
def test_the_resample_model_is_pillows_arithmetic(resample, between):
    """The model with Pillow's function, widening, normalisation, edge rule and 8-bit first pass gives
    Pillow's pixels (Pillow's fixed-point weights round a few ties the other way)."""
    name, support = {Image.LANCZOS: ("Lanczos 3", 3), Image.BICUBIC: ("Keys cubic a = -0.5", 2)}[resample]
    function = next(f for n, f in RESAMPLERS.items() if n.startswith(name))
    photo = gray_photos(1, (120, 160))[0]
    for size in ((120, 90), (100, 75), (320, 240)):  # 3/4, 5/8 (on 160 x 120), twice
        widening = max(1.0, photo.shape[1] / size[0])
        knots = np.linspace(-support * widening, support * widening, 481)
        model = ResampleModel(knots, function(knots / widening), knots, function(knots / widening),
                              (size[1] / photo.shape[0], size[0] / photo.shape[1]), between_passes=between, output="uint8")
        ours = model.predict(photo, "zero")
        tool = np.asarray(Image.fromarray(photo).resize(size, resample))
        assert ours.shape == tool.shape and np.mean(ours == tool) > 0.97 and np.abs(ours - tool).max() <= 1


@pytest.mark.parametrize("make, expected", [
    (lambda f, x: f[5:-1, 3:-1], Placement("none", (5, 3), (1, 1), (1, 1))),
    (lambda f, x: f[7:-7, 7:-7], Placement("none", (7, 7), (1, 1), (7, 7))),
    (lambda f, x: np.rot90(f, -1), Placement("rot90")),
    (lambda f, x: f[:, ::-1], Placement("flip_lr")),
    (lambda f, x: np.asarray(Image.fromarray(x).resize((x.shape[1] // 2, x.shape[0] // 2), Image.BOX)),
     Placement("none", (1, 1), (2, 2), (0, 0))),
    (lambda f, x: cv2.resize(x, (x.shape[1] // 3, x.shape[0] // 3), interpolation=cv2.INTER_AREA),
     Placement("none", (1, 1), (3, 3), (1, 1))),
])
def test_the_output_is_located_on_its_input_by_the_evidence(make, expected):
    photo = gray_photos(1, (192, 240))[0]
    placement, evidence = locate(photo, make(blurred(photo), photo))
    assert placement == expected, placement.describe()
    if not expected.plain:
        assert evidence["residual_rms"] < 1.0


def test_a_symmetric_image_is_not_turned_around():
    flat = np.full((64, 64), 100, np.uint8)
    assert locate(flat, flat)[0].plain
    mirror = np.tile(np.arange(64, dtype=np.uint8)[None, :32], (64, 1))
    mirror = np.hstack([mirror, mirror[:, ::-1]])
    assert locate(mirror, mirror)[0].plain


def fit(tmp_path, inputs, outputs, *options, jpeg_quality: int | None = None):
    """`img2kernel fit` on the pairs, saved as PNG (the outputs as JPEG at ``jpeg_quality`` where given)."""
    files = []
    for i, (x, y) in enumerate(zip(inputs, outputs)):
        for role, image in (("in", x), ("out", y)):
            jpeg = role == "out" and jpeg_quality is not None
            path = tmp_path / f"{role}{i}.{'jpg' if jpeg else 'png'}"
            Image.fromarray(np.ascontiguousarray(image)).save(path, **({"quality": jpeg_quality} if jpeg else {}))
            files.append(str(path))
    model = tmp_path / "model.safetensors"
    assert main(["fit", *files, "-o", str(model), *options]) == 0
    return model


def printed(capsys) -> str:
    return capsys.readouterr().out


def test_pillow_half_size_resizes_are_linear_named_and_reproduced(tmp_path, capsys):
    """Pillow's antialiased resizes, square and not: the factor and the resampler said, and apply
    writes the tool's size and pixels on a photo the fit never saw. A box average is a 2x2 kernel at
    every other pixel; the cubic and Lanczos resizes are the resize models of their functions, with
    Pillow's 8-bit first pass (a kernel at every other pixel reads that rounding as noise)."""
    photos = gray_photos(3, (160, 240))
    unseen = gray_photos(4, (120, 200))[3]
    for resample, name, placed in ((Image.BOX, "box (area average), antialiased", {"stride": [2, 2]}),
                                   (Image.BICUBIC, "Keys cubic a = -0.5", {"scale": [0.5, 0.5]}),
                                   (Image.LANCZOS, "Lanczos 3, antialiased", {"scale": [0.5, 0.5]})):
        outputs = [np.asarray(Image.fromarray(p).resize((120, 80), resample)) for p in photos]
        folder = tmp_path / str(resample)
        folder.mkdir()
        model = fit(folder, photos, outputs)
        text = printed(capsys)
        assert "linear:" in text and name in text and "resized by 1/2" in text, text
        placement = load_model(model)[1]["placement"]
        assert all(placement[k] == v for k, v in placed.items()), placement
        assert main(["apply", str(model), str(save(folder / "unseen.png", unseen)), str(folder / "ours.png")]) == 0
        tool = np.asarray(Image.fromarray(unseen).resize((100, 60), resample))
        ours = np.asarray(Image.open(folder / "ours.png"))
        assert ours.shape == tool.shape and psnr(ours, tool) >= 50


def save(path, image):
    Image.fromarray(np.ascontiguousarray(image)).save(path)
    return path


def test_an_opencv_area_resize_of_colour_photos_is_the_same_kernel_on_each_channel(tmp_path, capsys):
    photos = rgb_photos(2, (120, 180))
    fit(tmp_path, photos, [cv2.resize(p, (60, 40), interpolation=cv2.INTER_AREA) for p in photos])
    text = printed(capsys)
    assert "the same kernel on each colour channel" in text and "box (area average)" in text and "resized by 1/3" in text


def test_an_asymmetric_crop_after_a_kernel_is_linear_and_said(tmp_path, capsys):
    photos = gray_photos(2, (128, 160))
    model = fit(tmp_path, photos, [blurred(p)[5:-1, 3:-1] for p in photos])
    text = printed(capsys)
    assert "linear:" in text and "cropped: 3 columns off the left, 1 off the right, 5 rows off the top, 1 off the bottom" in text
    kernel = load_model(model)[0].kernel[0, 0]
    assert kernel.shape == (3, 3) and np.max(np.abs(kernel - BLUR)) < 0.01


def test_a_sub_pixel_shift_is_said_with_its_amount(tmp_path, capsys):
    """OpenCV interpolates with 5-bit weights: a shift of (0.3, -0.4) is (10/32, -13/32)."""
    photos = gray_photos(2, (128, 160))
    shift = np.float32([[1, 0, 0.3], [0, 1, -0.4]])
    fit(tmp_path, photos, [cv2.warpAffine(p, shift, p.shape[::-1], borderMode=cv2.BORDER_REFLECT101) for p in photos])
    assert "a shift by (+0.31, -0.41) px (right, down) with triangle (bilinear)" in printed(capsys)


def test_a_rotated_output_is_said_and_apply_writes_it_rotated(tmp_path, capsys):
    photos = gray_photos(2, (96, 128))
    model = fit(tmp_path, photos, [np.rot90(blurred(p), -1) for p in photos])
    text = printed(capsys)
    assert "linear:" in text and "then rotated 90 degrees clockwise" in text
    unseen = gray_photos(4, (80, 100))[3]
    assert main(["apply", str(model), str(save(tmp_path / "unseen.png", unseen)), str(tmp_path / "ours.png")]) == 0
    ours = np.asarray(Image.open(tmp_path / "ours.png"))
    assert ours.shape == (100, 80) and psnr(ours, np.rot90(blurred(unseen), -1)) >= 50


def test_a_jpeg_of_a_resize_is_fitted_on_its_pixels_and_says_so(tmp_path, capsys):
    photos = gray_photos(2, (160, 240))
    fit(tmp_path, photos, [np.asarray(Image.fromarray(p).resize((120, 80), Image.BILINEAR)) for p in photos], jpeg_quality=95)
    text = printed(capsys)
    assert "resized by 1/2" in text and "triangle (bilinear), antialiased" in text


def test_a_model_file_with_a_bad_placement_is_refused_naming_it(tmp_path):
    photos = gray_photos(2, (64, 64))
    model = fit(tmp_path, photos, [blurred(p) for p in photos])
    tensors, metadata = load_model(model)
    from img2kernel.models import AffineKernel

    broken = tmp_path / "broken.safetensors"
    AffineKernel(tensors.kernel, tensors.bias).save(broken, {"placement": {"transform": "spin", "stride": [2, 2]}})
    with pytest.raises(ValueError, match=r"broken.safetensors: metadata 'placement': placement transform 'spin'"):
        load_model(broken)


@pytest.mark.parametrize("percent, says", [
    (50, ("resized by 1/2",)),
    (75, ("resized by 3/4", "the tool truncates to integers instead of rounding")),
    (200, ("resized by 2", "Mitchell-Netravali B = C = 1/3, not antialiased")),
])
def test_imagemagick_resizes_are_linear_and_said(tmp_path, capsys, percent, says):
    if imagemagick() is None:
        pytest.skip("ImageMagick is not installed (apt-get install imagemagick)")
    photos = gray_photos(2, (160, 240) if percent < 100 else (64, 96))
    model = fit(tmp_path, photos, [imagemagick_resize(percent)(p) for p in photos])
    text = printed(capsys)
    assert "linear:" in text and all(s in text for s in says), text
    unseen = gray_photos(4, (72, 100))[3]
    assert main(["apply", str(model), str(save(tmp_path / "unseen.png", unseen)), str(tmp_path / "ours.png")]) == 0
    ours, tool = np.asarray(Image.open(tmp_path / "ours.png")), imagemagick_resize(percent)(unseen)
    assert ours.shape == tool.shape and psnr(ours, tool) >= 50


def test_the_pairs_of_one_resizer_share_one_phase(tmp_path):
    """An even factor's cell centre is half-way between two pixels, so either origin fits a pair
    about as well; pairs placed at different origins would ask one kernel to sit in two places
    (a JPEG fit of four such pairs was once judged not linear). Later pairs keep the first's."""
    from img2kernel.sources.pairs import list_pairs
    from img2kernel.sources.pairs_store import read_pairs

    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    for i, photo in enumerate(gray_photos(5, (128, 160))):
        save(tmp_path / "in" / f"p{i}.png", photo)
        Image.fromarray(photo).resize((80, 64), Image.BILINEAR).save(tmp_path / "out" / f"p{i}.jpg", quality=95)
    spec = {"name": "half", "kind": "pairs", "inputs": str(tmp_path / "in"), "outputs": str(tmp_path / "out")}
    loaded, _ = read_pairs(spec, list_pairs(spec))
    assert len({p.placement for p in loaded}) == 1 and loaded[0].placement.stride == (2, 2)


@pytest.mark.parametrize("make, says, unseen_size", [
    (lambda p: np.asarray(Image.fromarray(p).resize((p.shape[1] * 3 // 4, p.shape[0] * 3 // 4), Image.LANCZOS)),
     ("Lanczos 3, antialiased", "pixel centres aligned", "resized by 3/4"), (75, 54)),
    (lambda p: cv2.resize(p, (p.shape[1] * 2, p.shape[0] * 2), interpolation=cv2.INTER_CUBIC),
     ("Keys cubic a = -0.75", "not antialiased", "resized by 2"), (200, 144)),
    (lambda p: np.asarray(Image.fromarray(p).resize((p.shape[1] * 85 // 128, p.shape[0] * 85 // 128), Image.BILINEAR)),
     ("triangle (bilinear), antialiased", "resized by 0.6641"), None),
], ids=["three quarters (a crop's sizes too)", "twice", "85 of 128"])
def test_a_resize_by_any_ratio_is_linear_named_and_reproduced(tmp_path, capsys, make, says, unseen_size):
    photos = gray_photos(3, (128, 128))
    model = fit(tmp_path, photos, [make(p) for p in photos])
    text = printed(capsys)
    assert "linear:" in text and all(s in text for s in says), text
    assert load_model(model)[1]["placement"]["scale"] == [make(photos[0]).shape[0] / 128] * 2
    if unseen_size is None:
        return
    unseen = gray_photos(4, (72, 100))[3]
    assert main(["apply", str(model), str(save(tmp_path / "unseen.png", unseen)), str(tmp_path / "ours.png")]) == 0
    ours = np.asarray(Image.open(tmp_path / "ours.png"))
    tool = make(unseen)
    assert ours.shape == tool.shape == unseen_size[::-1] and psnr(ours, tool) >= 50


def test_a_colour_resize_is_the_same_kernel_on_each_channel(tmp_path, capsys):
    photos = rgb_photos(3, (96, 128))
    fit(tmp_path, photos, [np.asarray(Image.fromarray(p).resize((96, 72), Image.BICUBIC)) for p in photos])
    text = printed(capsys)
    assert "linear:" in text and "the same kernel on each colour channel" in text and "resized by 3/4" in text, text


def test_a_square_photo_padded_alike_on_every_side_is_refused_as_padding(tmp_path):
    """Its sizes are a resize by 13/12's too: the input found unchanged in the output's middle says padding."""
    photos = gray_photos(2, (96, 96))
    files = []
    for i, p in enumerate(photos):
        files += [str(save(tmp_path / f"in{i}.png", p)), str(save(tmp_path / f"out{i}.png", np.pad(p, 4, mode="edge")))]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *files, "-o", str(tmp_path / "m.safetensors")])
    assert exit_info.value.code != 0 and not (tmp_path / "m.safetensors").exists()


def test_a_colour_jpeg_of_a_resize_is_fitted_through_its_luma_and_named(tmp_path, capsys):
    """The commonest file of all: a photo resized by 3/4 and saved as a 4:2:0 JPEG."""
    photos = rgb_photos(3, (96, 128))
    fit(tmp_path, photos, [np.asarray(Image.fromarray(p).resize((96, 72), Image.LANCZOS)) for p in photos], jpeg_quality=90)
    text = printed(capsys)
    assert "linear, within JPEG q90 compression" in text and "Lanczos 3, antialiased" in text, text
    assert "the same kernel on each colour channel" in text and "resized by 3/4" in text


@pytest.mark.parametrize("make, library", [
    (lambda p: np.asarray(Image.fromarray(p).resize((p.shape[1] * 3 // 4, p.shape[0] * 3 // 4), Image.LANCZOS)), "pillow"),
    (lambda p: cv2.resize(p, (p.shape[1] * 2, p.shape[0] * 2), interpolation=cv2.INTER_CUBIC), "opencv"),
    (lambda p: imagemagick_resize(75)(p), "imagemagick"),
], ids=["Pillow LANCZOS 3/4", "OpenCV INTER_CUBIC x2", "ImageMagick 75%"])
def test_a_named_resize_comes_with_the_librarys_own_call_which_makes_the_tools_file(tmp_path, capsys, make, library):
    import json

    if library == "imagemagick" and imagemagick() is None:
        pytest.skip("ImageMagick is not installed (apt-get install imagemagick)")
    photos = gray_photos(3, (128, 128))
    model = fit(tmp_path, photos, [make(p) for p in photos])
    reproduce = json.loads(model.with_suffix(".json").read_text())["reproduce"]
    code, first = reproduce[library], next(iter(reproduce.values()))
    assert textwrap.indent(first.rstrip(), "    ") in printed(capsys)  # img2kernel fit prints the first
    unseen = gray_photos(4, (72, 100))[3]
    if library == "imagemagick":
        save(tmp_path / "in.png", unseen)
        subprocess.run(code.replace("convert", imagemagick(), 1), shell=True, check=True, cwd=tmp_path)
        ours = np.asarray(Image.open(tmp_path / "out.png").convert("L"))
    else:
        scope = {"src": unseen}
        exec(code, scope)
        ours = scope["out"]
    assert np.array_equal(ours, make(unseen))


def test_a_resize_then_a_turn_is_said_applied_and_its_call_turns_too(tmp_path, capsys):
    """A thumbnail turned upright (a camera's orientation): Pillow's 3/4 bicubic, then 90 degrees clockwise."""
    import json

    def make(p):
        return np.rot90(np.asarray(Image.fromarray(p).resize((p.shape[1] * 3 // 4, p.shape[0] * 3 // 4), Image.BICUBIC)), -1)

    photos = gray_photos(3, (96, 128))
    model = fit(tmp_path, photos, [make(p) for p in photos])
    text = printed(capsys)
    assert "linear:" in text and "Keys cubic a = -0.5" in text and "then resized by 3/4, then rotated 90 degrees clockwise" in text
    unseen = gray_photos(4, (72, 100))[3]
    assert main(["apply", str(model), str(save(tmp_path / "unseen.png", unseen)), str(tmp_path / "ours.png")]) == 0
    ours = np.asarray(Image.open(tmp_path / "ours.png"))
    assert ours.shape == make(unseen).shape and psnr(ours, make(unseen)) >= 50
    reproduce = json.loads(model.with_suffix(".json").read_text())["reproduce"]
    scope = {"src": unseen}
    exec(reproduce["pillow"], scope)
    assert "imagemagick" not in reproduce and np.array_equal(scope["out"], make(unseen))


def test_a_resize_of_a_padded_image_is_its_whole_image_prediction():
    """The model's one arithmetic seen two ways: ``predict`` maps the border by its rule, ``predict_valid``
    reads a halo already padded by the same rule."""
    from img2kernel import borders

    photo = gray_photos(1, (61, 83))[0].astype(np.float64)
    knots = np.linspace(-4, 4, 65)
    model = ResampleModel(knots, RESAMPLERS["Lanczos 3"](knots / (4 / 3)), knots, RESAMPLERS["Lanczos 3"](knots),
                          (0.75, 2.0), [0.5])
    for rule in ("reflect101", "replicate", "wrap"):
        padded = borders.pad(photo, model.halo, rule)
        np.testing.assert_allclose(model.predict_valid(padded), model.predict(photo, rule), atol=1e-9)
