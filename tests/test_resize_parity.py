"""Block-wise resize (the per-block path every backend runs, without Prefect) against
scikit-image's whole-array resize: odd shapes, anisotropic factors, unaligned blocks, all dtypes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from reference import assert_matches_skimage, random_array, reference_shape

from bioimage_tasks.blockwise import BlockJob, process_batch
from bioimage_tasks.grid import BlockGrid
from bioimage_tasks.io import ArraySource
from bioimage_tasks.resampling import ResizedSource

CASES = [  # (input shape, factors, block shape in output space: none of them divides the shape)
    ((37, 41, 23), (2, 2, 2), (5, 7, 4)),
    ((37, 41, 23), (3, 2, 1), (8, 6, 9)),
    ((20, 30, 31), (1, 2, 2), (7, 4, 5)),
    ((257, 255), (2, 2), (33, 40)),
    ((64, 90), (3, 4), (9, 10)),
]


def blockwise_resize(
    x: np.ndarray, factors, order: int, anti_aliasing: bool, block_shape
) -> np.ndarray:
    """Resize `x` block by block through ResizedSource and the per-block writer."""
    source = ResizedSource(ArraySource(x), reference_shape(x.shape, factors), order, anti_aliasing)
    sink = ArraySource(np.zeros(source.shape, x.dtype))
    grid = BlockGrid(source.shape, block_shape)
    report = process_batch(BlockJob(source, sink, grid), range(grid.n_blocks))
    assert len(report.written) == grid.n_blocks
    return sink.array


@pytest.mark.parametrize("shape,factors,block_shape", CASES)
@pytest.mark.parametrize(
    "dtype", ["uint8", "uint16", "int16", "uint32", "uint64", "float32", "float64"]
)
@pytest.mark.parametrize("order,anti_aliasing", [(0, False), (1, False), (1, True), (3, True)])
def test_matches_skimage(rng, shape, factors, block_shape, dtype, order, anti_aliasing):
    x = random_array(rng, shape, dtype, labels_above_2_53=order == 0)
    got = blockwise_resize(x, factors, order, anti_aliasing, block_shape)
    assert_matches_skimage(got, x, factors, order, anti_aliasing)


@pytest.mark.parametrize("order", [2, 4, 5])
@pytest.mark.parametrize("anti_aliasing", [False, True])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_high_orders_match_skimage(rng, order, anti_aliasing, dtype):
    """Orders 2-5: the recursive spline pre-filter needs a wide halo and skimage clips to the
    whole input's range; both must hold on blocks far smaller than that halo."""
    x = random_array(rng, (41, 37, 29), dtype)
    got = blockwise_resize(x, (2, 3, 2), order, anti_aliasing, (9, 7, 8))
    assert_matches_skimage(got, x, (2, 3, 2), order, anti_aliasing)


@pytest.mark.parametrize("shape,factors,block_shape", CASES[:2] + CASES[3:4])
def test_order0_anti_aliasing_matches_skimage(rng, shape, factors, block_shape):
    """anti_aliasing with order 0 filters in the input dtype, as scikit-image does."""
    x = random_array(rng, shape, "uint8")
    got = blockwise_resize(x, factors, 0, True, block_shape)
    np.testing.assert_array_equal(got, _skimage(x, factors, 0, True).astype(np.uint8))


@pytest.mark.parametrize(
    "dtype,value", [("uint8", 7), ("uint8", 100), ("int16", -5), ("uint16", 300)]
)
@pytest.mark.parametrize("factors", [(3, 3, 3), (5, 2, 4)])
def test_order0_anti_aliasing_on_a_constant_image_keeps_its_value(dtype, value, factors):
    """scikit-image clips every order's result to the input's range: a constant image stays
    constant where the Gaussian in the input dtype rounds its value down."""
    x = np.full((19, 23, 17), value, dtype)
    got = blockwise_resize(x, factors, 0, True, (4, 3, 5))
    np.testing.assert_array_equal(got, _skimage(x, factors, 0, True).astype(dtype))
    assert np.all(got == value)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("anti_aliasing", [False, True])
def test_float_order1_is_bit_identical(rng, dtype, anti_aliasing):
    """Floats at order 1 equal scikit-image's values bit for bit, its clip to the input's range
    included (a convex combination can leave the range by one unit in the last place)."""
    x = random_array(rng, (37, 41, 23), dtype)
    got = blockwise_resize(x, (2, 3, 2), 1, anti_aliasing, (5, 7, 4))
    np.testing.assert_array_equal(got, _skimage(x, (2, 3, 2), 1, anti_aliasing).astype(dtype))


def test_uint64_labels_above_2_53_come_back_unchanged(rng):
    """Order 0 never goes through float64: ids above 2**53 survive bit for bit."""
    ids = np.array([2**53 + 1, 2**63 + 12345, 2**64 - 1, 2**60 + 3], dtype=np.uint64)
    x = ids[rng.integers(0, len(ids), size=(33, 27, 19))]
    got = blockwise_resize(x, (2, 3, 1), 0, False, (4, 4, 4))
    assert set(np.unique(got)) <= set(ids)
    assert_matches_skimage(got, x, (2, 3, 1), 0, False)


def test_bool_stays_bool(rng):
    x = random_array(rng, (31, 45), bool)
    got = blockwise_resize(x, (2, 3), 0, False, (5, 4))
    assert got.dtype == bool
    assert_matches_skimage(got, x, (2, 3), 0, False)


def test_float16_within_tolerance(rng):
    x = random_array(rng, (30, 31), "float16")
    got = blockwise_resize(x, (2, 2), 1, True, (7, 6))
    reference = _skimage(x, (2, 2), 1, True)
    np.testing.assert_allclose(got.astype(np.float64), reference, atol=1e-3 * float(np.ptp(x)))


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize(
    "order,anti_aliasing", [(0, False), (0, True), (1, False), (1, True), (3, True)]
)
def test_complex_resizes_each_part_as_skimage(rng, dtype, order, anti_aliasing):
    """The real and imaginary parts each as scikit-image resizes that part alone (its own range
    clips it): bit for bit up to order 1, within the contract above; and no part dropped."""
    real, imag = (random_array(rng, (37, 41, 23), "float64") for _ in range(2))
    x = (real + 1j * (imag + 500)).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        got = blockwise_resize(x, (2, 3, 2), order, anti_aliasing, (5, 7, 4))
    assert got.dtype == x.dtype
    for got_part, part in ((got.real, x.real), (got.imag, x.imag)):
        if order <= 1:
            expected = _skimage(part, (2, 3, 2), order, anti_aliasing).astype(part.dtype)
            np.testing.assert_array_equal(got_part, expected, strict=True)
        assert_matches_skimage(got_part, part, (2, 3, 2), order, anti_aliasing)


def test_factor_one_is_identity(rng):
    x = random_array(rng, (17, 19), "uint16")
    np.testing.assert_array_equal(blockwise_resize(x, (1, 1), 1, True, (5, 5)), x)


def _skimage(x, factors, order, anti_aliasing):
    from reference import skimage_downsample

    return skimage_downsample(x, factors, order, anti_aliasing)
