"""Exact window histograms carried from one pyramid level to the next, for integer `mode` and
`median`. A window whose voxels all hold one value (most windows of a label volume) is stored
as that value alone; only the other ("mixed") windows keep a histogram, as (window, value,
count) triples. A parent window is uniform when its children are uniform with one value; a mixed
parent's histogram is the sum of its children's (a uniform child counts as one value), so every
level's mode or median is that of the base's window, at a cost that follows the number of
distinct (window, value) pairs rather than the number of voxels."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bioimage_tasks.geometry import downscale_shape
from bioimage_tasks.kernels.window import sorted_columns

_ROUNDS = 6  # distinct values taken one per round before the rest of a window is sorted


@dataclass(frozen=True)
class LevelHistograms:
    """One level of a tile: `values` (each window's mode/median; a uniform window's value),
    `uniform` (None: all windows uniform), `counts` (in-bounds voxels per window, an int when all
    windows are whole) and, for mixed windows, the triples (`window` flat index, `value`, `count`)."""

    values: np.ndarray
    uniform: np.ndarray | None
    counts: np.ndarray | int
    window: np.ndarray
    value: np.ndarray
    count: np.ndarray

    @classmethod
    def of_voxels(cls, voxels: np.ndarray) -> LevelHistograms:
        """The base: every voxel a uniform window of one voxel."""
        empty = np.empty(0, np.int64)
        return cls(voxels, None, 1, empty, np.empty(0, voxels.dtype), empty)

    def merge(self, factors: tuple[int, ...], counts: np.ndarray | int, method: str) -> LevelHistograms:
        """The next level, windows of `factors` of this level's windows holding `counts` voxels."""
        if self.uniform is None and isinstance(counts, int):
            return self._merge_voxels(factors, counts, method)
        return self._merge_histograms(factors, counts, method)

    def _merge_voxels(self, factors: tuple[int, ...], count: int, method: str) -> LevelHistograms:
        """The first level from whole windows of voxels: the mixed windows' voxels are sorted
        together (a sorting network over the windows' columns) and run-length counted."""
        out_shape = downscale_shape(self.values.shape, factors)
        columns = window_columns(self.values, factors, out_shape)
        mixed = np.flatnonzero(~_all_equal(columns))
        values = columns[0].reshape(out_shape).copy()
        uniform = np.ones(values.size, bool)
        empty = np.empty(0, np.int64)
        if not mixed.size:
            return LevelHistograms(values, uniform.reshape(out_shape), count, empty, np.empty(0, values.dtype), empty)
        uniform[mixed] = False
        rows = np.stack(sorted_columns(list(columns[:, mixed])), axis=1)  # one sorted window per row
        start = np.ones(rows.shape, bool)
        np.not_equal(rows[:, 1:], rows[:, :-1], out=start[:, 1:])
        positions = np.flatnonzero(start)
        window = positions // rows.shape[1]
        value = rows.reshape(-1)[positions]
        run = np.diff(np.r_[positions, rows.size])
        if method == "median":
            values.reshape(-1)[mixed] = rows[:, (count - 1) // 2]
        else:
            values.reshape(-1)[mixed] = pick(window, value, run, mixed.size, None, method)
        return LevelHistograms(values, uniform.reshape(out_shape), count, mixed[window], value, run)

    def _merge_histograms(self, factors: tuple[int, ...], counts: np.ndarray | int, method: str) -> LevelHistograms:
        """The next level from this level's uniform values and mixed windows' histograms. Partial
        windows at the edge are padded with copies of their last child (count 0), which changes
        neither their uniformity nor their histogram."""
        shape = self.values.shape
        out_shape = downscale_shape(shape, factors)
        pad = [(0, n * f - s) for n, f, s in zip(out_shape, factors, shape)]
        padded = any(high for _, high in pad)

        def columns_of(array: np.ndarray, fill: str | int) -> np.ndarray:
            if padded:
                array = np.pad(array, pad, mode="edge") if fill == "edge" else np.pad(array, pad, constant_values=fill)
            return window_columns(array, factors, out_shape)

        values = columns_of(self.values, "edge")
        uniform = np.ones(values.shape, bool) if self.uniform is None else columns_of(self.uniform, "edge")
        children = columns_of(np.broadcast_to(self.counts, shape), 0) if padded or not isinstance(self.counts, int) else None
        same = _all_equal(values) & uniform.all(axis=0)
        mixed = np.flatnonzero(~same)
        out_values = values[0].reshape(out_shape).copy()
        empty = np.empty(0, np.int64)
        if not mixed.size:
            return LevelHistograms(out_values, same.reshape(out_shape), counts, empty, np.empty(0, values.dtype), empty)
        take = uniform[:, mixed]  # uniform children of mixed parents: one entry each
        parents = [np.broadcast_to(np.arange(mixed.size), take.shape)[take]]
        entries = [values[:, mixed][take]]
        weights = [np.full(len(parents[0]), self.counts, np.int64) if children is None
                   else children[:, mixed][take].astype(np.int64)]
        if self.window.size:  # mixed children: their own entries
            rank = np.full(same.size, -1, np.int64)
            rank[mixed] = np.arange(mixed.size)
            child = np.unravel_index(self.window, shape)
            parents.append(rank[np.ravel_multi_index(tuple(c // f for c, f in zip(child, factors)), out_shape)])
            entries.append(self.value)
            weights.append(self.count)
        window, value, count = distinct_counts(np.concatenate(parents), np.concatenate(entries),
                                               np.concatenate(weights), mixed.size)
        totals = np.full(mixed.size, counts, np.int64) if isinstance(counts, int) else counts.reshape(-1)[mixed].astype(np.int64)
        out_values.reshape(-1)[mixed] = pick(window, value, count, mixed.size, totals, method)
        return LevelHistograms(out_values, same.reshape(out_shape), counts, mixed[window], value, count)


def window_columns(array: np.ndarray, factors: tuple[int, ...], out_shape: tuple[int, ...]) -> np.ndarray:
    """`array` (a whole number of windows along every axis) as a new `(prod(factors), windows)`
    array: row k holds window offset k's (C order) element of every window (C order)."""
    interleaved = [v for pair in zip(out_shape, factors) for v in pair]
    axes = [*range(1, 2 * array.ndim, 2), *range(0, 2 * array.ndim, 2)]
    return np.ascontiguousarray(array.reshape(interleaved).transpose(axes)).reshape(math.prod(factors), -1)


def _all_equal(columns: np.ndarray) -> np.ndarray:
    """Whether each column's elements all have the same bits."""
    bits = columns.view(f"u{columns.dtype.itemsize}") if columns.dtype.kind != "b" else columns
    same = bits[1] == bits[0] if len(bits) > 1 else np.ones(bits.shape[1], bool)
    for row in bits[2:]:
        same &= row == bits[0]
    return same


def distinct_counts(parents: np.ndarray, values: np.ndarray, counts: np.ndarray,
                    n_parents: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum `counts` per distinct (parent, value): (parent, value, total) triples, unordered,
    without the zero totals of padding. A few rounds each take one value of every parent (the
    last one scattered there) and remove its entries, with no sort; windows with more distinct
    values than that are sorted.

    >>> distinct_counts(np.array([0, 0, 1, 0]), np.array([7, 9, 4, 7]), np.array([1, 2, 3, 4]), 2)
    (array([0, 1, 0]), array([7, 4, 9]), array([5, 3, 2]))
    """
    out_parents, out_values, out_counts = [], [], []
    candidate = np.empty(n_parents, values.dtype)
    for _ in range(_ROUNDS):
        if not parents.size:
            break
        candidate[parents] = values
        same = values == candidate[parents]
        chosen = parents[same]
        totals = np.bincount(chosen, weights=counts[same], minlength=n_parents)  # float64: exact below 2**53
        present = np.flatnonzero(totals)
        out_parents.append(present)
        out_values.append(candidate[present])
        out_counts.append(totals[present].astype(np.int64))
        keep = ~same
        parents, values, counts = parents[keep], values[keep], counts[keep]
    if parents.size:
        order = np.lexsort((values, parents))
        parents, values, counts = parents[order], values[order], counts[order]
        starts = np.flatnonzero(np.r_[True, (parents[1:] != parents[:-1]) | (values[1:] != values[:-1])])
        sums = np.add.reduceat(counts, starts)
        real = sums > 0
        out_parents.append(parents[starts][real])
        out_values.append(values[starts][real])
        out_counts.append(sums[real])
    return np.concatenate(out_parents), np.concatenate(out_values), np.concatenate(out_counts)


def pick(parents: np.ndarray, values: np.ndarray, counts: np.ndarray, n_parents: int,
         totals: np.ndarray | None, method: str) -> np.ndarray:
    """Each parent's mode (highest count, lowest value on a tie) or median (lower middle value:
    position `(total - 1) // 2` of its sorted voxels, `totals` per parent) from its distinct
    (value, count) pairs, in any order; every parent 0..n_parents-1 must have one.

    >>> args = np.array([0, 0, 1, 1]), np.array([7, 2, 5, 6]), np.array([2, 2, 1, 3])
    >>> pick(*args, 2, None, "mode"), pick(*args, 2, np.array([4, 4]), "median")
    (array([2, 6]), array([2, 6]))
    """
    if method == "mode":
        best = np.zeros(n_parents, np.int64)
        np.maximum.at(best, parents, counts)
        top = counts == best[parents]
        lowest = np.full(n_parents, np.iinfo(values.dtype).max, values.dtype)
        np.minimum.at(lowest, parents[top], values[top])
        return lowest
    order = np.lexsort((values, parents))
    parents, values, counts = parents[order], values[order], counts[order]
    starts = np.flatnonzero(np.r_[True, parents[1:] != parents[:-1]])
    cumulative = np.cumsum(counts)
    before = np.repeat(cumulative[starts] - counts[starts], np.diff(np.r_[starts, parents.size]))
    target = ((totals - 1) // 2)[parents]  # the median's position within its window
    past = np.flatnonzero(cumulative - before > target)
    first_past = past[np.r_[True, parents[past][1:] != parents[past][:-1]]]
    return values[first_past]
