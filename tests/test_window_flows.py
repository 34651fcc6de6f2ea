"""Window methods through the flow, on every input kind and backend path that matters: block-wise
output equals tensorstore's `downsample` driver read whole."""

from __future__ import annotations

import numpy as np
import pytest
import tensorstore as ts
from helpers import zarr_input
from reference import random_array

from bioimage_tasks.errors import ParameterError
from flows import downsample_flow

pytestmark = pytest.mark.usefixtures("prefect_server")


def tensorstore_downsample(x: np.ndarray, factors, method: str) -> np.ndarray:
    return ts.downsample(ts.array(x), list(factors), method).read().result()


@pytest.mark.parametrize("method", ["mean", "mode", "min", "max", "median", "stride"])
@pytest.mark.parametrize(
    "dtype,factors", [("uint64", (2, 2, 2)), ("uint8", (3, 2, 1)), ("float32", (1, 2, 3))]
)
def test_window_methods_match_tensorstore(tmp_path, rng, method, dtype, factors):
    x = random_array(rng, (37, 41, 23), dtype)
    if dtype == "uint64":  # label ids above 2**53, few of them so modes and ties happen
        x = (2**60 + rng.integers(0, 4, x.shape)).astype(np.uint64)
    zarr_input(tmp_path, x, (16, 16, 16))
    result = downsample_flow(
        f"{tmp_path}/in.zarr/raw",
        factors,
        f"{tmp_path}/out.zarr/s1",
        method=method,
        block_shape=(4, 6, 5),
        num_workers=2,
    )
    np.testing.assert_array_equal(result[:], tensorstore_downsample(x, factors, method))


@pytest.mark.parametrize("method", ["median", "mode"])
@pytest.mark.parametrize(
    "dtype,factors", [("float32", (2, 2, 2)), ("float64", (4, 3, 2)), ("float32", (3, 4, 4))]
)
def test_nan_median_and_mode_match_tensorstore_bit_for_bit(tmp_path, rng, method, dtype, factors):
    # windows with NaN and zeros of both signs, whose result depends on where they lie
    palette = np.array([np.nan, 0.0, -0.0, np.inf, -np.inf, 1.0, -2.0], dtype)
    x = palette[rng.integers(0, len(palette), (37, 41, 23))]
    zarr_input(tmp_path, x, (16, 16, 16))
    result = downsample_flow(
        f"{tmp_path}/in.zarr/raw",
        factors,
        f"{tmp_path}/out.zarr/s1",
        method=method,
        block_shape=(4, 6, 5),
        num_workers=2,
    )
    bits = f"u{x.dtype.itemsize}"
    expected = tensorstore_downsample(x, factors, method)
    np.testing.assert_array_equal(result[:].view(bits), expected.view(bits), strict=True)


@pytest.mark.parametrize("dtype", [">u2", ">f4"])
def test_big_endian_zarr_v2_input_matches_tensorstore(tmp_path, rng, dtype):
    # zarr v2 written by other tools is often big-endian: every window method takes it, and the
    # output keeps the input's dtype, byte order included (as method="resize" always did)
    native = random_array(rng, (37, 41, 23), np.dtype(dtype).newbyteorder("="))
    if native.dtype.kind == "f":
        native[rng.random(native.shape) < 0.05] = np.nan
    else:
        native //= 8192  # few values: modes and ties
    zarr_input(tmp_path, native, (16, 16, 16), dtype=dtype, zarr_format=2)
    bits = f"u{native.dtype.itemsize}"
    for method in ("mean", "mode", "min", "max", "median", "stride"):
        result = downsample_flow(
            f"{tmp_path}/in.zarr/raw",
            (2, 3, 2),
            f"{tmp_path}/out.zarr/{method}",
            method=method,
            block_shape=(4, 6, 5),
            num_workers=2,
        )
        assert result.dtype == np.dtype(dtype)
        got = result[:].astype(native.dtype)
        expected = tensorstore_downsample(native, (2, 3, 2), method)
        np.testing.assert_array_equal(got.view(bits), expected.view(bits), err_msg=method)


def test_window_method_on_numpy_and_unsupported_dtype(rng):
    labels = (2**55 + rng.integers(0, 3, (20, 21, 22))).astype(np.uint64)
    full = downsample_flow(labels, 2, method="mode", block_shape=(3, 4, 5))
    np.testing.assert_array_equal(full, tensorstore_downsample(labels, (2, 2, 2), "mode"))
    pattern = r"input has dtype float16: method='mean' supports \[.*'uint16'"
    with pytest.raises(ParameterError, match=pattern):
        downsample_flow(np.zeros((4, 4), np.float16), 2, method="mean")
