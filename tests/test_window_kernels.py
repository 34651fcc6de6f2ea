"""The window downsampling kernel against tensorstore's `downsample` driver (the reference), on
whole arrays and block by block: odd shapes (partial edge windows), anisotropic factors, every
method, integer dtypes over their full range (uint64 ids above 2**53) and with few distinct values
(so mode ties happen). Every comparison is exact, float32 mean included."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorstore as ts

from bioimage_tasks.geometry import downscale_shape
from bioimage_tasks.kernels import window
from bioimage_tasks.kernels.sums import accumulator_dtype, whole_window_means
from bioimage_tasks.kernels.window import METHODS, _sort_network, window_reduce

SHAPES_3D = [(37, 41, 23), (33, 17, 9), (24, 18, 12)]  # the last one: whole windows only
FACTORS_3D = [(1, 2, 2), (3, 2, 1), (2, 2, 2), (4, 3, 2)]
CASES = [(s, f) for s in SHAPES_3D for f in FACTORS_3D] + [
    ((5, 7), (2, 2)),
    ((5, 7), (3, 4)),
    ((5, 7), (2, 8)),
]


def reference(x: np.ndarray, factors, method: str) -> np.ndarray:
    return ts.downsample(ts.array(x), list(factors), method).read().result()


def random_array(rng: np.random.Generator, shape, dtype, data: str) -> np.ndarray:
    """`wide`: the dtype's full range (floats: normal, both signs); `few`: four distinct values,
    extremes included (uint64: one id just above 2**53), so windows often tie."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind == "f":
        if data == "few":
            return rng.integers(-2, 2, shape).astype(dtype)
        return (rng.standard_normal(shape) * 1000).astype(dtype)
    info = np.iinfo(dtype)
    if data == "few":
        middle = 2**53 + 1 if dtype == np.uint64 else (int(info.min) + int(info.max)) // 2
        palette = np.array([info.min, info.max, info.max - 1, middle], dtype)
        return palette[rng.integers(0, len(palette), shape)]
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected, strict=True)


@pytest.mark.parametrize("shape,factors", CASES)
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "uint64", "int16", "float32"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("data", ["wide", "few"])
def test_matches_tensorstore(rng, shape, factors, dtype, method, data):
    x = random_array(rng, shape, dtype, data)
    got = window_reduce(x, factors, method)
    assert got.shape == downscale_shape(shape, factors)
    assert_same(got, reference(x, factors, method))


