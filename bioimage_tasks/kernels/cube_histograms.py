"""The first two levels of an integer `mode`/`median` pyramid of 2x2x2 windows, exactly, at the
speed of a label volume's common case: most windows hold one value, and most of the others two.

Level 1 keeps every window of at most two distinct values densely: its mode (or median) and
that value's count (`n_a`) and the other value and count (`b`, `n_b`, 0 for a uniform window),
so nothing but the level itself, two counts and one value are written; only windows of
three or more values get a histogram (`kind`: its index, else -1). Level 2 then tests every
parent for "at most two values" in a vectorised pass over its eight children's dense entries (16
value and count pairs, selects and compares only); just the parents that fail (a child with a
histogram, a third value, the array's edge) merge their children's histograms as `histogram.py`
does.
Level 2 comes out as `LevelHistograms` for the deeper levels. Compiled, the GIL released.
"""

from __future__ import annotations

import numba
import numpy as np

from bioimage_tasks.kernels.histogram import _distinct_pairs, _pick
from bioimage_tasks.kernels.voxel_histograms import (
    _ALL_UNIFORM,
    _count_pairs,
    _dense_entries,
    _entries_of_window,
    _gather,
    _grown,
    _two_pairs,
    _two_values,
)

_SLAB_WINDOWS = 2**17  # level 1 windows per slab: their dense entries (~0.5-1.5 MB) stay in cache


