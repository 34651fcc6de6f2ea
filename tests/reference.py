"""Independent references and comparisons: everything here calls scikit-image, never our code."""

from __future__ import annotations

import math

import numpy as np
from skimage.transform import resize


def reference_shape(shape, factors):
    """Ceil-mode downscaled shape, computed here independently of bioimage_tasks."""
    return tuple(math.ceil(s / f) for s, f in zip(shape, factors))


def skimage_downsample(x: np.ndarray, factors, order: int, anti_aliasing: bool) -> np.ndarray:
    """scikit-image's whole-array resize, the contract's reference (float result)."""
    return resize(
        x,
        reference_shape(x.shape, factors),
        order=order,
        anti_aliasing=anti_aliasing,
        preserve_range=True,
        mode="reflect",
    )


def skimage_pick_indices(shape, factors) -> np.ndarray:
    """For order 0: the flat input index each output voxel takes, found by resizing an array of
    indices (exact in float64 below 2**53) with scikit-image."""
    index = np.arange(math.prod(shape), dtype=np.float64).reshape(shape)
    picked = resize(
        index,
        reference_shape(shape, factors),
        order=0,
        anti_aliasing=False,
        preserve_range=True,
        mode="reflect",
    )
    return picked.astype(np.int64)


def random_array(
    rng: np.random.Generator, shape, dtype, labels_above_2_53: bool = True
) -> np.ndarray:
    """Random values over the dtype's range; uint64 above 2**53 (label ids a float64 path would
    corrupt) unless `labels_above_2_53` is False: then below 2**40, because interpolation runs in
    float64 (in scikit-image too) and the recursive spline pre-filter of orders >= 2 agrees with
    the whole-array one to ~1e-15 relative, i.e. to whole units only while values stay below
    ~2**48."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) > 0.5
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dtype)
    if dtype == np.uint64 and labels_above_2_53:
        return rng.integers(2**53, 2**64 - 1, size=shape, dtype=np.uint64, endpoint=True)
    if dtype == np.uint64:
        return rng.integers(0, 2**40, size=shape, dtype=np.uint64)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def assert_matches_skimage(
    got: np.ndarray, x: np.ndarray, factors, order: int, anti_aliasing: bool
) -> None:
    """The contract: order 0 exact; floats within 1e-4 (order <= 1) or 1e-3 of the value range;
    integers equal to clip(rint(reference)) in >= 99.99 % of voxels and never off by more than 1."""
    assert got.dtype == x.dtype
    assert got.shape == reference_shape(x.shape, factors)
    if order == 0 and not anti_aliasing:
        expected = x.ravel()[skimage_pick_indices(x.shape, factors)]
        np.testing.assert_array_equal(got, expected)
        if x.dtype != np.uint64:  # scikit-image's own call is lossy above 2**53
            np.testing.assert_array_equal(
                got, skimage_downsample(x, factors, 0, False).astype(x.dtype)
            )
        return
    reference = skimage_downsample(x, factors, order, anti_aliasing)
    if x.dtype.kind == "f":
        tolerance = (1e-4 if order <= 1 else 1e-3) * float(np.ptp(x))
        np.testing.assert_allclose(got.astype(np.float64), reference, rtol=0, atol=tolerance)
        return
    info = np.iinfo(x.dtype)
    expected = np.clip(np.rint(reference), info.min, info.max)
    difference = np.abs(got.astype(np.float64) - expected)
    assert difference.max() <= 1, f"max difference {difference.max()}"
    assert np.mean(difference > 0) <= 1e-4, f"{np.mean(difference > 0):.2e} of voxels differ"