@pytest.mark.parametrize(
    "shape,factors",
    [((37, 41, 23), (2, 2, 2)), ((33, 17, 9), (4, 3, 2)), ((24, 18, 12), (2, 2, 2))],
)
@pytest.mark.parametrize("dtype", ["bool", "int8", "int32", "int64", "uint64", "float64"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("data", ["wide", "few"])
def test_other_dtypes_match_tensorstore(rng, shape, factors, dtype, method, data):
    x = random_array(rng, shape, dtype, data)
    assert_same(window_reduce(x, factors, method), reference(x, factors, method))


def blockwise_reduce(x: np.ndarray, factors, method: str, block_shape) -> np.ndarray:
    """Reduce window-aligned input regions (output block * factors, clipped to the array) one by
    one and paste the results: what a block-wise runner does."""
    out_shape = downscale_shape(x.shape, factors)
    out = np.zeros(out_shape, x.dtype)
    starts = [range(0, n, b) for n, b in zip(out_shape, block_shape)]
    for start in itertools.product(*starts):
        dst = tuple(slice(s, min(s + b, n)) for s, b, n in zip(start, block_shape, out_shape))
        src = tuple(
            slice(d.start * f, min(d.stop * f, n)) for d, f, n in zip(dst, factors, x.shape)
        )
        out[dst] = window_reduce(x[src], factors, method, x.shape)
    return out


@pytest.mark.parametrize(
    "shape,factors,block_shape",
    [
        *(((37, 41, 23), f, (4, 5, 3)) for f in FACTORS_3D),
        ((33, 17, 9), (2, 2, 2), (4, 5, 3)),
        ((24, 18, 12), (4, 3, 2), (2, 4, 5)),
        ((5, 7), (2, 3), (2, 1)),
    ],
)
@pytest.mark.parametrize("dtype", ["uint8", "uint64", "int16", "float32"])
@pytest.mark.parametrize("method", METHODS)
def test_blockwise_equals_whole(rng, shape, factors, block_shape, dtype, method):
    x = random_array(rng, shape, dtype, "few" if method == "mode" else "wide")
    whole = window_reduce(x, factors, method)
    assert_same(blockwise_reduce(x, factors, method, block_shape), whole)
    assert_same(whole, reference(x, factors, method))


def label_array(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Label-like data: blobs of 3 voxels per side from a palette with the dtype's extremes (uint64:
    ids above 2**53), a few noise voxels, so most windows hold one value and the rest mix few."""
    x = random_array(rng, tuple(-(-n // 3) for n in shape), dtype, "few")
    for axis in range(x.ndim):
        x = np.repeat(x, 3, axis=axis)
    x = x[tuple(slice(0, n) for n in shape)].copy()
    noise = rng.random(shape) < 0.02
    x[noise] = random_array(rng, shape, dtype, "few")[noise]
    return x


@pytest.mark.parametrize(
    "shape,factors",
    [
        ((24, 18, 12), (2, 2, 2)),
        ((37, 41, 23), (2, 2, 2)),
        ((33, 17, 9), (3, 2, 1)),
        ((24, 18, 12), (1, 2, 4)),
        ((5, 7), (2, 2)),
    ],
)
@pytest.mark.parametrize("dtype", ["bool", "uint8", "uint32", "uint64", "int16", "float32"])
@pytest.mark.parametrize("method", ["mode", "median"])
def test_labels_match_tensorstore(rng, shape, factors, dtype, method):
    # mostly single-valued windows: only the mixed ones are sorted (padded edge windows included)
    x = label_array(rng, shape, dtype)
    assert_same(window_reduce(x, factors, method), reference(x, factors, method))


@pytest.mark.parametrize(
    "shape,factors",
    [((9, 7, 12), (2, 3, 2)), ((5, 6), (3, 2)), ((4, 6, 10), (2, 2, 2)), ((3, 8), (1, 2))],
)
@pytest.mark.parametrize("dtype", ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32"])
@pytest.mark.parametrize("data", ["wide", "few"])
def test_mean_of_pairs_matches_tensorstore(rng, shape, factors, dtype, data):
    # factor 2 along an even last axis sums pairs first, with partial windows along other axes;
    # a strided last axis takes the generic path
    x = random_array(rng, shape[:-1] + (2 * shape[-1],), dtype, data)
    for block in (x[..., : shape[-1]], x[..., ::2]):
        assert_same(
            window_reduce(block, factors, "mean"),
            reference(np.ascontiguousarray(block), factors, "mean"),
        )


@pytest.mark.parametrize(
    "shape,factors",
    [((8, 6, 10), (2, 2, 2)), ((3, 8, 8, 8), (1, 4, 2, 2)), ((4, 12), (2, 4)), ((16,), (8,))],
)
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32"])
@pytest.mark.parametrize("data", ["wide", "few"])
def test_mean_of_whole_windows_matches_tensorstore(rng, shape, factors, dtype, data):
    # every window whole, of 2**k voxels: sums and rounding in one fused pass (an image block)
    x = random_array(rng, shape, dtype, data)
    assert whole_window_means(x, factors) is not None
    assert_same(window_reduce(x, factors, "mean"), reference(x, factors, "mean"))


@pytest.mark.parametrize("dtype", ["uint8", "uint32", "uint64", "float32"])
@pytest.mark.parametrize("method", METHODS)
def test_slabs_match_tensorstore(rng, monkeypatch, dtype, method):
    # tiny slabs: many of them, the last one with partial windows, some mixed, some not
    monkeypatch.setattr(window, "_SLAB_BYTES", 200)
    x = np.concatenate(
        [label_array(rng, (20, 9, 10), dtype), random_array(rng, (17, 9, 10), dtype, "wide")]
    )
    for factors in [(2, 2, 2), (3, 1, 2), (1, 3, 4)]:
        assert_same(window_reduce(x, factors, method), reference(x, factors, method))
    if dtype == "float32" and method in ("median", "mode"):
        x = np.concatenate(
            [
                nan_array(rng, (20, 9, 10), dtype, "sparse"),
                nan_array(rng, (17, 9, 10), dtype, "mixed"),
            ]
        )
        for factors in [(2, 2, 2), (3, 1, 2), (1, 3, 4)]:
            assert_same_bits(window_reduce(x, factors, method), reference(x, factors, method))


def nan_array(rng: np.random.Generator, shape, dtype, data: str) -> np.ndarray:
    """`mixed`: NaN, both zeros, both infinities and two numbers, so most windows mix them;
    `sparse`: mostly 1.0 with some NaN and zeros of both signs, so few windows are mixed."""
    if data == "mixed":
        palette = np.array([np.nan, 0.0, -0.0, np.inf, -np.inf, 1.0, -2.0], dtype)
        return palette[rng.integers(0, len(palette), shape)]
    palette = np.array([1.0, np.nan, 0.0, -0.0], dtype)
    return palette[rng.choice(len(palette), size=shape, p=[0.94, 0.02, 0.02, 0.02])]


def assert_same_bits(got: np.ndarray, expected: np.ndarray) -> None:
    """Equal dtype, shape and bits: NaN where tensorstore has NaN, the same sign of every zero."""
    assert got.dtype == expected.dtype and got.shape == expected.shape
    bits = f"u{got.dtype.itemsize}"
    np.testing.assert_array_equal(got.view(bits), expected.view(bits), strict=True)


NAN_CASES = [
    ((37, 41, 23), (2, 2, 2)),
    ((33, 17, 10), (3, 3, 3)),
    ((26, 19, 13), (4, 4, 4)),
    ((33, 17, 9), (4, 3, 2)),
    ((37, 41, 23), (1, 2, 3)),
    ((21, 22, 9), (2, 3, 1)),
    ((7, 9, 1), (2, 2, 2)),
    ((1, 7, 9), (3, 2, 2)),
    ((5, 7), (2, 2)),
    ((9, 7), (4, 4)),
    ((79,), (33,)),
]


@pytest.mark.parametrize("shape,factors", NAN_CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("method", ["median", "mode"])
@pytest.mark.parametrize("data", ["mixed", "sparse"])
def test_nan_and_signed_zeros_match_tensorstore(rng, shape, factors, dtype, method, data):
    # factor 4**3 windows (64 voxels) take the fallback sort, (4, 4) and (33,) windows tensorstore's
    # introsort; a last axis of extent 1 changes tensorstore's order of a window's voxels
    x = nan_array(rng, shape, dtype, data)
    assert_same_bits(window_reduce(x, factors, method), reference(x, factors, method))


@pytest.mark.parametrize(
    "shape,factors,block_shape",
    [
        ((37, 41, 23), (2, 2, 2), (4, 5, 3)),
        ((33, 17, 9), (4, 3, 2), (2, 3, 1)),
        ((9, 7), (2, 2), (3, 1)),
        ((9, 7, 5), (3, 1, 2), (2, 2, 1)),
    ],
)
@pytest.mark.parametrize("method", ["median", "mode"])
def test_nan_blocks_equal_whole(rng, shape, factors, block_shape, method):
    # blocks of one output voxel along the last axis hold only the last axis' partial window
    x = nan_array(rng, shape, "float32", "mixed")
    expected = reference(x, factors, method)
    assert_same_bits(blockwise_reduce(x, factors, method, block_shape), expected)


def test_nan_windows_of_a_block_follow_the_whole_array():
    # tensorstore takes a window's voxels with the innermost axis longer than 1 slowest: in the
    # (2, 2, 3) array the last one, in the (2, 2, 1) block alone the middle one. Window
    # [[2, 1], [NaN, 3]] so taken: [2, 1, NaN, 3] (median NaN) or [2, NaN, 1, 3] (median 2)
    x = np.ones((2, 2, 3), np.float32)
    x[:, :, 2] = [[2, 1], [np.nan, 3]]
    block = x[:, :, 2:]
    expected = reference(x, (2, 2, 2), "median")[:, :, 1:]
    assert np.isnan(expected[0, 0, 0]) and reference(block, (2, 2, 2), "median")[0, 0, 0] == 2
    assert_same_bits(window_reduce(block, (2, 2, 2), "median", x.shape), expected)


def test_nan_semantics_pinned():
    """What tensorstore answers for windows with NaN or both zeros (libstdc++'s select and sort
    with `<`): positions decide, NaN is neither the largest nor the smallest value (median of
    [2, 1, 3, NaN]: NaN; of [NaN, 2, NaN, 1]: 1), and which zero is picked too."""
    nan = np.nan
    cases = [
        ([nan, 1, 1, nan], (2,), "median", [nan, 1]),
        ([nan, 1, 2, nan], (2,), "mode", [nan, 2]),
        ([2, 1, 3, nan, nan, 2, nan, 1, nan, nan, nan, 1], (4,), "median", [nan, 1, 1]),
        ([-0.0, 0.0, 0.0, -0.0, 0.0, -0.0, -0.0], (2,), "median", [-0.0, 0.0, 0.0, -0.0]),
        ([0.0, -0.0, -0.0, 0.0, 1.0, -0.0, 0.0, -0.0], (4,), "mode", [0.0, -0.0]),
    ]
    for values, factors, method, expected in cases:
        x, expected = np.array(values, np.float32), np.array(expected, np.float32)
        assert_same_bits(reference(x, factors, method), expected)
        assert_same_bits(window_reduce(x, factors, method), expected)


@pytest.mark.parametrize("dtype", [">u2", ">i8", ">f4", ">f8", "<u4"])
@pytest.mark.parametrize("method", METHODS)
def test_either_byte_order_matches_tensorstore(rng, dtype, method):
    # big-endian arrays (zarr v2 written by other tools) reduce like their native-order values
    # and come back in their own dtype, byte order included
    native_dtype = np.dtype(dtype).newbyteorder("=")
    if native_dtype.kind == "f" and method != "mean":
        native = nan_array(rng, (21, 17, 9), native_dtype, "mixed")
    else:
        native = random_array(rng, (21, 17, 9), native_dtype, "few" if method == "mode" else "wide")
    x = native.astype(dtype)
    for factors in [(2, 2, 2), (3, 4, 1)]:
        got = window_reduce(x, factors, method)
        assert got.dtype == np.dtype(dtype)
        assert_same_bits(got.astype(native_dtype), reference(native, factors, method))


@pytest.mark.parametrize("method", METHODS)
def test_unit_factors_return_the_array(method):
    # tensorstore leaves the values as they are: no float rounding of -0.0, NaN not skipped
    x = np.array([-0.0, np.nan, 1.0, -0.0], np.float32)
    for block, factors in [(x, (1,)), (x.reshape(2, 2), (1, 1)), (x[1], ())]:
        got = window_reduce(block, factors, method)
        assert got.shape == block.shape
        assert_same(got.view(np.uint32), reference(block, factors, method).view(np.uint32))


# Hand-made cases pinning down the semantics (each also checked against tensorstore).
SEMANTICS = [
    # integer mean rounds to nearest, ties to even, negative values included
    ([-3, -2, -1, 0, 1, 2, -6, -5, 5, 6], "int16", (2,), "mean", [-2, 0, 2, -6, 6]),
    ([0, 0, -1, 0, -1, -1], "int16", (3,), "mean", [0, -1]),
    # uint64 / int64 mean is exact at the ends of the range (no overflow, no float64)
    (
        [2**60 + 1, 2**60 + 2, 2**64 - 1, 2**64 - 1, 2**64 - 1, 2**64 - 3],
        "uint64",
        (2,),
        "mean",
        [2**60 + 2, 2**64 - 1, 2**64 - 2],
    ),
    ([2**63 - 1, 2**63 - 2, -(2**63), -(2**63) + 1], "int64", (2,), "mean", [2**63 - 2, -(2**63)]),
    # bool mean: half-true windows round to False
    (
        [True, False, True, True, True, False, False],
        "bool",
        (2,),
        "mean",
        [False, True, False, False],
    ),
    # a partial edge window reduces only its in-bounds voxels
    ([1, 2, 3, 4, 5, 6, 7], "uint8", (4,), "mean", [2, 6]),
    ([1, 2, 3, 4, 5], "uint8", (3,), "mean", [2, 4]),
    ([1, 2, 3, 4, 5], "uint8", (3,), "median", [2, 4]),
    ([9, 8, 7, 6, 5], "uint8", (3,), "stride", [9, 6]),
    ([9, 8, 7, 6, 5], "uint8", (3,), "min", [7, 5]),
    ([9, 8, 7, 6, 5], "uint8", (3,), "max", [9, 6]),
    # median: the lower middle value of an even count
    ([4, 3, 2, 1, 9, 9, 1, 1], "uint8", (4,), "median", [2, 1]),
    # mode: most frequent, the lowest value on a tie (signed: the most negative)
    ([5, 5, 1, 1, 3, 2, 1, 0, 2, 2, 2, 9], "uint8", (4,), "mode", [1, 0, 2]),
    ([5, 5, -1, -1, 7, 8, 8], "int16", (4,), "mode", [-1, 8]),
    (
        [2**64 - 1, 2**53 + 1, 2**53 + 1, 2**64 - 1, 2**53 + 3],
        "uint64",
        (4,),
        "mode",
        [2**53 + 1, 2**53 + 3],
    ),
    # float32 mean accumulates in float32, in C order within the window, then divides
    ([1e8, 1, -1e8, 1, 1, 1e8, 1, -1e8], "float32", (4,), "mean", [0.25, 0.0]),
    # float min/max skip NaN (an all-NaN window gives +-inf)
    ([np.nan, 1, np.nan, np.nan], "float32", (2,), "min", [1, np.inf]),
    ([np.nan, 1, np.nan, np.nan], "float32", (2,), "max", [1, -np.inf]),
]


@pytest.mark.parametrize("values,dtype,factors,method,expected", SEMANTICS)
def test_semantics(values, dtype, factors, method, expected):
    x = np.array(values, dtype)
    expected = np.array(expected, dtype)
    assert_same(reference(x, factors, method), expected)
    assert_same(window_reduce(x, factors, method), expected)


def test_float32_mean_2d_accumulation_order():
    x = np.array([[1, 1e8], [1, -1e8]], np.float32)  # C order: 1 + 1e8 + 1 - 1e8 == 0 in float32
    assert_same(window_reduce(x, (2, 2), "mean"), reference(x, (2, 2), "mean"))
    assert window_reduce(x, (2, 2), "mean")[0, 0] == 0


def test_large_windows_use_the_fallback_sort(rng):
    x = random_array(rng, (13, 11, 9), "uint16", "few")
    for method in ("mode", "median"):
        assert_same(window_reduce(x, (4, 3, 3), method), reference(x, (4, 3, 3), method))


def test_input_is_not_modified(rng):
    # with factors (2, 1, 1) and one window along axis 0, the windows are a view of the input
    x = random_array(rng, (2, 6, 8), "uint32", "wide")
    before = x.copy()
    for method in METHODS:
        window_reduce(x, (2, 1, 1), method)
        window_reduce(x, (2, 2, 2), method)
    assert_same(x, before)


def test_accumulators_are_the_narrowest_that_hold_the_sums():
    assert accumulator_dtype(np.dtype("uint8"), 257) == np.uint16  # 257 * 255 = 65535
    assert accumulator_dtype(np.dtype("uint8"), 258) == np.uint32
    assert accumulator_dtype(np.dtype("int8"), 255) == np.int16  # 255 * 128 = 32640
    assert accumulator_dtype(np.dtype("int8"), 256) == np.int32
    assert accumulator_dtype(np.dtype("uint16"), 4096) == np.uint32
    assert accumulator_dtype(np.dtype("uint32"), 2) == np.int64
    assert accumulator_dtype(np.dtype("bool"), 257) == np.uint16


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16"])
@pytest.mark.parametrize("size", [257, 258])
def test_mean_of_windows_at_the_accumulators_limit(dtype, size):
    """One window of 257 or 258 extreme voxels (the uint8 sum of 257 fills uint16 exactly), along
    the last axis and, Fortran-ordered, along the first."""
    info = np.iinfo(dtype)
    for fill in (info.max, info.min):
        x = np.full((3, 2 * size + 1), fill, dtype)
        assert_same(window_reduce(x, (2, size), "mean"), reference(x, (2, size), "mean"))
        column = np.asfortranarray(x.T)
        expected = reference(x.T.copy(), (size, 2), "mean")
        assert_same(window_reduce(column, (size, 2), "mean"), expected)


@pytest.mark.parametrize("size", range(1, 40))
def test_sort_network(rng, size):
    columns = rng.integers(0, 4, (size, 64)).astype(np.int16)
    rows = list(columns.copy())
    _sort_network(rows)
    assert_same(np.stack(rows), np.sort(columns, axis=0))


def test_rejects_bad_arguments():
    x = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError, match="method"):
        window_reduce(x, (2, 2), "average")
    with pytest.raises(ValueError, match="factors"):
        window_reduce(x, (2,), "mean")
    with pytest.raises(ValueError, match="factors"):
        window_reduce(x, (0, 2), "mean")
    with pytest.raises(TypeError, match="dtype"):
        window_reduce(x.astype(np.float16), (2, 2), "mean")
