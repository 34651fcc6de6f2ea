"""Exact integer window sums and their means, compiled: the `mean` of bool and (u)int8-32 for
`window_reduce` and for every pyramid level. A window's sum is exact in int64 (a (u)int32 voxel
times fewer than 2**31 voxels); its mean is that sum divided by the window's voxel count, rounded
to nearest with ties to even, as tensorstore's `downsample` does.

Each level's sums are kept in the narrowest integer type that cannot overflow (a window's voxel
count times the input dtype's largest magnitude: uint8 sums of up to 257 voxels fit uint16, of
4096 voxels uint32), so a pyramid of a uint8 image moves 2 bytes per sum instead of 8. Up to three
axes (more when the leading factors are 1), an output row is built from the input rows of its
windows added elementwise into a small row buffer, then neighbours along the last axis: one read of
the input, loops the compiler vectorises. A Fortran-ordered input is reduced through its
transpose (no copy). The loops release the GIL (tiles reduced on several threads run in parallel)
and cache their machine code on disk.

>>> sums = window_sums(np.array([[1, 2, 3], [4, 5, 6]], np.uint8), (2, 2))
>>> sums
array([[12,  9]])
>>> counts = parent_axis_counts(np.ones((2, 3), np.int64), np.array([2, 3]), np.array([2, 2]))
>>> rounded_means(sums, counts, np.dtype(np.uint8))  # 12 / 4 and 9 / 2 (a tie: to even)
array([[3, 4]], dtype=uint8)
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from bioimage_tasks.geometry import downscale_shape


def window_means(values: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Means of every `factors` window of bool or (u)int8-32 `values`, in their dtype, exactly as
    tensorstore's `downsample` computes them (`values`' origin on the window grid)."""
    values = np.asarray(values)
    whole = whole_window_means(values, factors)
    return whole if whole is not None else chained_means(values, [factors])[0]


def whole_window_means(values: np.ndarray, factors: Sequence[int]) -> np.ndarray | None:
    """`window_means` in one compiled pass, sums and rounding fused, where every window is whole
    and holds a power-of-two voxel count (the 2x2x2 mean of an image block): C-ordered (u)int8-16
    or (u)int32 `values` of up to three axes past leading ones of factor 1, each axis a multiple
    of its factor. None where that does not apply (`chained_means` then counts each window)."""
    factors = tuple(int(f) for f in factors)
    leading = values.ndim - 3
    if (
        values.dtype.kind not in "iu"
        or values.dtype.itemsize > 4
        or not values.size
        or not values.ndim
        or not values.flags.c_contiguous
        or len(factors) != values.ndim
        or any(f != 1 for f in factors[: max(0, leading)])
        or any(n % f for n, f in zip(values.shape, factors))
    ):
        return None
    cube = (*(1,) * (3 - values.ndim), *factors[max(0, leading) :])
    voxels = int(np.prod(cube))
    if voxels & (voxels - 1):  # not a power of two: a division per voxel, the general path
        return None
    rows = np.empty(values.shape[-1], accumulator_dtype(values.dtype, voxels))
    out = np.empty(downscale_shape(values.shape, factors), values.dtype)
    _mean_whole_windows(_as_4d(values), *cube, voxels.bit_length() - 1, rows, _as_4d(out))
    return out


