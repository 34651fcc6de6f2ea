"""References and comparisons shared by the pyramid tests: tensorstore's downsample of a whole
array per level, NaN-heavy float tiles, bit-for-bit array equality."""

from __future__ import annotations

import numpy as np
import tensorstore as ts


def tensorstore_levels(base: np.ndarray, cumulative, method: str) -> list[np.ndarray]:
    return [ts.downsample(ts.array(base), list(f), method).read().result() for f in cumulative]


def nan_floats(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """NaN, both zeros, both infinities and two numbers: windows whose median and mode depend on
    where NaN and each zero lie in them."""
    palette = np.array([np.nan, 0.0, -0.0, np.inf, -np.inf, 1.0, -2.0], dtype)
    return palette[rng.integers(0, len(palette), shape)]


def assert_same_bits(got: np.ndarray, expected: np.ndarray, message: str = "") -> None:
    assert got.dtype == expected.dtype and got.shape == expected.shape, message
    bits = f"u{got.dtype.itemsize}"
    np.testing.assert_array_equal(got.view(bits), expected.view(bits), err_msg=message, strict=True)
