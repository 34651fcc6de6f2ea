"""Exact window histograms carried from one pyramid level to the next, for integer `mode` and
`median`. A window whose voxels all hold one value ("uniform": most windows of a label volume)
keeps nothing but that value; every other window keeps its distinct values in ascending order
with their voxel counts (`LevelHistograms`, in CSR form). A parent window's histogram is the merge
of its children's (a uniform child counts as its value times its voxel count), so every level's
mode or median is that of the base's window, at a cost that follows the number of mixed windows
and their distinct values rather than the number of voxels.

The loops are compiled by numba, one call per level, and release the GIL, so tiles reduced on
several threads run in parallel; they cache their machine code on disk (`cache=True`)."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from bioimage_tasks.geometry import downscale_shape
from bioimage_tasks.kernels.sums import parent_axis_counts
from bioimage_tasks.kernels.voxel_histograms import first_level_histograms

_SORT_BY_INSERTION = 24  # longer runs of pairs are sorted with numpy's argsort


@dataclass(frozen=True)
class LevelHistograms:
    """One level of a tile: `values` (each window's mode or median, in the level's shape),
    `axis_counts[a][i]` (voxels of the base along axis a in the windows at index i: the product
    over axes is a window's voxel count) and the histograms of the mixed windows: pairs
    `pair_values[offsets[w]:offsets[w + 1]]` (ascending, at least two) with their `pair_counts`;
    a uniform window has no pairs. The base (`of_voxels`) keeps no pairs at all."""

    values: np.ndarray
    axis_counts: np.ndarray
    offsets: np.ndarray | None = None
    pair_values: np.ndarray | None = None
    pair_counts: np.ndarray | None = None

    @classmethod
    def of_voxels(cls, voxels: np.ndarray) -> LevelHistograms:
        voxels = np.ascontiguousarray(voxels)
        return cls(voxels, np.ones((voxels.ndim, max(voxels.shape)), np.int64))

    @classmethod
    def of_windows(
        cls, voxels: np.ndarray, factors: tuple[int, ...], method: str
    ) -> LevelHistograms:
        """The first level: `of_voxels(voxels).merge(factors, method)`, from the voxels directly
        when at most the last three factors exceed 1 (voxel_histograms.py: uniform windows found
        by a vectorised test, only mixed ones sorted)."""
        voxels = np.ascontiguousarray(voxels)
        if voxels.ndim == 0 or not voxels.size or any(f > 1 for f in factors[:-3]):
            return cls.of_voxels(voxels).merge(factors, method)
        values, offsets, pairs, counts = first_level_histograms(voxels, factors, method == "median")
        ones = np.ones((voxels.ndim, max(voxels.shape)), np.int64)
        axis_counts = parent_axis_counts(
            ones, np.asarray(voxels.shape, np.int64), np.asarray(factors, np.int64)
        )
        return cls(values, axis_counts, offsets, pairs, counts)

    def merge(self, factors: tuple[int, ...], method: str) -> LevelHistograms:
        """The next level: windows of `factors` of this level's windows (cut by the edge).

        >>> base = LevelHistograms.of_voxels(np.array([[1, 1, 2, 5], [1, 3, 4, 4]], np.uint8))
        >>> level = base.merge((1, 2), "mode")
        >>> level.values.tolist(), level.merge((2, 2), "mode").values.tolist()
        ([[1, 2], [1, 4]], [[1]])
        """
        shape = np.asarray(self.values.shape, np.int64)
        factors_array = np.asarray(factors, np.int64)
        offsets, pairs, counts, values = _merge(
            self.values.reshape(-1),
            self.offsets,
            self.pair_values,
            self.pair_counts,
            self.axis_counts,
            shape,
            factors_array,
            method == "median",
        )
        return LevelHistograms(
            values.reshape(downscale_shape(self.values.shape, factors)),
            parent_axis_counts(self.axis_counts, shape, factors_array),
            offsets,
            pairs,
            counts,
        )


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
def _window_offsets(strides, factors):
    """Each position in a window (C order): its per-axis offset, (n, ndim), and its flat offset
    in an array of `strides` (elements per step along each axis)."""
    ndim = factors.size
    n = 1
    for axis in range(ndim):
        n *= factors[axis]
    offsets = np.zeros((n, ndim), np.int64)
    deltas = np.zeros(n, np.int64)
    for position in range(n):
        rest = position
        for axis in range(ndim - 1, -1, -1):
            offsets[position, axis] = rest % factors[axis]
            rest //= factors[axis]
            deltas[position] += offsets[position, axis] * strides[axis]
    return offsets, deltas


@numba.njit(nogil=True, cache=True, inline="always")
def _in_bounds(index, factors, offset, shape):
    """Whether the child at window position `offset` of the parent at `index` lies inside the
    child array (of `shape`)."""
    for axis in range(shape.size):
        if index[axis] * factors[axis] + offset[axis] >= shape[axis]:
            return False
    return True


@numba.njit(nogil=True, cache=True, inline="always")
def _voxel_count(index, factors, offset, axis_counts):
    """Voxels of the base in the child at window position `offset` of the parent at `index`."""
    count = 1
    for axis in range(index.size):
        count *= axis_counts[axis, index[axis] * factors[axis] + offset[axis]]
    return count


@numba.njit(nogil=True, cache=True, inline="always")
def _is_mixed(child_offsets, child):
    return child_offsets is not None and child_offsets[child + 1] != child_offsets[child]


@numba.njit(nogil=True, cache=True)
def _argsort_pairs(values, counts, n):
    """Sort the first `n` (value, count) pairs by value, in place, for long runs."""
    order = np.argsort(values[:n], kind="mergesort")
    sorted_values = values[:n][order]
    sorted_counts = counts[:n][order]
    values[:n] = sorted_values
    counts[:n] = sorted_counts


@numba.njit(nogil=True, cache=True)
def _merge(
    child_modes, child_offsets, child_values, child_counts, axis_counts, shape, factors, median
):
    """The next level's histograms (offsets, pair values, pair counts) and each window's mode or
    median, from a level's (`child_modes`: its windows' values, flat; `child_offsets` None at the
    voxels). Parents are merged in runs whose pairs surely fit the output arrays, which grow
    between runs, so that the inner loop (`_merge_rows`) never reallocates."""
    strides = _strides(shape)
    offsets, deltas = _window_offsets(strides, factors)
    longest = 1
    if child_offsets is not None:
        for child in range(child_offsets.size - 1):
            longest = max(longest, child_offsets[child + 1] - child_offsets[child])
    per_parent = deltas.size * longest  # most pairs a parent can gather
    out = (shape + factors - 1) // factors
    n_parents, width = out.prod(), out[-1]  # width: parents per row (along the last axis)
    out_offsets = np.empty(n_parents + 1, np.int64)
    out_values = np.empty(n_parents // 2 + per_parent, child_modes.dtype)
    out_counts = np.empty(out_values.size, np.int64)
    result = np.empty(n_parents, child_modes.dtype)
    values, counts = np.empty(per_parent, child_modes.dtype), np.empty(per_parent, np.int64)
    run = max(1, 2**16 // (per_parent * width))  # rows
    used = 0
    for first in range(0, n_parents // width, run):
        last = min(n_parents // width, first + run)
        if used + (last - first) * width * per_parent > out_values.size:
            capacity = max(2 * out_values.size, used + (last - first) * width * per_parent)
            out_values, out_counts = (
                _grown(out_values, used, capacity),
                _grown(out_counts, used, capacity),
            )
        used = _merge_rows(
            first,
            last,
            child_modes,
            child_offsets,
            child_values,
            child_counts,
            axis_counts,
            shape,
            strides,
            factors,
            offsets,
            deltas,
            median,
            values,
            counts,
            out_offsets,
            out_values,
            out_counts,
            result,
            used,
        )
    out_offsets[n_parents] = used
    return out_offsets, out_values[:used], out_counts[:used], result


@numba.njit(nogil=True, cache=True)
def _grown(array, used, capacity):
    """`array` with room for `capacity` elements, its first `used` kept."""
    grown = np.empty(capacity, array.dtype)
    grown[:used] = array[:used]
    return grown


@numba.njit(nogil=True, cache=True)
def _merge_rows(
    first,
    last,
    child_modes,
    child_offsets,
    child_values,
    child_counts,
    axis_counts,
    shape,
    strides,
    factors,
    offsets,
    deltas,
    median,
    values,
    counts,
    out_offsets,
    out_values,
    out_counts,
    result,
    used,
):
    """Rows `first..last-1` of parents (parents along the last axis) of `_merge`. A parent whose
    children are all uniform with one value is uniform. Any other gathers its children's pairs (a
    uniform child: its value and voxel count), merges them into distinct ascending pairs appended
    at `used`, and picks its mode (highest count, lowest value on a tie) or median (value at
    position (total - 1) // 2). Returns the new `used`. One loop, written out, which numba keeps
    tight; the parent's index is counted along (no divisions per child)."""
    ndim = shape.size
    tail = ndim - 1
    out = (shape + factors - 1) // factors
    index = np.zeros(ndim, np.int64)
    rest = first
    for axis in range(tail - 1, -1, -1):
        index[axis] = rest % out[axis]
        rest //= out[axis]
    for row in range(first, last):
        if row > first:
            axis = tail - 1
            index[axis] += 1
            while index[axis] == out[axis] and axis > 0:
                index[axis] = 0
                axis -= 1
                index[axis] += 1
        row_corner = 0
        row_inside = True
        for axis in range(tail):
            start = index[axis] * factors[axis]
            row_corner += start * strides[axis]
            row_inside &= start + factors[axis] <= shape[axis]
        for position in range(out[tail]):
            parent = row * out[tail] + position
            index[tail] = position
            corner = row_corner + position * factors[tail]
            inside = row_inside and (position + 1) * factors[tail] <= shape[tail]
            out_offsets[parent] = used
            value = child_modes[corner]
            uniform = not _is_mixed(child_offsets, corner)
            if uniform and inside:  # the common case: no bounds checks, no branches
                for k in range(1, deltas.size):
                    child = corner + deltas[k]
                    uniform &= child_modes[child] == value and not _is_mixed(child_offsets, child)
            elif uniform:
                for k in range(1, deltas.size):
                    if _in_bounds(index, factors, offsets[k], shape):
                        child = corner + deltas[k]
                        if child_modes[child] != value or _is_mixed(child_offsets, child):
                            uniform = False
                            break
            if uniform:
                result[parent] = value
                continue
            n = 0
            for k in range(deltas.size):
                if inside or _in_bounds(index, factors, offsets[k], shape):
                    child = corner + deltas[k]
                    if child_offsets is None:
                        values[n] = child_modes[child]
                        counts[n] = 1
                        n += 1
                    elif child_offsets[child + 1] == child_offsets[child]:
                        values[n] = child_modes[child]
                        counts[n] = _voxel_count(index, factors, offsets[k], axis_counts)
                        n += 1
                    else:
                        for pair in range(child_offsets[child], child_offsets[child + 1]):
                            values[n] = child_values[pair]
                            counts[n] = child_counts[pair]
                            n += 1
            start = used
            used, total = _distinct_pairs(values, counts, n, out_values, out_counts, used)
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


@numba.njit(nogil=True, cache=True, inline="always")
def _distinct_pairs(values, counts, n, out_values, out_counts, used):
    """Append the distinct values of the `n` pairs (`values`, `counts`), ascending, with their
    summed counts at `used`; returns (the new `used`, the total count). A short run adds each
    pair to its value's entry (few distinct values: no sort of the pairs, only of the entries);
    a long one is sorted first."""
    start = used
    total = 0
    if n <= _SORT_BY_INSERTION:
        for i in range(n):
            value = values[i]
            total += counts[i]
            j = start
            while j < used and out_values[j] != value:
                j += 1
            if j == used:
                out_values[used] = value
                out_counts[used] = counts[i]
                used += 1
            else:
                out_counts[j] += counts[i]
        for i in range(start + 1, used):
            value = out_values[i]
            count = out_counts[i]
            j = i - 1
            while j >= start and out_values[j] > value:
                out_values[j + 1] = out_values[j]
                out_counts[j + 1] = out_counts[j]
                j -= 1
            out_values[j + 1] = value
            out_counts[j + 1] = count
        return used, total
    _argsort_pairs(values, counts, n)
    for i in range(n):
        total += counts[i]
        if i > 0 and values[i] == out_values[used - 1]:
            out_counts[used - 1] += counts[i]
        else:
            out_values[used] = values[i]
            out_counts[used] = counts[i]
            used += 1
    return used, total


@numba.njit(nogil=True, cache=True, inline="always")
def _pick(pair_values, pair_counts, start, end, total, median):
    """The mode (highest count, lowest value on a tie) or median (value at (total - 1) // 2) of
    the ascending pairs [start, end)."""
    pick = pair_values[start]
    if median:
        seen = 0
        for i in range(start, end):
            seen += pair_counts[i]
            if 2 * seen > total - 1:
                return pair_values[i]
        return pick
    best = pair_counts[start]
    for i in range(start + 1, end):
        if pair_counts[i] > best:
            pick, best = pair_values[i], pair_counts[i]
    return pick
