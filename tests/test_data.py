"""Decoding to grayscale float32."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from img2kernel.data import to_grayscale_float32


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
