"""The one image reader refuses, before decoding, what would take memory far beyond its file."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from PIL import Image

from img2kernel.bench.memory import bomb_png
from img2kernel.images import MAX_PIXELS_VARIABLE, ImageReadError, image_header, read_pixels


def lying_npy(path) -> None:
    """An 80-byte .npy whose header claims a 100000 x 100000 x 1 float64 array (74.5 GiB)."""
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000, 100000, 1), }"
    header += " " * (118 - len(header)) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())


def test_a_decompression_bomb_is_refused_from_its_header_naming_the_file(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb_png(bomb)
    started = time.perf_counter()
    for read in (image_header, read_pixels):
        with pytest.raises(ImageReadError, match=r"bomb\.png: its header claims 32000x32000 pixels \(1,024 megapixels\)"):
            read(bomb)
    assert time.perf_counter() - started < 3  # nothing was decoded


def test_the_pixel_limit_is_one_setting_for_every_reader(tmp_path, monkeypatch):
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(small)
    assert image_header(small).width == 50 and read_pixels(small)[0].shape == (40, 50)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1999")
    for read in (image_header, read_pixels):
        with pytest.raises(ImageReadError, match=f"50x40 pixels.*set {MAX_PIXELS_VARIABLE}"):
            read(small)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "lots")
    with pytest.raises(ImageReadError, match="a positive integer"):
        read_pixels(small)


def test_a_npy_header_that_claims_more_than_the_file_holds_is_refused(tmp_path):
    fake = tmp_path / "fake.npy"
    lying_npy(fake)
    assert fake.stat().st_size < 200
    with pytest.raises(ImageReadError, match=r"fake\.npy: its \.npy header claims a 100000x100000x1 float64 array \(74\.5 GiB\)"):
        read_pixels(fake)
    with pytest.raises(ImageReadError, match=r"fake\.npy: not a readable \.npy array"):
        image_header(fake)


def test_fit_apply_and_the_config_check_refuse_the_bomb_before_any_work(tmp_path, capsys):
    from img2kernel.cli.main import main
    from img2kernel.models import AffineKernel
    from img2kernel.pipeline.config import ConfigError, check_filters

    bomb = tmp_path / "after" / "a.png"
    bomb.parent.mkdir()
    bomb_png(bomb)
    (tmp_path / "before").mkdir()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "before" / "a.png")
    with pytest.raises(ConfigError, match=r"field 'outputs'.*a\.png: its header claims 32000x32000 pixels"):
        check_filters({"filters": [{"name": "mine", "kind": "pairs", "inputs": str(tmp_path / "before"),
                                    "outputs": str(tmp_path / "after")}]}, "config/filters.yaml")
    with pytest.raises(SystemExit) as exit_:
        main(["fit", str(tmp_path / "before" / "a.png"), str(bomb), "-o", str(tmp_path / "m.safetensors")])
    assert exit_.value.code == 2 and "a.png: its header claims 32000x32000" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()
    AffineKernel(np.ones((1, 1, 3, 3)) / 9).save(tmp_path / "box.safetensors", {"border": "reflect101"})
    fake = tmp_path / "fake.npy"
    lying_npy(fake)
    for source in (bomb, fake):
        with pytest.raises(SystemExit) as exit_:
            main(["apply", str(tmp_path / "box.safetensors"), str(source), str(tmp_path / "out.npy")])
        assert exit_.value.code == 2 and source.name in capsys.readouterr().err
    assert not (tmp_path / "out.npy").exists()


def test_a_cmyk_file_and_an_animation_say_what_was_converted(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "print.jpg", quality=95)
    pixels, storage, notes = read_pixels(tmp_path / "print.jpg")
    assert pixels.shape == (24, 32, 3) and storage == "uint8" and "CMYK converted to RGB" in notes
    frames = [Image.fromarray(np.full((16, 16), v, np.uint8)) for v in (10, 200, 90)]
    frames[0].save(tmp_path / "moving.png", save_all=True, append_images=frames[1:])
    pixels, _, notes = read_pixels(tmp_path / "moving.png")
    assert "first of 3 frames used" in notes and int(pixels[0, 0]) == 10
