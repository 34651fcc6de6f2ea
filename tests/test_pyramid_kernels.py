"""The pyramid kernels on their own: every level of pyramid_levels (and of the cubic fast paths and
mode kernels) equals tensorstore's downsample of the tile by the level's cumulative factor, for
every window method and dtype, NaN tiles, big-endian tiles and the dtype extremes."""

from __future__ import annotations

import numpy as np
import pytest
from pyramid_references import assert_same_bits, nan_floats, tensorstore_levels

from bioimage_tasks.kernels.cube_modes import first_two_modes
from bioimage_tasks.kernels.pyramid import cumulative_products, pyramid_levels


def test_kernel_levels_match_tensorstore(rng):
    """pyramid_levels on random tiles, factors, dtypes and methods (uint64 ids above 2**53)."""
    for _ in range(150):
        ndim = int(rng.integers(1, 4))
        factors = [
            tuple(int(f) for f in rng.integers(1, 4, ndim)) for _ in range(int(rng.integers(1, 4)))
        ]
        shape = tuple(int(n) for n in rng.integers(1, 26, ndim))
        dtype = str(rng.choice(["bool", "uint8", "int16", "uint32", "int64", "uint64", "float32"]))
        method = str(rng.choice(["mean", "mode", "median", "min", "max", "stride"]))
        spread = 3 if rng.random() < 0.5 else 200  # few labels (uniform windows) or many
        if dtype == "bool":
            tile = rng.random(shape) < 0.5
        elif dtype == "uint64":
            tile = (2**60 + rng.integers(0, spread, shape)).astype(np.uint64)
        else:
            tile = (
                rng.integers(0, spread, shape) - (spread // 2 if dtype.startswith("int") else 0)
            ).astype(dtype)
        levels = pyramid_levels(tile, factors, method)
        for level, expected in zip(
            levels, tensorstore_levels(tile, cumulative_products(factors), method)
        ):
            assert level.dtype == expected.dtype
            np.testing.assert_array_equal(
                level, expected, err_msg=f"{dtype} {method} {shape} {factors}"
            )


def test_kernel_levels_of_nan_tiles_match_tensorstore(rng):
    """Float median and mode levels of tiles cut out of a larger array (the array's shape decides
    tensorstore's order of a window's voxels): NaN and signed zeros bit for bit."""
    for _ in range(40):
        ndim = int(rng.integers(1, 4))
        factors = [
            tuple(int(f) for f in rng.integers(1, 4, ndim)) for _ in range(int(rng.integers(1, 4)))
        ]
        cumulative = cumulative_products(factors)
        shape = tuple(int(n) for n in rng.integers(1, 30, ndim))
        base = nan_floats(rng, shape, str(rng.choice(["float32", "float64"])))
        method = str(rng.choice(["mode", "median"]))
        starts = [c * int(rng.integers(0, -(-n // c))) for n, c in zip(shape, cumulative[-1])]
        tile = tuple(
            slice(s, min(n, s + c * int(rng.integers(1, 3))))
            for s, n, c in zip(starts, shape, cumulative[-1])
        )
        levels = pyramid_levels(base[tile], factors, method, shape)
        expected_levels = tensorstore_levels(base, cumulative, method)
        for level, f, expected in zip(levels, cumulative, expected_levels):
            region = tuple(slice(t.start // c, -(-t.stop // c)) for t, c in zip(tile, f))
            assert_same_bits(level, expected[region], f"{method} {shape} {factors} {tile}")


@pytest.mark.parametrize("dtype", [">u2", ">i4", ">u8", ">f4"])
@pytest.mark.parametrize("method", ["mean", "mode", "median", "min", "max", "stride"])
def test_kernel_levels_of_big_endian_tiles(rng, dtype, method):
    """Big-endian tiles (zarr v2 of other tools) through every kernel path, the compiled window
    sums and histograms included: levels of their native values, in the tile's own dtype."""
    native_dtype = np.dtype(dtype).newbyteorder("=")
    factors = [(2, 2, 2), (1, 2, 3)]
    if native_dtype.kind == "f":
        tile = nan_floats(rng, (13, 17, 11), native_dtype.name)
    else:
        tile = blocky_labels(rng, (13, 17, 11), native_dtype.name)
    levels = pyramid_levels(tile.astype(dtype), factors, method)
    expected_levels = tensorstore_levels(tile, cumulative_products(factors), method)
    for level, expected in zip(levels, expected_levels):
        assert level.dtype == np.dtype(dtype)
        if method == "mean" and native_dtype.kind == "f":  # NaN's sign after inf - inf: numpy's
            np.testing.assert_array_equal(level.astype(native_dtype), expected, strict=True)
        else:
            assert_same_bits(level.astype(native_dtype), expected, f"{dtype} {method}")


def blocky_labels(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Labels constant over boxes of random size at a random offset (so windows at every level
    are uniform, mixed, or mixed of uniform children), with some voxels of noise."""
    cell = tuple(int(c) for c in rng.integers(1, 7, len(shape)))
    labels = rng.integers(
        0, int(rng.choice([2, 5, 1000])), tuple(-(-n // c) + 1 for n, c in zip(shape, cell))
    )
    for axis, size in enumerate(cell):
        labels = np.repeat(labels, size, axis=axis)
    labels = labels[tuple(slice(int(rng.integers(0, c)), None) for c in cell)][
        tuple(slice(0, n) for n in shape)
    ]
    labels = np.where(
        rng.random(shape) < rng.choice([0, 0.01, 0.2]), rng.integers(0, 1000, shape), labels
    )
    if dtype == "uint64":
        return (2**60 + labels).astype(np.uint64)
    return (labels % 2).astype(bool) if dtype == "bool" else labels.astype(dtype)


def test_kernel_histograms_match_tensorstore_on_blocky_labels(rng):
    """mode and median, whose windows' histograms carry nothing for uniform windows: boxes of
    labels give uniform windows, mixed ones and mixed ones of uniform children at every level,
    cut by the tile's edge (up to 4-D, uint64 ids above 2**60)."""
    for _ in range(150):
        ndim = int(rng.integers(1, 5))
        factors = [
            tuple(int(f) for f in rng.integers(1, 4, ndim)) for _ in range(int(rng.integers(1, 5)))
        ]
        shape = tuple(int(n) for n in rng.integers(1, 40 if ndim < 4 else 12, ndim))
        dtype = str(rng.choice(["bool", "uint8", "int16", "uint32", "uint64"]))
        method = str(rng.choice(["mode", "median"]))
        tile = blocky_labels(rng, shape, dtype)
        levels = pyramid_levels(tile, factors, method)
        for level, expected in zip(
            levels, tensorstore_levels(tile, cumulative_products(factors), method)
        ):
            np.testing.assert_array_equal(
                level, expected, err_msg=f"{dtype} {method} {shape} {factors}"
            )


def voronoi_tile(
    rng: np.random.Generator, shape: tuple[int, ...], dtype: str, noise: float
) -> np.ndarray:
    """Labels of the nearest of a few random seeds (Voronoi cells: windows of one, two, three or
    more values), ids drawn over the dtype's whole range (extremes, uint64 above 2**53), a share
    `noise` of voxels replaced by other ids."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        palette = np.array([False, True])
    else:
        info = np.iinfo(dtype)
        extremes = [info.min, info.max, info.max - 1] + ([2**53 + 1] if dtype == np.uint64 else [])
        drawn = rng.integers(info.min, info.max, 12, dtype, endpoint=True)
        palette = np.concatenate([np.array(extremes, dtype), drawn])
    grid = np.indices(shape).reshape(len(shape), -1).T
    seeds = rng.random((12, len(shape))) * np.array(shape)
    nearest = ((grid[:, None, :] - seeds[None]) ** 2).sum(axis=2).argmin(axis=1).reshape(shape)
    tile = palette[nearest % len(palette)]
    flip = rng.random(shape) < noise
    tile[flip] = palette[rng.integers(0, len(palette), int(flip.sum()))]
    return tile


CUBIC_SHAPES = [(32, 32, 32), (37, 41, 23), (17, 16, 15), (9, 1, 33), (2, 3, 2), (3, 18, 20, 22)]


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("method", ["mean", "mode", "median"])
def test_cubic_pyramid_fast_paths_match_tensorstore(rng, order, method):
    """Four levels of 2x2x2 (the connectomics pyramid: mean's narrow sums of 2x2 rows, mode's and
    median's fused first two levels): every integer dtype and bool, odd shapes (windows cut at
    every level), a 4-D stack, C- and Fortran-ordered tiles, Voronoi labels with and without
    noise, against tensorstore's downsample of the base."""
    dtypes = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]
    for shape in CUBIC_SHAPES:
        factors = [(1,) * (len(shape) - 3) + (2, 2, 2)] * 4
        for dtype in dtypes:
            for noise in (0.0, 0.1):
                base = voronoi_tile(rng, shape, dtype, noise)
                tile = np.asarray(base, order=order)
                levels = pyramid_levels(tile, factors, method)
                expected_levels = tensorstore_levels(base, cumulative_products(factors), method)
                for level, expected in zip(levels, expected_levels):
                    assert level.dtype == expected.dtype
                    np.testing.assert_array_equal(
                        level, expected, err_msg=f"{dtype} {shape} {noise} {order}"
                    )


def numpy_window_modes(base: np.ndarray, edge: int) -> np.ndarray:
    """The mode of every edge^3 window of the last three axes (cut by the array's edge) with
    np.unique: the most frequent value, the smallest on a tie."""
    out_shape = base.shape[:-3] + tuple(-(-n // edge) for n in base.shape[-3:])
    out = np.empty(out_shape, base.dtype)
    for index in np.ndindex(out_shape):
        window = base[index[:-3] + tuple(slice(i * edge, (i + 1) * edge) for i in index[-3:])]
        values, counts = np.unique(window, return_counts=True)
        out[index] = values[np.argmax(counts)]
    return out


def mode_palette(dtype: str) -> np.ndarray:
    """Five values of `dtype` at its extremes (uint64: two ids one apart above 2**53, which a
    float64 would merge)."""
    if dtype == "uint64":
        return np.array([2**53 + 1, 2**53, 2**64 - 1, 0, 2**63], np.uint64)
    info = np.iinfo(dtype)
    return np.array([info.max, info.min, info.max - 1, 0, info.min + 1], dtype)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint32", "int32", "int64", "uint64"])
def test_cubic_mode_kernels_match_numpy_and_tensorstore(rng, dtype):
    """The mode's 2x2x2 fast paths (cube_modes.py: levels 1 and 2 fused per 4x4x4 block;
    cube_merge.py: the deeper levels): labels of two values drawn voxel by voxel (blocks tie 32 to
    32, windows 4 to 4, the larger value first or second), of three to five values, and blocky
    ones; odd shapes and a 4-D stack; every level against np.unique per window and against
    tensorstore, and level 2's histograms against np.unique."""
    palette = mode_palette(dtype)
    for shape in [(16, 16, 16), (13, 9, 11), (5, 4, 7), (2, 9, 8, 12), (1, 1, 1)]:
        for n_values in (2, 3, 5):
            for blocky in (False, True):
                cells = rng.integers(0, n_values, tuple(-(-n // 4) + 1 for n in shape))
                if blocky:
                    for axis in range(len(shape)):
                        cells = np.repeat(cells, 4, axis=axis)
                    picks = cells[tuple(slice(1, n + 1) for n in shape)]
                    picks = np.where(rng.random(shape) < 0.1, rng.integers(0, 5, shape), picks)
                else:
                    picks = rng.integers(0, n_values, shape)
                base = palette[picks]
                factors = [(1,) * (len(shape) - 3) + (2, 2, 2)] * 4
                levels = pyramid_levels(base, factors, "mode")
                expected_levels = tensorstore_levels(base, cumulative_products(factors), "mode")
                for k, (level, expected) in enumerate(zip(levels, expected_levels), start=1):
                    message = f"{dtype} {shape} {n_values} {blocky} level {k}"
                    np.testing.assert_array_equal(level, expected, err_msg=message, strict=True)
                    if k <= 3:
                        reference = numpy_window_modes(base, 2**k)
                        np.testing.assert_array_equal(level, reference, err_msg=message)
                assert_level_two_histograms(base)


def assert_level_two_histograms(base: np.ndarray) -> None:
    """first_two_modes' level 2 histograms: each window's distinct values ascending with their
    voxel counts (none for a uniform window), as np.unique counts them."""
    first, second, offsets, pairs, counts = first_two_modes(np.ascontiguousarray(base))
    assert offsets.size == second.size + 1
    for flat, index in enumerate(np.ndindex(second.shape)):
        window = base[index[:-3] + tuple(slice(4 * i, 4 * i + 4) for i in index[-3:])]
        values, value_counts = np.unique(window, return_counts=True)
        got = slice(offsets[flat], offsets[flat + 1])
        if values.size == 1:
            assert got.stop == got.start
        else:
            np.testing.assert_array_equal(pairs[got], values, strict=True)
            np.testing.assert_array_equal(counts[got], value_counts)


def test_cubic_mode_ties_go_to_the_smaller_value():
    """Hand-made ties: a 4x4x4 block half 7 (first voxel) and half 3, its 2x2x2 windows each
    half and half; then a block of three values, 24 x 9, 24 x 4 and 16 x 1."""
    half = np.where(np.indices((4, 4, 4))[2] % 2 == 0, 7, 3).astype(np.uint16)
    three = np.full((4, 4, 4), 9, np.uint16)
    three.reshape(-1)[24:48] = 4
    three.reshape(-1)[48:] = 1
    for block, first_level, second_level in ((half, 3, 3), (three, None, 4)):
        levels = pyramid_levels(block, [(2, 2, 2)] * 2, "mode")
        assert levels[1].tolist() == [[[second_level]]]
        if first_level is not None:
            assert (levels[0] == first_level).all()
        np.testing.assert_array_equal(levels[0], numpy_window_modes(block, 2))


@pytest.mark.parametrize("dtype", ["int8", "uint64", "int64"])
def test_cubic_mode_blocks_told_apart_by_bits(rng, dtype):
    """cube_modes.py tells a block of two values from one of more by the bitwise or and and of
    its voxels unlike the first: blocks whose other values are 0 and all ones (the or's and the
    and's neutral values), bit subsets of each other (6 and 7 behind 5), or one of those alone,
    every value at any of the 64 places, each level against np.unique and tensorstore."""
    info, bits = np.iinfo(dtype), 8 * np.dtype(dtype).itemsize
    triples = [(5, 0, -1), (5, 6, 7), (7, 6, 4), (0, -1, 1), (-1, 0, 1), (info.max, info.min, 0)]
    blocks = []
    for triple in triples:  # -1: all ones
        first, *others = np.array([v % 2**bits for v in triple], np.uint64).astype(dtype)
        for chosen in (others, others[:1], others[1:]):
            block = np.full(64, first, dtype)
            places = rng.permutation(63)[: 8 * len(chosen)] + 1  # the first voxel stays `first`
            for k, value in enumerate(chosen):
                block[places[8 * k : 8 * k + 8]] = value
            blocks.append(block.reshape(4, 4, 4))
    base = np.concatenate(blocks, axis=2)  # a row of blocks, all inside the array
    for k, level in enumerate(pyramid_levels(base, [(2, 2, 2)] * 2, "mode"), start=1):
        np.testing.assert_array_equal(level, numpy_window_modes(base, 2**k), err_msg=f"{k}")
        expected = tensorstore_levels(base, [(2**k,) * 3], "mode")[0]
        np.testing.assert_array_equal(level, expected, strict=True)
    assert_level_two_histograms(base)


@pytest.mark.parametrize("method", ["mode", "median"])
def test_cubic_merge_of_levels_without_pairs(rng, method):
    """cube_merge.py on levels whose windows are all uniform (no pairs at all): a tile of one
    value, and tiles of uniform 4x4x4 blocks of a few values (level 3 merges uniform children
    only, ties among them included), odd shapes, uint64 above 2**53 and int8, four levels
    against tensorstore."""
    for dtype in ("uint64", "int8"):
        palette = mode_palette(dtype)
        for shape in [(24, 24, 24), (20, 13, 30)]:
            blocks = rng.integers(0, 3, tuple(-(-n // 4) for n in shape))
            for axis in range(3):
                blocks = np.repeat(blocks, 4, axis=axis)
            tiled = palette[blocks[: shape[0], : shape[1], : shape[2]]]
            for base in (np.full(shape, palette[0]), tiled):
                levels = pyramid_levels(base, [(2, 2, 2)] * 4, method)
                expected = tensorstore_levels(base, cumulative_products([(2, 2, 2)] * 4), method)
                for k, (level, reference) in enumerate(zip(levels, expected), start=1):
                    np.testing.assert_array_equal(
                        level, reference, err_msg=f"{dtype} {shape} level {k}", strict=True
                    )


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "uint32", "int32"])
def test_mean_levels_at_the_dtype_extremes(dtype):
    """Sums kept in the narrowest type that holds them (uint8: uint16 up to 257 voxels, then
    uint32): tiles of the dtype's largest and smallest values, and both in halves, four levels of
    2x2x2 and one of 3x5x7, exactly as tensorstore."""
    info = np.iinfo(dtype)
    shape = (33, 34, 35)
    halves = np.where(np.indices(shape).sum(axis=0) % 2 == 0, info.max, info.min).astype(dtype)
    for tile in (np.full(shape, info.max, dtype), np.full(shape, info.min, dtype), halves):
        for factors in ([(2, 2, 2)] * 4, [(3, 5, 7)]):
            levels = pyramid_levels(tile, factors, "mean")
            expected_levels = tensorstore_levels(tile, cumulative_products(factors), "mean")
            for level, expected in zip(levels, expected_levels):
                np.testing.assert_array_equal(level, expected, strict=True, err_msg=f"{factors}")