def first_two_levels(voxels: np.ndarray, median: bool):
    """Levels 1 and 2 of C-ordered integer `voxels` (at least three axes; the last three reduced
    by 2 per level, the leading ones kept): (level 1 values, level 2 values, its offsets, pair
    values, pair counts) as `LevelHistograms` holds them. Computed slab by slab along the third
    last axis, so that level 1's dense entries live in small buffers that stay in cache."""
    shape = voxels.shape
    stacked = voxels.reshape(-1, *shape[-3:])
    first_shape = (stacked.shape[0], *(-(-n // 2) for n in shape[-3:]))
    second_shape = (stacked.shape[0], *(-(-n // 2) for n in first_shape[1:]))
    modes = np.empty(first_shape, voxels.dtype)
    second = np.empty(second_shape, voxels.dtype)
    planes = max(1, _SLAB_WINDOWS // (first_shape[2] * first_shape[3]))  # level 2 planes per slab
    slab_shape = (1, 2 * planes, *first_shape[2:])
    b = np.empty(slab_shape, voxels.dtype)
    n_a, n_b = np.empty(slab_shape, np.uint8), np.empty(slab_shape, np.uint8)
    kind = np.empty(slab_shape, np.int32)
    offsets, pair_values, pair_counts, used = [np.zeros(1, np.int64)], [], [], 0
    for stack in range(stacked.shape[0]):
        for plane in range(0, second_shape[1], planes):
            first_planes = slice(2 * plane, min(first_shape[1], 2 * plane + 2 * planes))
            n_first = first_planes.stop - first_planes.start
            slab_modes = modes[stack, first_planes][None]
            entries = (b[:, :n_first], n_a[:, :n_first], n_b[:, :n_first], kind[:, :n_first])
            slab = stacked[stack, 4 * plane : 4 * plane + 4 * planes][None]
            pairs, counts, starts = _dense_first_level(
                slab, median, slab_modes, entries[1], entries[0], entries[2], entries[3]
            )
            slab_second = second[stack, plane : plane + planes][None]
            slab_offsets = np.empty(slab_second.size + 1, np.int64)
            values, value_counts = _dense_second_level(
                slab_modes,
                entries[1],
                entries[0],
                entries[2],
                entries[3],
                starts,
                pairs,
                counts,
                median,
                slab_second,
                slab_offsets,
            )
            offsets.append(slab_offsets[1:] + used)
            pair_values.append(values)
            pair_counts.append(value_counts)
            used += values.size
    return (
        modes.reshape(*shape[:-3], *first_shape[1:]),
        second.reshape(*shape[:-3], *second_shape[1:]),
        np.concatenate(offsets),
        np.concatenate(pair_values),
        np.concatenate(pair_counts),
    )


@numba.njit(nogil=True, cache=True)
def _dense_first_level(voxels, median, modes, n_a, b, n_b, kind):
    """Level 1: `modes` and the dense entries of every window; returns the histograms of those
    with three or more values (`kind` >= 0): pairs, counts and where each one's pairs start
    (then the end)."""
    depth, height, width = voxels.shape[1:]
    out_width = modes.shape[3]
    full = width // 2
    pair_values = np.empty(max(1024, modes.size // 16), voxels.dtype)
    pair_counts = np.empty(pair_values.size, np.int64)
    rows = np.empty((8, full), voxels.dtype)
    lows, others = np.empty(full, voxels.dtype), np.empty(full, voxels.dtype)
    n_lows, n_others = np.zeros(full, np.uint8), np.zeros(full, np.uint8)
    simple = np.ones(-(-out_width // 8) * 8, np.uint8)  # whole words: padding "simple"
    words = simple.view(np.uint64)
    window = np.empty(8, voxels.dtype)
    starts = np.empty(1025, np.int64)
    n_hard = 0
    used = 0
    parent = 0
    for stack in range(modes.shape[0]):
        cube = voxels[stack]
        for out_z in range(modes.shape[1]):
            z, n_z = 2 * out_z, min(2, depth - 2 * out_z)
            for out_y in range(modes.shape[2]):
                y, n_y = 2 * out_y, min(2, height - 2 * out_y)
                if used + out_width * 8 > pair_values.size:
                    capacity = 2 * pair_values.size + out_width * 8
                    pair_values, pair_counts = (
                        _grown(pair_values, used, capacity),
                        _grown(pair_counts, used, capacity),
                    )
                if n_hard + out_width >= starts.size:
                    starts = _grown(starts, n_hard, 2 * starts.size + out_width)
                at = (stack, out_z, out_y)
                cubic = n_z == 2 and n_y == 2
                if cubic:
                    _two_values(cube, z, y, full, rows, lows, others, n_lows, n_others, simple)
                    _dense_entries(
                        lows,
                        n_lows,
                        others,
                        n_others,
                        median,
                        modes[at],
                        n_a[at],
                        b[at],
                        n_b[at],
                        kind[at],
                        simple,
                    )
                simple[full if cubic else 0 : out_width] = 0  # the rest: gathered one by one
                for word in range(words.size):
                    if words[word] == _ALL_UNIFORM:
                        continue
                    for out_x in range(8 * word, min(8 * word + 8, out_width)):
                        if simple[out_x]:
                            continue
                        n = _gather(
                            cube, z, n_z, y, n_y, 2 * out_x, min(2, width - 2 * out_x), window
                        )
                        before = used
                        modes[at][out_x], used = _count_pairs(
                            window, n, median, pair_values, pair_counts, used
                        )
                        _entries_of_window(
                            window,
                            n,
                            used - before,
                            pair_values,
                            pair_counts,
                            before,
                            out_x,
                            modes[at],
                            n_a[at],
                            b[at],
                            n_b[at],
                            kind[at],
                        )
                        if used - before == 2:  # two values: kept densely, not as a histogram
                            used = before
                        elif used > before:
                            kind[at][out_x], starts[n_hard] = n_hard, before
                            n_hard += 1
                parent += out_width
    starts[n_hard] = used
    return pair_values[:used], pair_counts[:used], starts[: n_hard + 1]


@numba.njit(nogil=True, cache=True)
def _dense_second_level(a, n_a, b, n_b, kind, starts, pairs, counts, median, modes, out_offsets):
    """Level 2 from level 1's dense entries and histograms: `modes`, `out_offsets` and the
    returned pairs of its mixed windows (CSR, as `LevelHistograms`)."""
    depth, height, width = a.shape[1:]
    out_width = modes.shape[3]
    full = width // 2
    pair_values = np.empty(max(1024, modes.size), a.dtype)
    pair_counts = np.empty(pair_values.size, np.int64)
    entries = np.empty((16, full), a.dtype)
    weights = np.empty((16, full), np.int32)
    child_kinds = np.empty((8, full), np.uint8)
    lows, others = np.empty(full, a.dtype), np.empty(full, a.dtype)
    n_lows, n_others, totals = (
        np.zeros(full, np.int32),
        np.zeros(full, np.int32),
        np.zeros(full, np.int32),
    )
    skip = np.ones(-(-out_width // 8) * 8, np.uint8)
    words = skip.view(np.uint64)
    simple = np.zeros(full, np.uint8)
    values, weights_of = np.empty(64, a.dtype), np.empty(64, np.int64)
    used = 0
    parent = 0
    for stack in range(modes.shape[0]):
        for out_z in range(modes.shape[1]):
            z, n_z = 2 * out_z, min(2, depth - 2 * out_z)
            for out_y in range(modes.shape[2]):
                y, n_y = 2 * out_y, min(2, height - 2 * out_y)
                most = out_width * 64
                if used + most > pair_values.size:
                    capacity = 2 * pair_values.size + most
                    pair_values, pair_counts = (
                        _grown(pair_values, used, capacity),
                        _grown(pair_counts, used, capacity),
                    )
                cubic = n_z == 2 and n_y == 2
                out_row = modes[stack, out_z, out_y]
                if cubic:
                    _split_children(
                        a[stack],
                        n_a[stack],
                        b[stack],
                        n_b[stack],
                        kind[stack],
                        z,
                        y,
                        full,
                        entries,
                        weights,
                        child_kinds,
                    )
                    _two_of_sixteen(
                        entries,
                        weights,
                        child_kinds,
                        median,
                        lows,
                        n_lows,
                        others,
                        n_others,
                        simple,
                        out_row,
                        skip,
                        totals,
                    )
                skip[full if cubic else 0 : out_width] = 0
                last = 0
                for word in range(words.size):
                    if words[word] == _ALL_UNIFORM:
                        continue
                    for out_x in range(8 * word, min(8 * word + 8, out_width)):
                        if skip[out_x]:
                            continue
                        for index in range(parent + last, parent + out_x + 1):
                            out_offsets[index] = used
                        last = out_x + 1
                        if cubic and out_x < full and simple[out_x]:
                            out_row[out_x], used = _two_pairs(
                                lows[out_x],
                                n_lows[out_x],
                                others[out_x],
                                n_others[out_x],
                                median,
                                pair_values,
                                pair_counts,
                                used,
                            )
                            continue
                        n = _gather_children(
                            a[stack],
                            n_a[stack],
                            b[stack],
                            n_b[stack],
                            kind[stack],
                            starts,
                            pairs,
                            counts,
                            z,
                            n_z,
                            y,
                            n_y,
                            2 * out_x,
                            min(2, width - 2 * out_x),
                            values,
                            weights_of,
                        )
                        start = used
                        used, total = _distinct_pairs(
                            values, weights_of, n, pair_values, pair_counts, used
                        )
                        out_row[out_x] = _pick(pair_values, pair_counts, start, used, total, median)
                        if used - start == 1:  # one value after all: uniform, no pairs
                            used = start
                for index in range(parent + last, parent + out_width):
                    out_offsets[index] = used
                parent += out_width
    out_offsets[parent] = used
    return pair_values[:used], pair_counts[:used]


@numba.njit(nogil=True, cache=True, inline="always")
def _split_children(a, n_a, b, n_b, kind, z, y, full, entries, weights, hard):
    """The 16 dense entries (and 8 kinds) of the children of a row of full parents, one
    contiguous row each, so that `_two_of_sixteen` reads them as vectors."""
    for source in range(4):
        at = (z + source // 2, y + source % 2)
        row_a, row_na, row_b, row_nb, row_kind = a[at], n_a[at], b[at], n_b[at], kind[at]
        for half in range(2):
            slot = 2 * source + half
            target_a, target_b = entries[2 * slot], entries[2 * slot + 1]
            weight_a, weight_b = weights[2 * slot], weights[2 * slot + 1]
            kinds = hard[slot]
            for k in range(full):
                target_a[k] = row_a[2 * k + half]
                target_b[k] = row_b[2 * k + half]
                weight_a[k] = row_na[2 * k + half]
                weight_b[k] = row_nb[2 * k + half]
                kinds[k] = row_kind[2 * k + half] >= 0


@numba.njit(nogil=True, cache=True, inline="always")
def _two_of_sixteen(
    entries, weights, hard, median, lows, n_lows, others, n_others, simple, out_row, skip, totals
):
    """For each full parent of a row: whether its children (no histogram among them) hold at most
    two values (`simple`), those values and counts, its mode or median, and `skip` (uniform).
    Every loop runs along the row (contiguous, independent parents): vectorised."""
    full = lows.size
    first = entries[0]
    for k in range(full):
        lows[k], others[k], n_lows[k], n_others[k], totals[k], simple[k] = (
            first[k],
            first[k],
            0,
            0,
            0,
            0,
        )
    for slot in range(16):
        row, row_weights = entries[slot], weights[slot]
        for k in range(full):
            value = row[k]
            others[k] = value if value != lows[k] else others[k]
            n_lows[k] += row_weights[k] * (value == lows[k])
            totals[k] += row_weights[k]
    for slot in range(16):
        row, row_weights = entries[slot], weights[slot]
        for k in range(full):
            n_others[k] += row_weights[k] * (row[k] == others[k])
    for slot in range(8):
        kinds = hard[slot]
        for k in range(full):
            simple[k] |= kinds[k]
    for k in range(full):
        low, other, n_low, total = lows[k], others[k], n_lows[k], totals[k]
        n_other = n_others[k] if other != low else 0
        n_others[k] = n_other
        few = (simple[k] == 0) & (n_low + n_other == total)
        simple[k] = few
        skip[k] = few & (n_other == 0)
        smaller, n_smaller = (other, n_other) if other < low else (low, n_low)
        larger, n_larger = (low, n_low) if other < low else (other, n_other)
        take_larger = (2 * n_smaller <= total - 1) if median else (n_larger > n_smaller)
        out_row[k] = larger if take_larger else smaller


@numba.njit(nogil=True, cache=True, inline="always")
def _gather_children(
    a, n_a, b, n_b, kind, starts, pairs, counts, z, n_z, y, n_y, x, n_x, values, weights
):
    """The (value, count) pairs of a parent's children (cut by the edge): a child's dense
    entries, or its histogram (number `kind` in `starts`). Returns how many."""
    n = 0
    for dz in range(n_z):
        for dy in range(n_y):
            for dx in range(n_x):
                at = (z + dz, y + dy, x + dx)
                j = kind[at]
                if j >= 0:
                    for pair in range(starts[j], starts[j + 1]):
                        values[n], weights[n] = pairs[pair], counts[pair]
                        n += 1
                else:
                    values[n], weights[n] = a[at], n_a[at]
                    n += 1
                    if n_b[at]:
                        values[n], weights[n] = b[at], n_b[at]
                        n += 1
    return n
