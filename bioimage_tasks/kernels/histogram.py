"""Exact window histograms carried from one pyramid level to the next, for integer `mode` and
`median`. Each window of a level keeps its distinct values in ascending order with their voxel
counts (`LevelHistograms`, in CSR form); a parent window's histogram is the merge of its
children's, so every level's mode or median is that of the base's window, at a cost that
follows the number of distinct (window, value) pairs rather than the number of voxels. A window
whose voxels all hold one value (most windows of a label volume) is one pair.

The loops are compiled by numba and release the GIL, so tiles reduced on several threads run in
parallel; they cache their machine code on disk (`cache=True`)."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from bioimage_tasks.geometry import downscale_shape

_SORT_BY_INSERTION = 24  # longer runs of pairs are sorted with numpy's argsort


@dataclass(frozen=True)
class LevelHistograms:
    """One level of a tile: `values` (each window's mode or median, in the level's shape) and each
    window's histogram, pairs `pair_values[offsets[w]:offsets[w + 1]]` (ascending) with their
    `pair_counts`. The base (`of_voxels`) keeps no pairs: every voxel is its own pair."""

    values: np.ndarray
    offsets: np.ndarray | None
    pair_values: np.ndarray | None
    pair_counts: np.ndarray | None

    @classmethod
    def of_voxels(cls, voxels: np.ndarray) -> LevelHistograms:
        return cls(np.ascontiguousarray(voxels), None, None, None)

    def merge(self, factors: tuple[int, ...], method: str) -> LevelHistograms:
        """The next level: windows of `factors` of this level's windows (cut by the edge).

        >>> base = LevelHistograms.of_voxels(np.array([[1, 1, 2, 5], [1, 3, 4, 4]], np.uint8))
        >>> level = base.merge((1, 2), "mode")
        >>> level.values.tolist(), level.merge((2, 2), "mode").values.tolist()
        ([[1, 2], [1, 4]], [[1]])
        """
        out_shape = downscale_shape(self.values.shape, factors)
        pairs = self.values.reshape(-1) if self.offsets is None else self.pair_values
        offsets_out, pairs, counts, values = _merge(self.offsets, pairs, self.pair_counts, self.values.shape,
                                                    tuple(factors), method == "median")
        return LevelHistograms(values.reshape(out_shape), offsets_out, pairs, counts)


def _window_offsets(strides: np.ndarray, factors: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Each position in a window (C order): its per-axis offset, (n, ndim), and its flat offset
    in an array of `strides` (elements per step along each axis)."""
    offsets = np.ascontiguousarray(np.indices(factors).reshape(len(factors), -1).T.astype(np.int64))
    return offsets, offsets @ strides


@numba.njit(nogil=True, cache=True)
def _strides(shape):
    """Elements per step along each axis of a C-ordered array of `shape`."""
    strides = np.empty(shape.size, np.int64)
    stride = 1
    for axis in range(shape.size - 1, -1, -1):
        strides[axis] = stride
        stride *= shape[axis]
    return strides


@numba.njit(nogil=True, cache=True)
def _corners(shape, factors):
    """Every parent window's corner (flat index into the child array) and whether it lies whole
    inside, in C order over the parents."""
    ndim = shape.size
    strides = _strides(shape)
    out = (shape + factors - 1) // factors
    n_parents = 1
    for axis in range(ndim):
        n_parents *= out[axis]
    corners = np.empty(n_parents, np.int64)
    whole = np.empty(n_parents, np.bool_)
    index = np.zeros(ndim, np.int64)
    for parent in range(n_parents):
        corner = 0
        inside = True
        for axis in range(ndim):
            start = index[axis] * factors[axis]
            corner += start * strides[axis]
            inside &= start + factors[axis] <= shape[axis]
        corners[parent] = corner
        whole[parent] = inside
        axis = ndim - 1
        while axis >= 0:
            index[axis] += 1
            if index[axis] < out[axis] or axis == 0:
                break
            index[axis] = 0
            axis -= 1
    return corners, whole


