"""Decoding to grayscale float32."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from img2kernel.sources.downloads import to_grayscale_float32


def test_gray_uint8_is_kept_exactly():
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = to_grayscale_float32(image)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, image)


def test_colour_uses_opencv_conversion():
    bgr = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_grayscale_float32(bgr), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    bgra = np.dstack([bgr, np.full((5, 6), 7, np.uint8)])
    np.testing.assert_array_equal(to_grayscale_float32(bgra), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))


def test_sixteen_bit_stays_exact_on_the_8_bit_scale():
    image = np.array([[0, 256, 65535]], dtype=np.uint16)
    out = to_grayscale_float32(image)
    np.testing.assert_array_equal(out, [[0.0, 1.0, 65535 / 256]])
    assert float(out[0, 2]) * 256 == 65535  # exact in float32


def test_unsupported_images_raise_value_error():
    with pytest.raises(ValueError, match="channel"):
        to_grayscale_float32(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="pixel type"):
        to_grayscale_float32(np.zeros((2, 2), np.int32))


def _png_bytes(array: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", array)
    assert ok
    return encoded.tobytes()


def test_a_16_bit_rgba_png_is_read_not_composited_to_white():
    from collections import Counter

    from img2kernel.sources.downloads import store_image

    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    bgra = np.dstack([bgr, np.full((20, 30), 30000, np.uint16)])  # half-transparent, 16-bit alpha
    conversions = Counter()
    gray = store_image(_png_bytes(bgra), "rgba16.png", 1, None, conversions)
    expected = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32) / 256
    np.testing.assert_array_equal(gray, expected)
    assert gray.std() > 10  # not a constant white image
    assert conversions == {"alpha channel dropped": 1, "colour converted to gray": 1, "16-bit divided by 256": 1}


def test_exif_orientation_is_applied_everywhere(tmp_path):
    from collections import Counter

    from PIL import Image

    from img2kernel.apply import read_for_model
    from img2kernel.sources.downloads import store_image
    from img2kernel.images import read_pixels
    from img2kernel.models import AffineKernel

    upright = np.zeros((30, 50), np.uint8)
    upright[:5, :] = 255  # a bright top band, as a viewer shows it
    stored = np.rot90(upright, 1)  # a camera held sideways stores it rotated; orientation 6 turns it back
    exif = Image.Exif()
    exif[274] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(tmp_path / "photo.png", exif=exif.tobytes())
    pixels, _, notes = read_pixels(tmp_path / "photo.png")
    np.testing.assert_array_equal(pixels, upright)
    assert notes == ["EXIF orientation applied"]
    conversions = Counter()
    np.testing.assert_array_equal(store_image((tmp_path / "photo.png").read_bytes(), "photo.png", 1, None, conversions), upright)
    assert conversions["EXIF orientation applied"] == 1
    model_input, _ = read_for_model(tmp_path / "photo.png", AffineKernel(np.ones((1, 1))), "8-bit scale", "gray")
    np.testing.assert_array_equal(model_input, upright)


def test_the_store_and_apply_read_alpha_the_same_way(tmp_path):
    from collections import Counter

    from img2kernel.apply import read_for_model
    from img2kernel.sources.downloads import store_image
    from img2kernel.models import AffineKernel

    rng = np.random.default_rng(1)
    bgra = rng.integers(0, 256, (16, 24, 4), dtype=np.uint8)
    (tmp_path / "a.png").write_bytes(_png_bytes(bgra))
    in_store = store_image((tmp_path / "a.png").read_bytes(), "a.png", 1, None, Counter())
    for_apply, _ = read_for_model(tmp_path / "a.png", AffineKernel(np.ones((1, 1))), "8-bit scale", "gray")
    np.testing.assert_array_equal(in_store, np.asarray(for_apply, np.float32))
    np.testing.assert_array_equal(in_store, cv2.cvtColor(bgra[..., :3], cv2.COLOR_BGR2GRAY).astype(np.float32))


def test_max_side_downscales_in_the_store_and_min_side_skips():
    from collections import Counter

    from img2kernel.sources.downloads import store_image

    image = np.random.default_rng(2).integers(0, 256, (100, 60), dtype=np.uint8)
    conversions = Counter()
    assert store_image(_png_bytes(image), "big.png", 1, 50, conversions).shape == (50, 30)
    assert conversions == {"downscaled to max_side 50": 1}
    with pytest.raises(ValueError, match="smaller than min_side 70"):
        store_image(_png_bytes(image), "small.png", 70, None, conversions)
    with pytest.raises(ValueError, match="could not decode"):
        store_image(b"not an image", "text.png", 1, None, conversions)


def test_one_or_two_images_are_split_by_disjoint_tiles(tmp_path):
    import json
    import tarfile

    from img2kernel.sources.downloads import build_inputs_store
    from img2kernel.store.shards import Store

    images = [np.random.default_rng(i).integers(0, 256, (41, 50), dtype=np.uint8) for i in range(2)]
    shard = tmp_path / "images" / "00000.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tar:
        for i, image in enumerate(images):
            payload = _png_bytes(image)
            info = tarfile.TarInfo(f"00000000{i}.jpg")
            info.size = len(payload)
            import io

            tar.addfile(info, io.BytesIO(payload))
    manifest = build_inputs_store(shard.parent, tmp_path / "store", val_fraction=0.15, test_fraction=0.15, split_seed=0)
    store = Store(tmp_path / "store")
    assert len(store) == 8 and manifest["split_by"].startswith("2 x 2 disjoint tiles")
    assert all(store.keys(split) for split in ("train", "val", "test"))  # every split has pixels
    tiles = [store.array(f"000000000_t{t}") for t in range(4)]
    top = np.hstack([tiles[0], tiles[1]])
    np.testing.assert_array_equal(np.vstack([top, np.hstack([tiles[2], tiles[3]])]), images[0])  # disjoint, complete
    assert json.loads((tmp_path / "store" / "manifest.json").read_text())["images"] == 8
