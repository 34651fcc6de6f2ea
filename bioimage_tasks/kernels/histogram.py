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
        """The next level, windows of `factors` of this level's windows holding `counts` voxels.
        Partial windows at the edge are padded with copies of their last child (count 0), which
        changes neither their uniformity nor their histogram."""
        shape = self.values.shape
        out_shape = downscale_shape(shape, factors)
        pad = [(0, n * f - s) for n, f, s in zip(out_shape, factors, shape)]
        padded = any(high for _, high in pad)
        values = np.pad(self.values, pad, mode="edge") if padded else self.values
        corners, same = uniform_windows(values, factors)
        uniform = None if self.uniform is None else np.pad(self.uniform, pad, mode="edge") if padded else self.uniform
        if uniform is not None:
            same &= all_windows(uniform, factors)
        out_values = corners.copy()
        mixed = np.flatnonzero(~same)
        empty = np.empty(0, np.int64)
        if not mixed.size:
            return LevelHistograms(out_values, same, counts, empty, np.empty(0, values.dtype), empty)
        children = window_children(values, factors, mixed)
        if uniform is None and not padded and self.counts == 1:  # voxels: sort each mixed window
            ordered = sorted_columns(list(children))  # each window's voxels, sorted (children is scratch now)
            window, value, count = _runs(ordered)
            middle = ordered[(len(ordered) - 1) // 2]  # all windows whole: the median is the middle voxel
            out_values.reshape(-1)[mixed] = middle if method == "median" else _longest_run(ordered)
            return LevelHistograms(out_values, same, counts, mixed[window], value, count)
        take = np.ones(children.shape, bool) if uniform is None else window_children(uniform, factors, mixed)
        parents = [np.broadcast_to(np.arange(mixed.size), take.shape)[take]]  # uniform children: one entry each
        entries = [children[take]]
        if isinstance(self.counts, int) and not padded:
            weights = [np.full(len(parents[0]), self.counts, np.int64)]
        else:
            child_counts = np.pad(np.broadcast_to(self.counts, shape), pad) if padded else np.broadcast_to(self.counts, shape)
            weights = [window_children(child_counts, factors, mixed)[take].astype(np.int64)]
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
        return LevelHistograms(out_values, same, counts, mixed[window], value, count)


def _runs(ordered: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(window, value, count) of the distinct values of each window, from its sorted voxels
    (`ordered[k]`: the k-th smallest voxel of every window), run-length counted."""
    rows = np.stack(ordered, axis=1)  # one sorted window per row
    start = np.ones(rows.shape, bool)
    np.not_equal(rows[:, 1:], rows[:, :-1], out=start[:, 1:])
    positions = np.flatnonzero(start)
    return positions // rows.shape[1], rows.reshape(-1)[positions], np.diff(np.r_[positions, rows.size])


def _longest_run(ordered: list[np.ndarray]) -> np.ndarray:
    """Each window's mode from its sorted voxels: the value of its longest run, the first (lowest)
    one on a tie."""
    best, best_length = ordered[0].copy(), np.ones(ordered[0].shape, np.int64)
    run = best_length.copy()
    for previous, current in zip(ordered, ordered[1:]):
        run *= current == previous
        run += 1
        longer = run > best_length
        np.copyto(best, current, where=longer)
        np.maximum(best_length, run, out=best_length)
    return best


def _along(array: np.ndarray, axis: int, start: int, step: int) -> np.ndarray:
    return array[(slice(None),) * axis + (slice(start, None, step),)]


def uniform_windows(values: np.ndarray, factors: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(first element, whether all elements have the same bits) of every window of `factors` of
    `values` (whole windows only), reduced one axis at a time (last first) on strided views.

    >>> uniform_windows(np.array([[1, 1, 2, 3], [1, 1, 2, 2]]), (2, 2))
    (array([[1, 2]]), array([[ True, False]]))
    """
    bits = values.view(f"u{values.dtype.itemsize}") if values.dtype.kind != "b" else values
    firsts, same = bits, None
    for axis in reversed(range(values.ndim)):
        step = factors[axis]
        if step == 1:
            continue
        head = _along(firsts, axis, 0, step)
        equal = _along(firsts, axis, 1, step) == head
        for offset in range(2, step):
            equal &= _along(firsts, axis, offset, step) == head
        if same is not None:
            for offset in range(step):
                equal &= _along(same, axis, offset, step)
        firsts, same = head, equal
    if same is None:
        same = np.ones(values.shape, bool)
    return firsts.view(values.dtype), same


def all_windows(flags: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """Whether every element of each window of `factors` of the bool array `flags` is set."""
    for axis in reversed(range(flags.ndim)):
        step = factors[axis]
        reduced = _along(flags, axis, 0, step).copy()
        for offset in range(1, step):
            reduced &= _along(flags, axis, offset, step)
        flags = reduced
    return flags


def window_children(array: np.ndarray, factors: tuple[int, ...], windows: np.ndarray) -> np.ndarray:
    """`(prod(factors), len(windows))`: row k holds window offset k's (C order) element of each
    of `windows` (flat indices over the windows of `array`, whole windows only)."""
    out_shape = tuple(n // f for n, f in zip(array.shape, factors))
    steps = np.cumprod((1, *array.shape[:0:-1]))[::-1]  # elements per step along each axis
    corner = np.zeros(windows.size, np.int64)
    for index, factor, step in zip(np.unravel_index(windows, out_shape), factors, steps):
        corner += index * (factor * int(step))
    flat = np.ascontiguousarray(array).reshape(-1)
    return np.stack([flat.take(corner + int(np.dot(offset, steps))) for offset in np.ndindex(*factors)])


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
