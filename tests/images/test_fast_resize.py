"""The sparse-product resize against ``skimage.transform.resize`` (the paper's call), down- and upsampling."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.transform import resize as skimage_resize

from cxrgen.images import fast_resize


@pytest.mark.parametrize(
    ("shape", "size"), [((390, 320), 224), ((1024, 1024), 224), ((48, 40), 64), ((100, 77), 224), ((3, 500), 16)]
)
def test_resize_equals_skimage(shape: tuple[int, int], size: int) -> None:
    image = np.random.default_rng(sum(shape)).random(shape, dtype=np.float32)
    expected = skimage_resize(image, (size, size), order=1, anti_aliasing=True, mode="constant", cval=0)
    out = fast_resize.resize(image, size)
    assert out.dtype == np.float32 and out.shape == (size, size)
    assert np.abs(out - expected).max() < 1e-6


def test_resize_clips_to_the_input_range_like_skimage() -> None:
    image = np.full((20, 30), 0.5, np.float32)
    image[5:9, 7:20] = 0.9
    expected = skimage_resize(image, (50, 50), order=1, anti_aliasing=True, mode="constant", cval=0)
    np.testing.assert_allclose(fast_resize.resize(image, 50), expected, atol=1e-6)


def test_operator_rows_sum_to_one_inside_the_image() -> None:
    matrix = fast_resize.axis_operator(2828, 224)
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    # Downsampling: every output samples inside; only the Gaussian's zero padding at the borders loses weight.
    assert np.allclose(sums[10:-10], 1.0, atol=1e-6) and (sums <= 1 + 1e-6).all()
    assert matrix.shape == (224, 2828) and matrix.nnz < 224 * 60
