"""Pure per-block window downsampling: tensorstore's `downsample` driver evaluated on one
window-aligned block. No I/O, no Prefect, no Dask.

Every output voxel reduces one window of `factors` input voxels; the output shape is
`ceil(shape / factors)` and a partial window at the array edge reduces only its in-bounds voxels.
Because the block's origin lies on the window grid, its windows are exactly the array's windows,
so reducing blocks independently and pasting the results equals reducing the whole array.

Semantics, each checked against `tensorstore.downsample(tensorstore.array(x), factors, method)`:
- `mean`: integers (and bool) round to nearest, ties to even, computed exactly from an integer
  sum (64-bit types split into 32-bit halves, so uint64/int64 never overflow or go through
  float64). Floats accumulate in their own dtype, one window voxel after the other in C order
  starting from +0.0, then divide by the count, which is what tensorstore does bit for bit.
- `min`/`max`: floats fold `x < acc` (`x > acc`) from +inf (-inf) like tensorstore, so NaN is
  skipped, an all-NaN window gives +inf (-inf) and of +0.0/-0.0 the first one wins.
- `median`: the lower middle value of the sorted window (index `(count - 1) // 2`).
- `mode`: the most frequent value, the lowest one on a tie.
- `stride`: the window's first voxel.
With all factors 1 every method returns the array unchanged, as tensorstore does.
A float window holding NaN (or both +0.0 and -0.0) has no well-defined median or mode:
tensorstore's comes out of libstdc++'s `std::nth_element`/`std::sort` with `<` over the window in
its buffer order, which replay.py replays (so NaN may or may not win, as there: the median of
[NaN, 1] is NaN, of [1, NaN] 1). That order depends on which axes of the whole array are longer
than 1: give a block's `array_shape`. Everything is exact for bool, (u)int8-64 and float32/64.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from functools import lru_cache

import numpy as np

from bioimage_tasks.geometry import downscale_shape
from bioimage_tasks.kernels.replay import replay_windows, special_windows, window_axis_order
from bioimage_tasks.kernels.sums import window_means

METHODS = ("mean", "mode", "min", "max", "median", "stride")

SUPPORTED_DTYPES = frozenset(
    np.dtype(t)
    for t in (
        "bool",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "int8",
        "int16",
        "int32",
        "int64",
        "float32",
        "float64",
    )
)
_MAX_NETWORK = 32  # windows up to this many voxels are sorted by a vectorised sorting network
_LOW32 = 0xFFFFFFFF
_SLAB_BYTES = 2**19  # input bytes reduced at a time, so that a slab's passes run in cache
_MAX_MIXED = 0.5  # mode/median sort only a slab's mixed windows when at most this share is mixed


def window_reduce(
    block: np.ndarray, factors: Sequence[int], method: str, array_shape: Sequence[int] | None = None
) -> np.ndarray:
    """Reduce every `factors` window of `block` with `method`, exactly as tensorstore's
    `downsample` driver does; `block`'s origin must lie on the window grid. `array_shape` is the
    shape of the array `block` is part of (default: `block`'s own), which float median and mode
    of windows with NaN depend on. Either byte order of a supported dtype works.

    Returns an array of shape `downscale_shape(block.shape, factors)` and `block`'s dtype.

    >>> x = np.array([[1, 2, 2, 7, 9], [3, 2, 7, 8, 9]], dtype=np.uint8)
    >>> window_reduce(x, (2, 2), "mode")
    array([[2, 7, 9]], dtype=uint8)
    >>> window_reduce(np.array([-3, -2, 3, 4, 7], dtype=np.int16), (2,), "mean")  # ties to even
    array([-2,  4,  7], dtype=int16)
    """
    block = np.asarray(block)
    factors = tuple(int(f) for f in factors)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if len(factors) != block.ndim or any(f < 1 for f in factors):
        raise ValueError(f"factors {factors} must be {block.ndim} integers >= 1")
    if block.dtype.newbyteorder("=") not in SUPPORTED_DTYPES:  # either byte order
        raise TypeError(f"unsupported dtype {block.dtype}")
    if math.prod(factors) >= 2**31:
        raise ValueError(f"windows of {math.prod(factors)} voxels are too large")
    if method == "stride" or math.prod(factors) == 1 or not block.size:
        # each window's first voxel; with all factors 1 tensorstore returns the array as it is (no
        # float rounding of a lone -0.0 or NaN). The Ellipsis keeps a 0-d result an array.
        return block[(..., *(slice(None, None, f) for f in factors))].copy()
    if not block.dtype.isnative:  # ">u2" of zarr v2, say: reduced in native order, returned as is
        native = block.astype(block.dtype.newbyteorder("="))
        return window_reduce(native, factors, method, array_shape).astype(block.dtype)
    if method == "mean" and block.dtype.kind in "biu" and block.dtype.itemsize < 8:
        return window_means(block, factors)  # compiled exact sums, in one pass (no slabs)
    array_shape = block.shape if array_shape is None else tuple(array_shape)
    if len(array_shape) != block.ndim:
        raise ValueError(f"array_shape {array_shape} must have {block.ndim} entries")
    axis_order = window_axis_order(array_shape, factors)
    out = np.empty(downscale_shape(block.shape, factors), block.dtype)
    for dst, slab in _slabs(block, factors):
        out[dst] = _reduce(slab, factors, method, axis_order)
    return out


def _slabs(block: np.ndarray, factors: tuple[int, ...]) -> Iterator[tuple[slice, np.ndarray]]:
    """(output rows, input slab) for slabs of whole windows along the first axis of about
    `_SLAB_BYTES` each: reduced one after the other, each pass's operands and temporaries stay in
    cache (up to twice as fast as a whole 128**3 block at once)."""
    plane_bytes = factors[0] * math.prod(block.shape[1:]) * block.dtype.itemsize
    planes = max(1, _SLAB_BYTES // plane_bytes)  # output planes per slab
    for start in range(0, block.shape[0], planes * factors[0]):
        yield (
            slice(start // factors[0], start // factors[0] + planes),
            block[start : start + planes * factors[0]],
        )


def _reduce(
    block: np.ndarray, factors: tuple[int, ...], method: str, axis_order: np.ndarray
) -> np.ndarray:
    """`window_reduce` of one slab by any method but `stride`."""
    if method in ("min", "max"):
        return _extremum(block, factors, method == "min")
    if method == "mean":
        return _mean(block, factors)
    return _sorted_reduce(block, factors, method, axis_order)


def window_offsets(
    shape: Sequence[int], factors: Sequence[int]
) -> Iterator[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """For each offset inside the window, in C order: (output region, strided input view) of the
    windows containing that offset. Only the last window along an axis can lack an offset, so the
    output region is always a leading corner."""
    for offset in itertools.product(*(range(f) for f in factors)):
        if any(o >= n for o, n in zip(offset, shape)):
            continue
        dst = tuple(slice(0, -(-(n - o) // f)) for n, o, f in zip(shape, offset, factors))
        src = tuple(slice(o, None, f) for o, f in zip(offset, factors))
        yield dst, src


def window_counts(shape: Sequence[int], factors: Sequence[int]) -> np.ndarray | int:
    """Number of in-bounds voxels of every window (a plain int when no window is partial)."""
    if all(n % f == 0 for n, f in zip(shape, factors)):
        return math.prod(factors)
    count = np.ones((), np.int64)
    for n, f in zip(shape, factors):
        extent = np.minimum(f, n - np.arange(0, n, f, dtype=np.int64))
        count = np.multiply.outer(count, extent)
    return count


def _extremum(block: np.ndarray, factors: Sequence[int], is_min: bool) -> np.ndarray:
    out_shape = downscale_shape(block.shape, factors)
    if block.dtype.kind == "f":
        # tensorstore's fold: acc = +-inf; acc = x if x < acc (x > acc), so NaN never wins.
        acc = np.full(out_shape, np.inf if is_min else -np.inf, block.dtype)
        better = np.less if is_min else np.greater
        for dst, src in window_offsets(block.shape, factors):
            values, current = block[src], acc[dst]
            np.copyto(current, values, where=better(values, current))
        return acc
    ufunc = np.minimum if is_min else np.maximum
    acc = block[
        tuple(slice(None, None, f) for f in factors)
    ].copy()  # offset 0: every window has it
    for dst, src in itertools.islice(window_offsets(block.shape, factors), 1, None):
        ufunc(acc[dst], block[src], out=acc[dst])
    return acc


def _mean(block: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    out_shape = downscale_shape(block.shape, factors)
    count = window_counts(block.shape, factors)
    if block.dtype.kind == "f":
        acc = np.zeros(out_shape, block.dtype)
        for dst, src in window_offsets(block.shape, factors):
            acc[dst] += block[src]
        return (acc / np.asarray(count, block.dtype)).astype(block.dtype, copy=False)
    # 64-bit: sum the high (signed) and low (unsigned) 32-bit halves separately, then divide
    # high part first: sum = high * 2**32 + low, each step fits int64 while count < 2**31.
    low = (block & _LOW32).astype(np.int64)
    high = (block >> 32).astype(np.int64)
    low_sum = np.zeros(out_shape, np.int64)
    high_sum = np.zeros(out_shape, np.int64)
    for dst, src in window_offsets(block.shape, factors):
        low_sum[dst] += low[src]
        high_sum[dst] += high[src]
    high_sum += low_sum >> 32
    low_sum &= _LOW32
    high_quotient = high_sum // count
    rest = ((high_sum - high_quotient * count) << 32) + low_sum  # < count * 2**32
    low_quotient = rest // count
    remainder = rest - low_quotient * count
    # The exact quotient may exceed int64 (uint64) or pass through it (int64): assemble it modulo
    # 2**64; the rounded mean lies within the dtype's range, so the bits are right.
    quotient = (high_quotient.astype(np.uint64) << np.uint64(32)) + low_quotient.astype(np.uint64)
    return _round_half_even(quotient, remainder, count).view(block.dtype)


def _round_half_even(
    quotient: np.ndarray, remainder: np.ndarray, count: np.ndarray | int
) -> np.ndarray:
    """`quotient + remainder / count` (floor quotient, 0 <= remainder < count) rounded to nearest,
    ties to even: round up iff `2 * remainder + (quotient odd) > count`. Works in place."""
    remainder <<= 1
    remainder += (quotient & 1).astype(remainder.dtype, copy=False)
    quotient += (remainder > count).astype(quotient.dtype)
    return quotient


def _sorted_reduce(
    block: np.ndarray, factors: Sequence[int], method: str, axis_order: np.ndarray
) -> np.ndarray:
    """mode/median: gather each window into a column, sort the columns, then pick. A window whose
    voxels all have the same bits (most windows of a label volume) is its own answer, padded or
    not, so when few windows are mixed only those are sorted. Float windows with NaN or zeros of
    both signs are then replayed as tensorstore computes them (replay.py)."""
    out_shape = downscale_shape(block.shape, factors)
    counts = window_counts(block.shape, factors)
    columns = _window_columns(block, factors, out_shape)
    mixed = _mixed_columns(columns)
    floats = block.dtype.kind == "f"
    if mixed is None:
        special = special_windows(columns) if floats else None  # before the sort reorders them
        result = _pick(list(columns), counts, method)
    else:
        result = columns[0]  # the first voxel, never padding
        special = mixed[:0]
        if mixed.size:
            counts = counts if isinstance(counts, int) else counts.reshape(-1)[mixed]
            taken = np.take(columns, mixed, axis=1)
            special = mixed[special_windows(taken)] if floats else None
            result[mixed] = _pick(list(taken), counts, method)
    if special is not None and special.size:
        result[special] = replay_windows(block, factors, axis_order, special, method)
    return result.reshape(out_shape)


def _mixed_columns(columns: np.ndarray) -> np.ndarray | None:
    """Indices of the columns whose values do not all have the same bits, or None if more than
    `_MAX_MIXED` of them are mixed (then sorting them all is cheaper); noisy images show that
    after the first comparison already."""
    bits = columns.view(f"u{columns.dtype.itemsize}")
    same = bits[1] == bits[0]
    if same.size - np.count_nonzero(same) > _MAX_MIXED * same.size:
        return None
    for row in bits[2:]:
        same &= row == bits[0]
    mixed = np.flatnonzero(~same)
    return mixed if mixed.size <= _MAX_MIXED * same.size else None


def _pick(rows: list[np.ndarray], counts: np.ndarray | int, method: str) -> np.ndarray:
    """Sort the columns of `rows` (one per window, see `_window_columns`) and pick each one's median
    or mode, as a flat array; `counts` gives the windows' numbers of real (unpadded) voxels."""
    size = len(rows)
    partial = not isinstance(counts, int)
    rows = sorted_columns(rows)
    if method == "median":
        if not partial:
            return rows[(size - 1) // 2]
        middle = ((counts - 1) // 2).reshape(-1)
        result = rows[0].copy()
        for k in range(1, size):
            np.copyto(result, rows[k], where=middle == k)
        return result
    # mode: walk the sorted columns keeping the current run length and the longest run so far;
    # only a strictly longer run replaces it, so the lowest value wins ties. Padding sorts last
    # and positions >= count are never taken. The best value is blended arithmetically on the bits
    # (best += (value - best) * longer, modulo 2**n), which beats a masked copy on mixed masks.
    bits = np.dtype(f"u{rows[0].dtype.itemsize}")
    best = rows[0].view(bits).copy()
    length_type = np.min_scalar_type(size)
    best_length = np.ones(best.shape, length_type)
    run = best_length.copy()
    counts = counts.reshape(-1) if partial else None
    for k in range(1, size):
        run *= rows[k] == rows[k - 1]
        run += 1
        longer = run > best_length
        if partial:
            longer &= counts > k
        best += (rows[k].view(bits) - best) * longer
        np.maximum(best_length, run, out=best_length)  # past `count` nothing is taken any more
    return best.view(rows[0].dtype)


def _window_columns(
    block: np.ndarray, factors: Sequence[int], out_shape: Sequence[int]
) -> np.ndarray:
    """The windows as the columns of a new `(prod(factors), windows)` array: row k holds window
    offset k's (C order) voxel of every window. Partial windows are padded with the dtype's largest
    value, which sorts after every real voxel (NaN aside)."""
    padded_shape = tuple(n * f for n, f in zip(out_shape, factors))
    if padded_shape != block.shape:
        if block.dtype.kind == "f":
            fill = np.inf
        elif block.dtype.kind == "b":
            fill = True
        else:
            fill = np.iinfo(block.dtype).max
        padded = np.full(padded_shape, fill, block.dtype)
        padded[tuple(slice(0, n) for n in block.shape)] = block
    else:
        padded = block
    ndim = block.ndim
    interleaved = [v for pair in zip(out_shape, factors) for v in pair]
    axes = [*range(1, 2 * ndim, 2), *range(0, 2 * ndim, 2)]
    columns = padded.reshape(interleaved).transpose(axes).reshape(math.prod(factors), -1)
    if np.may_share_memory(columns, block):  # the sort works in place
        columns = columns.copy()
    return columns


def sorted_columns(rows: list[np.ndarray]) -> list[np.ndarray]:
    """`rows` (row k: offset k's voxel of every window) with every column sorted ascending: a
    sorting network for small windows, numpy's sort for large ones. Small windows sort in place."""
    if len(rows) <= _MAX_NETWORK:
        _sort_network(rows)
        return rows
    return list(np.sort(np.stack(rows), axis=0))


def _sort_network(rows: list[np.ndarray]) -> None:
    """Sort element-wise across `rows` (every column ascending) in place with Batcher's odd-even
    merge network: a fixed list of compare-exchanges, each one vectorised over all windows."""
    scratch = np.empty_like(rows[0])
    for i, j in _network_pairs(len(rows)):
        low, high = rows[i], rows[j]
        np.minimum(low, high, out=scratch)
        np.maximum(low, high, out=high)
        rows[i], scratch = scratch, low


@lru_cache(maxsize=None)
def _network_pairs(size: int) -> tuple[tuple[int, int], ...]:
    """Compare-exchange pairs of Batcher's odd-even merge sort for `size` elements: the network
    for the next power of two with comparators touching missing elements (think +inf) dropped.

    >>> len(_network_pairs(8)), _network_pairs(3)
    (19, ((0, 1), (0, 2), (1, 2)))
    """
    n = 1 << max(0, size - 1).bit_length()
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < size:
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple(pairs)
