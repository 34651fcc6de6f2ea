"""Exact integer window sums and their means, compiled: the `mean` of bool and (u)int8-32 for
`window_reduce` and for every pyramid level. A window's sum is exact in int64 (a (u)int32 voxel
times fewer than 2**31 voxels); its mean is that sum divided by the window's voxel count, rounded
to nearest with ties to even, as tensorstore's `downsample` does.

One pass over the input accumulates each input row into its output row (pairs of neighbours at
factor 2 along the last axis), so a level costs one read of its input. The loops release the GIL
(tiles reduced on several threads run in parallel) and cache their machine code on disk.

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
    return chained_means(np.asarray(values), [factors])[0]


def chained_means(tile: np.ndarray, level_factors: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Levels 1..L of bool or (u)int8-32 means of `tile`, level k by the product of
    `level_factors[:k]`: level k's sums are the window sums of level k-1's sums (exact, never a
    rounded level), its windows' voxel counts the sums of their children's per axis."""
    levels, values = [], tile
    counts = np.ones((tile.ndim, max(tile.shape, default=1)), np.int64)  # the voxels: one each
    for factors in level_factors:
        counts = parent_axis_counts(counts, np.asarray(values.shape, np.int64), np.asarray(factors, np.int64))
        values = window_sums(values, factors)
        levels.append(rounded_means(values, counts, tile.dtype))
    return levels


def window_sums(values: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """int64 sums of every `factors` window of integer (or bool) `values`, cut by the edge."""
    values = np.ascontiguousarray(values)
    if values.dtype.kind == "b":
        values = values.view(np.uint8)
    out = np.zeros(downscale_shape(values.shape, tuple(factors)), np.int64)
    if values.size and values.ndim:
        _sum_rows(values.reshape(-1), np.asarray(values.shape, np.int64), np.asarray(factors, np.int64),
                  out.reshape(-1), np.asarray(out.shape, np.int64))
    elif values.size:  # 0-d: its own sum
        out[()] = values
    return out


def rounded_means(sums: np.ndarray, axis_counts: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`dtype` means of windows with exact `sums`, whose voxel count is the product over axes of
    `axis_counts[axis, index]`: rounded to nearest, ties to even."""
    out = np.empty(sums.shape, dtype)
    if sums.size:
        shape = sums.shape or (1,)  # a 0-d array as one window of one voxel
        _round_means(np.ascontiguousarray(sums).reshape(-1), np.asarray(shape, np.int64),
                     axis_counts.reshape(len(shape), -1), out.view(np.uint8 if out.dtype.kind == "b" else out.dtype).reshape(-1))
    return out


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
        row_values = values[row * length:(row + 1) * length]  # slices: the loops vectorise
        sums = out[out_row * out_length:(out_row + 1) * out_length]
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
    its per-axis counts. Round up iff 2 * remainder + (floor quotient odd) > count."""
    ndim = shape.size
    length = shape[ndim - 1]
    last_shifts = np.empty(length, np.int64)
    for d in range(length):
        last_shifts[d] = _log2(axis_counts[ndim - 1, d])
    index = np.zeros(ndim, np.int64)
    for row in range(sums.size // length):
        row_count = np.int64(1)
        for axis in range(ndim - 1):
            row_count *= axis_counts[axis, index[axis]]
        row_shift = _log2(row_count)
        row_sums = sums[row * length:(row + 1) * length]
        row_out = out[row * length:(row + 1) * length]
        for d in range(length):
            total = row_sums[d]
            count = row_count * axis_counts[ndim - 1, d]
            if row_shift >= 0 and last_shifts[d] >= 0:  # every full window of factors 2**k
                quotient = total >> (row_shift + last_shifts[d])
            else:
                quotient = total // count
            remainder = total - quotient * count
            quotient += 2 * remainder + (quotient & 1) > count
            row_out[d] = quotient
        axis = ndim - 2
        while axis >= 0:
            index[axis] += 1
            if index[axis] < shape[axis]:
                break
            index[axis] = 0
            axis -= 1


@numba.njit(nogil=True, cache=True, inline="always")
def _log2(count):
    """k if `count` is 2**k, else -1."""
    if count & (count - 1):
        return -1
    shift = 0
    while (np.int64(1) << shift) < count:
        shift += 1
    return shift