@numba.njit(nogil=True, cache=True, inline="always")
def _in_bounds(corner_index, offset, shape, child_strides):
    """Whether the child at window position `offset` of the parent whose corner is the flat
    child index `corner_index` lies inside the child array."""
    for axis in range(shape.size):
        coordinate = (corner_index // child_strides[axis]) % shape[axis] + offset[axis]
        if coordinate >= shape[axis]:
            return False
    return True


@numba.njit(nogil=True, cache=True)
def _argsort_pairs(values, counts, n):
    """Sort the first `n` (value, count) pairs by value, in place, for long runs."""
    order = np.argsort(values[:n], kind="mergesort")
    sorted_values = values[:n][order]
    sorted_counts = counts[:n][order]
    values[:n] = sorted_values
    counts[:n] = sorted_counts


def _merge(child_offsets: np.ndarray | None, child_values: np.ndarray, child_counts: np.ndarray | None,
           shape: tuple[int, ...], factors: tuple[int, ...], median: bool) -> tuple[np.ndarray, ...]:
    """The next level's histograms (offsets, pair values, pair counts) and each window's mode or
    median, from a level's histograms, or from the voxels when `child_offsets` is None (each
    voxel a pair of count 1). The parents are merged in runs whose pairs surely fit the output
    arrays, which grow between runs, so that the compiled loop never reallocates."""
    shape_array = np.asarray(shape, np.int64)
    strides = _strides(shape_array)
    corners, whole = _corners(shape_array, np.asarray(factors, np.int64))
    offsets, deltas = _window_offsets(strides, factors)
    longest = 1 if child_offsets is None else int(np.diff(child_offsets).max())
    per_parent = len(deltas) * longest  # most pairs a parent can gather
    n_parents = len(corners)
    out_offsets = np.empty(n_parents + 1, np.int64)
    out_values = np.empty(n_parents + n_parents // 2 + per_parent, child_values.dtype)
    out_counts = np.empty(len(out_values), np.int64)
    result = np.empty(n_parents, child_values.dtype)
    scratch = np.empty(per_parent, child_values.dtype), np.empty(per_parent, np.int64)
    run = max(1, 2**16 // per_parent)
    used = 0
    for first in range(0, n_parents, run):
        last = min(n_parents, first + run)
        if used + (last - first) * per_parent > len(out_values):
            capacity = max(2 * len(out_values), used + (last - first) * per_parent)
            out_values, out_counts = _grown(out_values, used, capacity), _grown(out_counts, used, capacity)
        used = _merge_parents(first, last, corners, whole, child_offsets, child_values, child_counts,
                              shape_array, strides, offsets, deltas, median, *scratch,
                              out_offsets, out_values, out_counts, result, used)
    out_offsets[n_parents] = used
    return out_offsets, out_values[:used], out_counts[:used], result


def _grown(array: np.ndarray, used: int, capacity: int) -> np.ndarray:
    """`array` with room for `capacity` elements, its first `used` kept."""
    grown = np.empty(capacity, array.dtype)
    grown[:used] = array[:used]
    return grown


@numba.njit(nogil=True, cache=True)
def _merge_parents(first, last, corners, whole, child_offsets, child_values, child_counts, shape, strides, offsets,
                   deltas, median, values, counts, out_offsets, out_values, out_counts, result, used):
    """Parents `first..last-1` of `_merge`: gather each one's children's pairs, merge them into
    distinct ascending pairs appended at `used`, and pick its mode (highest count, lowest value on
    a tie) or median (value at position (total - 1) // 2). Returns the new `used`. One loop,
    written out, which numba keeps tight."""
    for parent in range(first, last):
        out_offsets[parent] = used
        corner = corners[parent]
        n = 0
        for k in range(deltas.size):
            if whole[parent] or _in_bounds(corner, offsets[k], shape, strides):
                child = corner + deltas[k]
                if child_offsets is None:
                    values[n] = child_values[child]
                    counts[n] = 1
                    n += 1
                else:
                    for pair in range(child_offsets[child], child_offsets[child + 1]):
                        values[n] = child_values[pair]
                        counts[n] = child_counts[pair]
                        n += 1
        first = values[0]
        uniform = True
        for i in range(1, n):
            if values[i] != first:
                uniform = False
                break
        if uniform:
            total = 0
            for i in range(n):
                total += counts[i]
            out_values[used] = first
            out_counts[used] = total
            used += 1
            result[parent] = first
            continue
        if n <= _SORT_BY_INSERTION:
            for i in range(1, n):
                value = values[i]
                count = counts[i]
                j = i - 1
                while j >= 0 and values[j] > value:
                    values[j + 1] = values[j]
                    counts[j + 1] = counts[j]
                    j -= 1
                values[j + 1] = value
                counts[j + 1] = count
        else:
            _argsort_pairs(values, counts, n)
        start = used
        total = 0
        for i in range(n):
            total += counts[i]
            if i > 0 and values[i] == out_values[used - 1]:
                out_counts[used - 1] += counts[i]
            else:
                out_values[used] = values[i]
                out_counts[used] = counts[i]
                used += 1
        pick = out_values[start]
        if median:
            seen = 0
            for i in range(start, used):
                seen += out_counts[i]
                if 2 * seen > total - 1:  # past position (total - 1) // 2
                    pick = out_values[i]
                    break
        else:
            best = out_counts[start]
            for i in range(start + 1, used):
                if out_counts[i] > best:
                    pick = out_values[i]
                    best = out_counts[i]
        result[parent] = pick
    return used