def chained_means(tile: np.ndarray, level_factors: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Levels 1..L of bool or (u)int8-32 means of `tile`, level k by the product of
    `level_factors[:k]`: level k's sums are the window sums of level k-1's sums (exact, never a
    rounded level), its windows' voxel counts the sums of their children's per axis."""
    if tile.ndim > 1 and tile.flags.f_contiguous and not tile.flags.c_contiguous:
        levels = chained_means(tile.T, [tuple(factors)[::-1] for factors in level_factors])
        return [level.T for level in levels]  # sums and means do not depend on the axis order
    levels, values, voxels = [], tile, 1
    counts = np.ones((tile.ndim, max(tile.shape, default=1)), np.int64)  # the voxels: one each
    for factors in level_factors:
        counts = parent_axis_counts(
            counts, np.asarray(values.shape, np.int64), np.asarray(factors, np.int64)
        )
        voxels *= int(np.prod(factors))
        values = window_sums(values, factors, accumulator_dtype(tile.dtype, voxels))
        levels.append(rounded_means(values, counts, tile.dtype))
    return levels


def accumulator_dtype(dtype: np.dtype, voxels: int) -> np.dtype:
    """The narrowest of (u)int16, (u)int32 and int64 that holds any sum of `voxels` values of
    `dtype` (bool: 0 or 1)."""
    dtype = np.dtype(dtype)
    info = np.iinfo(np.uint8 if dtype.kind == "b" else dtype)
    largest = max(-int(info.min), int(info.max)) * voxels
    for candidate in (np.int16, np.int32) if info.min < 0 else (np.uint16, np.uint32):
        if largest <= np.iinfo(candidate).max:
            return np.dtype(candidate)
    return np.dtype(np.int64)


def window_sums(
    values: np.ndarray, factors: Sequence[int], dtype: np.dtype = np.dtype(np.int64)
) -> np.ndarray:
    """Sums of every `factors` window of integer (or bool) `values`, cut by the edge, in `dtype`
    (which must hold them: `accumulator_dtype`)."""
    values = np.ascontiguousarray(values)
    if values.dtype.kind == "b":
        values = values.view(np.uint8)
    factors = tuple(int(f) for f in factors)
    out_shape = downscale_shape(values.shape, factors)
    leading = values.ndim - 3
    if values.size and values.ndim and all(f == 1 for f in factors[: max(0, leading)]):
        out = np.empty(out_shape, dtype)
        cube_factors = (*(1,) * (3 - values.ndim), *factors[max(0, leading) :])
        _sum_windows_3d(_as_4d(values), *cube_factors, _as_4d(out))
        return out
    out = np.zeros(out_shape, dtype)
    if values.size and values.ndim:
        _sum_rows(
            values.reshape(-1),
            np.asarray(values.shape, np.int64),
            np.asarray(factors, np.int64),
            out.reshape(-1),
            np.asarray(out.shape, np.int64),
        )
    elif values.size:  # 0-d: its own sum
        out[()] = values
    return out


def rounded_means(sums: np.ndarray, axis_counts: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`dtype` means of windows with exact `sums`, whose voxel count is the product over axes of
    `axis_counts[axis, index]`: rounded to nearest, ties to even."""
    out = np.empty(sums.shape, dtype)
    if sums.size:
        shape = sums.shape or (1,)  # a 0-d array as one window of one voxel
        _round_means(
            np.ascontiguousarray(sums).reshape(-1),
            np.asarray(shape, np.int64),
            axis_counts.reshape(len(shape), -1),
            out.view(np.uint8 if out.dtype.kind == "b" else out.dtype).reshape(-1),
        )
    return out


def _as_4d(array: np.ndarray) -> np.ndarray:
    """A C-ordered array as a stack of 3-D arrays: its last three axes (ones prepended to fewer),
    the leading ones (factor 1) merged into the stack's."""
    if array.ndim >= 3:
        return array.reshape(-1, *array.shape[-3:])
    return array.reshape((1,) * (4 - array.ndim) + array.shape)


@numba.njit(nogil=True, cache=True)
def _sum_windows_3d(values, factor_z, factor_y, factor_x, out):
    """`out[s, i, j, k]`: the sum of the window (i, j, k) of `values[s]` (each 3-D, C order), cut
    by the edge. The input rows of an output row are added elementwise into a row buffer (the 2x2
    case in one loop of four rows), then the buffer's neighbours along the last axis."""
    depth, height, width = values.shape[1:]
    rows = np.empty(width, out.dtype)
    full = width // factor_x
    for stack in range(out.shape[0]):
        for out_z in range(out.shape[1]):
            z, n_z = out_z * factor_z, min(factor_z, depth - out_z * factor_z)
            for out_y in range(out.shape[2]):
                y, n_y = out_y * factor_y, min(factor_y, height - out_y * factor_y)
                if n_z == 2 and n_y == 2:
                    a, b = values[stack, z, y], values[stack, z, y + 1]
                    c, d = values[stack, z + 1, y], values[stack, z + 1, y + 1]
                    for x in range(width):
                        rows[x] = a[x] + b[x] + c[x] + d[x]
                else:
                    rows[:] = 0
                    for dz in range(n_z):
                        for dy in range(n_y):
                            row = values[stack, z + dz, y + dy]
                            for x in range(width):
                                rows[x] += row[x]
                _sum_along_row(rows, factor_x, full, out[stack, out_z, out_y])


@numba.njit(nogil=True, cache=True)
def _mean_whole_windows(values, factor_z, factor_y, factor_x, shift, rows, out):
    """`out[s, i, j, k]`: the mean of the whole window (i, j, k) of `values[s]` (2**shift voxels),
    rounded half to even. The input rows of an output row are added into `rows` (as in
    `_sum_windows_3d`), then each run of `factor_x` is summed and rounded at once."""
    count = np.int64(1) << shift
    mask = count - 1
    for stack in range(out.shape[0]):
        for out_z in range(out.shape[1]):
            z = out_z * factor_z
            for out_y in range(out.shape[2]):
                y = out_y * factor_y
                if factor_z == 2 and factor_y == 2:
                    a, b = values[stack, z, y], values[stack, z, y + 1]
                    c, d = values[stack, z + 1, y], values[stack, z + 1, y + 1]
                    for x in range(rows.size):
                        rows[x] = a[x] + b[x] + c[x] + d[x]
                else:
                    rows[:] = 0
                    for dz in range(factor_z):
                        for dy in range(factor_y):
                            row = values[stack, z + dz, y + dy]
                            for x in range(rows.size):
                                rows[x] += row[x]
                out_row = out[stack, out_z, out_y]
                if factor_x == 2:
                    for k in range(out_row.size):
                        total = np.int64(rows[2 * k]) + np.int64(rows[2 * k + 1])
                        quotient = total >> shift  # floor, also below zero: `_round_shifted`
                        out_row[k] = quotient + (2 * (total & mask) + (quotient & 1) > count)
                    continue
                for k in range(out_row.size):
                    total = np.int64(rows[k * factor_x])
                    for x in range(k * factor_x + 1, (k + 1) * factor_x):
                        total += rows[x]
                    quotient = total >> shift
                    out_row[k] = quotient + (2 * (total & mask) + (quotient & 1) > count)


@numba.njit(nogil=True, cache=True, inline="always")
def _sum_along_row(rows, factor, full, out_row):
    """`out_row[k]`: the sum of `rows[k * factor:(k + 1) * factor]`, the last one cut."""
    if factor == 2:
        for x in range(full):
            out_row[x] = rows[2 * x] + rows[2 * x + 1]
    elif factor == 1:
        out_row[:] = rows
    else:
        for x in range(full):
            total = rows[x * factor]
            for k in range(1, factor):
                total += rows[x * factor + k]
            out_row[x] = total
    if full < out_row.size:  # the partial window at the end of the row
        total = rows[full * factor]
        for k in range(full * factor + 1, rows.size):
            total += rows[k]
        out_row[full] = total


@numba.njit(nogil=True, cache=True)
def parent_axis_counts(axis_counts, shape, factors):
    """Per-axis voxel counts of the windows of the next level: `axis_counts[axis, index]` are the
    base voxels along `axis` in the windows of a level of `shape` at `index` (ones at the base);
    each parent index sums its children's along that axis."""
    out = (shape + factors - 1) // factors
    parent = np.zeros((shape.size, max(1, out.max())), np.int64)
    for axis in range(shape.size):
        for index in range(shape[axis]):
            parent[axis, index // factors[axis]] += axis_counts[axis, index]
    return parent


@numba.njit(nogil=True, cache=True)
def _sum_rows(values, shape, factors, out, out_shape):
    """Add every row of `values` (C order, flat) into the output row of its windows, `out`
    (zeros, flat). The leading axes are walked by an odometer, so any number of axes works."""
    ndim = shape.size
    length, factor, out_length = shape[ndim - 1], factors[ndim - 1], out_shape[ndim - 1]
    full = length // factor
    index = np.zeros(ndim, np.int64)
    out_strides = np.ones(ndim, np.int64)  # output rows per step along each leading axis
    for axis in range(ndim - 3, -1, -1):
        out_strides[axis] = out_strides[axis + 1] * out_shape[axis + 1]
    out_row = 0
    for row in range(values.size // length):
        row_values = values[row * length : (row + 1) * length]  # slices: the loops vectorise
        sums = out[out_row * out_length : (out_row + 1) * out_length]
        if factor == 1:
            for d in range(length):
                sums[d] += row_values[d]
        elif factor == 2:
            for d in range(full):
                sums[d] += np.int64(row_values[2 * d]) + np.int64(row_values[2 * d + 1])
        else:
            for d in range(full):
                total = np.int64(0)
                for k in range(factor):
                    total += row_values[d * factor + k]
                sums[d] += total
        if full < out_length:  # the partial window at the end of the row
            total = np.int64(0)
            for k in range(full * factor, length):
                total += row_values[k]
            sums[full] += total
        axis = ndim - 2  # next row: advance the odometer over the leading axes
        while axis >= 0:
            index[axis] += 1
            if index[axis] < shape[axis]:
                if index[axis] % factors[axis] == 0:
                    out_row += out_strides[axis]
                break
            index[axis] = 0
            out_row -= (out_shape[axis] - 1) * out_strides[axis]
            axis -= 1


@numba.njit(nogil=True, cache=True)
def _round_means(sums, shape, axis_counts, out):
    """`out[i] = sums[i] / count` rounded half to even, with each window's count the product of
    its per-axis counts. Along a row only the last window can be cut, so the others share one
    count: a shift when it is a power of two (the loop vectorises), else a division."""
    ndim = shape.size
    length = shape[ndim - 1]
    index = np.zeros(ndim, np.int64)
    for row in range(sums.size // length):
        row_count = np.int64(1)
        for axis in range(ndim - 1):
            row_count *= axis_counts[axis, index[axis]]
        row_sums = sums[row * length : (row + 1) * length]
        row_out = out[row * length : (row + 1) * length]
        count = row_count * axis_counts[ndim - 1, 0]
        shift = _log2(count)
        if shift >= 0:
            _round_shifted(row_sums[: length - 1], shift, count, row_out[: length - 1])
        else:
            _round_divided(row_sums[: length - 1], count, row_out[: length - 1])
        last_count = row_count * axis_counts[ndim - 1, length - 1]
        _round_divided(row_sums[length - 1 :], last_count, row_out[length - 1 :])
        axis = ndim - 2
        while axis >= 0:
            index[axis] += 1
            if index[axis] < shape[axis]:
                break
            index[axis] = 0
            axis -= 1


@numba.njit(nogil=True, cache=True, inline="always")
def _round_shifted(sums, shift, count, out):
    """`out = sums / 2**shift` (`count` = 2**shift) rounded half to even: round up iff
    2 * remainder + (floor quotient odd) > count."""
    mask = count - 1
    for i in range(sums.size):
        total = np.int64(sums[i])
        quotient = total >> shift
        out[i] = quotient + (2 * (total & mask) + (quotient & 1) > count)


@numba.njit(nogil=True, cache=True, inline="always")
def _round_divided(sums, count, out):
    """`out = sums / count` rounded half to even (floor division, as `_round_shifted`)."""
    for i in range(sums.size):
        total = np.int64(sums[i])
        quotient = total // count
        out[i] = quotient + (2 * (total - quotient * count) + (quotient & 1) > count)


@numba.njit(nogil=True, cache=True, inline="always")
def _log2(count):
    """k if `count` is 2**k, else -1."""
    if count & (count - 1):
        return -1
    shift = 0
    while (np.int64(1) << shift) < count:
        shift += 1
    return shift
