"""Exact window histograms carried from one pyramid level to the next, for integer `mode` and
`median`. A window whose voxels all hold one value (most windows of a label volume) is stored
as that value alone; only the other ("mixed") windows keep a histogram, as (window, value,
count) triples. A parent window is uniform when its children are uniform with one value; a mixed
parent's histogram is the sum of its children's (a uniform child counts as one value), so every
level's mode or median is that of the base's window, at a cost that follows the number of
distinct (window, value) pairs rather than the number of voxels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bioimage_tasks.geometry import downscale_shape
from bioimage_tasks.kernels.window import sorted_columns, window_offsets

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
        """The first level from whole windows of voxels: a mixed window's voxels are gathered
        into a column, the columns sorted together (a sorting network) and run-length counted."""
        values, uniform = self._uniform_parents(factors)
        mixed = np.flatnonzero(~uniform)
        empty = np.empty(0, np.int64)
        if not mixed.size:
            return LevelHistograms(values, uniform, count, empty, np.empty(0, values.dtype), empty)
        steps = np.cumprod((1, *self.values.shape[:0:-1]))[::-1]  # voxels per step along each axis
        corner = sum(c * (f * step) for c, f, step in zip(np.unravel_index(mixed, uniform.shape), factors, steps))
        flat = self.values.reshape(-1)
        rows = [flat[corner + int(np.dot(offset, steps))] for offset in np.ndindex(*factors)]
        columns = np.stack(sorted_columns(rows), axis=1)  # one sorted window per row
        start = np.ones(columns.shape, bool)
        np.not_equal(columns[:, 1:], columns[:, :-1], out=start[:, 1:])
        positions = np.flatnonzero(start)
        window = positions // columns.shape[1]
        value = columns.reshape(-1)[positions]
        run = np.diff(np.r_[positions, columns.size])
        if method == "median":
            values.reshape(-1)[mixed] = columns[:, (count - 1) // 2]
        else:
            values.reshape(-1)[mixed] = pick(window, value, run, mixed.size, None, method)
        return LevelHistograms(values, uniform, count, mixed[window], value, run)

    def _uniform_parents(self, factors: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Each parent's first child's value, and whether all its children are uniform with it."""
        (_, first), *others = window_offsets(self.values.shape, factors)
        values = self.values[first].copy()
        uniform = np.ones(values.shape, bool) if self.uniform is None else self.uniform[first].copy()
        for dst, src in others:
            uniform[dst] &= self.values[src] == values[dst]
            if self.uniform is not None:
                uniform[dst] &= self.uniform[src]
        return values, uniform

    def _merge_histograms(self, factors: tuple[int, ...], counts: np.ndarray | int, method: str) -> LevelHistograms:
        """The next level from this level's uniform values and mixed windows' histograms."""
        out_shape = downscale_shape(self.values.shape, factors)
        values, uniform = self._uniform_parents(factors)
        mixed = np.flatnonzero(~uniform)
        empty = np.empty(0, np.int64)
        if not mixed.size:
            return LevelHistograms(values, uniform, counts, empty, np.empty(0, values.dtype), empty)
        rank = np.full(values.size, -1, np.int64)  # mixed window -> its position in `mixed`
        rank[mixed] = np.arange(mixed.size)
        rank = rank.reshape(out_shape)
        parents, entries, weights = self._child_entries(factors, out_shape, rank)
        window, value, count = distinct_counts(parents, entries, weights, mixed.size)
        picked = pick(window, value, count, mixed.size, _flat_counts(counts, mixed), method)
        values.reshape(-1)[mixed] = picked
        return LevelHistograms(values, uniform, counts, mixed[window], value, count)

    def _child_entries(self, factors: tuple[int, ...], out_shape: tuple[int, ...],
                       rank: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mixed parent rank, value, count) for every value of the mixed parents' children: one
        triple per uniform child, a mixed child's own triples."""
        parents, entries, weights = [], [], []
        for dst, src in window_offsets(self.values.shape, factors):
            owner = rank[dst]
            take = owner >= 0
            if self.uniform is not None:
                take &= self.uniform[src]
            parents.append(owner[take])
            entries.append(self.values[src][take])
            if isinstance(self.counts, int):
                weights.append(np.full(len(parents[-1]), self.counts, np.int64))
            else:
                weights.append(self.counts[src][take].astype(np.int64))
        if self.window.size:
            child = np.unravel_index(self.window, self.values.shape)
            parent = tuple(c // f for c, f in zip(child, factors))
            parents.append(rank[parent])
            entries.append(self.value)
            weights.append(self.count)
        return np.concatenate(parents), np.concatenate(entries), np.concatenate(weights)


def distinct_counts(parents: np.ndarray, values: np.ndarray, counts: np.ndarray,
                    n_parents: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum `counts` per distinct (parent, value): (parent, value, total) triples, unordered.
    A few rounds each take one value of every parent (the last one scattered there) and remove
    its entries, with no sort; windows with more distinct values than that are sorted.

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
        present = np.flatnonzero(totals)  # every count is >= 1
        out_parents.append(present)
        out_values.append(candidate[present])
        out_counts.append(totals[present].astype(np.int64))
        keep = ~same
        parents, values, counts = parents[keep], values[keep], counts[keep]
    if parents.size:
        order = np.lexsort((values, parents))
        parents, values, counts = parents[order], values[order], counts[order]
        starts = np.flatnonzero(np.r_[True, (parents[1:] != parents[:-1]) | (values[1:] != values[:-1])])
        out_parents.append(parents[starts])
        out_values.append(values[starts])
        out_counts.append(np.add.reduceat(counts, starts))
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
        lowest = np.full(n_parents, _largest(values.dtype), values.dtype)
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


def _largest(dtype: np.dtype) -> int:
    return int(np.iinfo(dtype).max)


def _flat_counts(counts: np.ndarray | int, windows: np.ndarray) -> np.ndarray:
    """In-bounds voxels of each of `windows` (flat indices)."""
    if isinstance(counts, int):
        return np.full(windows.size, counts, np.int64)
    return counts.reshape(-1)[windows].astype(np.int64)
