"""Pure per-block resize: scikit-image's `resize(..., mode="reflect", preserve_range=True)`
evaluated for one output block from a halo'd input region. No I/O, no Prefect, no Dask.

`skimage.transform.resize` is a Gaussian pre-filter (`anti_aliasing`) followed by
`scipy.ndimage.zoom(..., grid_mode=True, mode="mirror")`, which samples output index `i` at input
coordinate `(i + 0.5) * in / out - 0.5` (centre-aligned). We reproduce that coordinate bit for bit,
read every input voxel the Gaussian and the spline taps can reach (mirrored at the array edges,
which is what mode "mirror" means), and evaluate the same filters on that region:
- order 0 is a pure gather, so every dtype (uint64 ids above 2**53, bool) comes back unchanged;
- orders 1-5 interpolate separably with scipy's own B-spline weights; the spline pre-filter of
  orders >= 2 is recursive (infinite support), so its halo is sized until the boundary error has
  decayed below 1e-13 of the data range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Slowest-decaying pole of the B-spline pre-filter of each order (Unser 1999).
_SPLINE_POLES = {2: math.sqrt(8.0) - 3.0, 3: math.sqrt(3.0) - 2.0, 4: -0.361341225900220, 5: -0.430575347099973}
_PREFILTER_TOLERANCE = 1e-13
_GAUSSIAN_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default


def source_coordinates(in_size: int, out_size: int, start: int, stop: int) -> np.ndarray:
    """Input coordinates sampled by output indices [start, stop), exactly as scipy's zoom computes
    them with grid_mode=True.

    >>> source_coordinates(8, 4, 0, 4)
    array([0.5, 2.5, 4.5, 6.5])
    """
    zoom = np.divide(float(in_size), float(out_size))
    return (np.arange(start, stop, dtype=np.float64) + 0.5) * zoom - 0.5


def anti_aliasing_sigma(in_shape: Sequence[int], out_shape: Sequence[int]) -> tuple[float, ...]:
    """scikit-image's default anti-aliasing sigma, `max(0, (in/out - 1) / 2)` per axis."""
    factors = np.divide(in_shape, out_shape)
    return tuple(float(s) for s in np.maximum(0, (factors - 1) / 2))


def gaussian_radius(sigma: float) -> int:
    """How far scipy's gaussian_filter reaches for `sigma` (0 where the axis is not filtered)."""
    return int(_GAUSSIAN_TRUNCATE * sigma + 0.5) if sigma > 1e-15 else 0


def prefilter_margin(order: int) -> int:
    """Extra halo for the recursive spline pre-filter of `order` (0 for orders 0 and 1)."""
    if order < 2:
        return 0
    return math.ceil(math.log(_PREFILTER_TOLERANCE) / math.log(abs(_SPLINE_POLES[order]))) + 2


def first_tap(coords: np.ndarray, order: int) -> np.ndarray:
    """Index of the first spline tap for each coordinate (scipy's convention; order 0 rounds
    half up, which is what makes factor 2 pick voxels 1, 3, 5, ...)."""
    if order % 2:
        return np.floor(coords).astype(np.int64) - order // 2
    return np.floor(coords + 0.5).astype(np.int64) - order // 2


@dataclass(frozen=True)
class AxisPlan:
    """What one axis of one output block needs: the input coordinates it samples and the input
    index range [read_start, read_stop) to read (it may extend past the array: mirror it)."""

    coords: np.ndarray
    read_start: int
    read_stop: int


def plan_axis(in_size: int, out_size: int, start: int, stop: int, order: int, sigma: float) -> AxisPlan:
    """Plan the input region for output indices [start, stop) along one axis."""
    coords = source_coordinates(in_size, out_size, start, stop)
    taps = first_tap(coords[[0, -1]], order)
    halo = gaussian_radius(sigma) + prefilter_margin(order)
    return AxisPlan(coords, int(taps[0]) - halo, int(taps[1]) + order + 1 + halo)


def mirror_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices [start, stop) folded into [0, size) the way scipy.ndimage's mode "mirror" (numpy's
    pad mode "reflect") extends an array: ... 2 1 | 0 1 2 ... n-1 | n-2 ...

    >>> mirror_indices(-3, 7, 4)
    array([3, 2, 1, 0, 1, 2, 3, 2, 1, 0])
    """
    indices = np.arange(start, stop)
    if size == 1:
        return np.zeros_like(indices)
    period = 2 * (size - 1)
    folded = np.abs(indices) % period
    return np.where(folded >= size, period - folded, folded)


def working_dtype(dtype: np.dtype, order: int) -> np.dtype:
    """The dtype scikit-image resizes in: the input's own for order 0 (float16 widened to float32),
    float32 for float32/float16 input, float64 for everything else."""
    dtype = np.dtype(dtype)
    if dtype == np.float16:
        return np.dtype(np.float32)
    if order == 0 or dtype.char in "df":
        return dtype
    return np.dtype(np.float64)


def cast_to(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast resampled values to `dtype`: integers are rounded to nearest (not truncated) and
    clipped to the dtype's range; no float round-trip when the dtype already matches."""
    dtype = np.dtype(dtype)
    if values.dtype == dtype:
        return values
    if dtype.kind in "iu" and values.dtype.kind == "f":
        info = np.iinfo(dtype)
        # float(info.max) may round up past the range (2**64 for uint64): step back inside.
        high = np.nextafter(float(info.max), -np.inf) if float(info.max) > info.max else float(info.max)
        return np.clip(np.rint(values), float(info.min), high).astype(dtype)
    return values.astype(dtype)


def spline_weights(coords: np.ndarray, order: int) -> np.ndarray:
    """B-spline weights (n, order + 1) of the taps `first_tap(coords) + [0..order]`, evaluated
    by scipy itself on unit impulses so they are the weights its zoom uses. The weights depend
    only on the position within the knot interval, so coordinates are moved by a whole number
    next to a short impulse signal; the move is exact for coordinates >= offset + 1, smaller
    ones are used as they are unless their taps would fold over the edge (orders >= 2 only,
    whose recursive pre-filter is not bit-exact anyway)."""
    if order == 0:
        return np.ones((len(coords), 1))
    offset = order // 2 + 1
    knot = np.floor(coords) if order % 2 else np.floor(coords + 0.5)
    usable_as_is = (coords < offset + 1) & (first_tap(coords, order) >= 0)
    near = np.where(usable_as_is, coords, (coords - knot) + offset)
    starts = first_tap(near, order)
    impulse = np.zeros(2 * offset + order + 3)
    weights = np.empty((len(coords), order + 1))
    for start in np.unique(starts):
        rows = starts == start
        for tap in range(order + 1):
            impulse[:] = 0.0
            impulse[start + tap] = 1.0
            weights[rows, tap] = ndimage.map_coordinates(
                impulse, [near[rows]], order=order, prefilter=False, mode="mirror"
            )
    return weights


def interpolate(coefficients: np.ndarray, taps: Sequence[np.ndarray], weights: Sequence[np.ndarray]) -> np.ndarray:
    """Tensor-product spline sum over the taps in C order, multiplying each coefficient by the
    weight of axis 0, then axis 1, ...: the operation order of scipy's zoom, so that values that
    land exactly on a rounding tie (common for integer images) round the same way."""
    ndim = coefficients.ndim
    n_taps = weights[0].shape[1]
    shaped = [
        w.reshape((1,) * axis + (len(w), n_taps) + (1,) * (ndim - axis - 1)) for axis, w in enumerate(weights)
    ]
    result = np.zeros(tuple(len(t) for t in taps))
    for combination in np.ndindex(*(n_taps,) * ndim):
        term = coefficients[np.ix_(*(t + c for t, c in zip(taps, combination)))].astype(np.float64)
        for axis, c in enumerate(combination):
            term *= shaped[axis][(slice(None),) * (axis + 1) + (c,)]
        result += term
    return result


def resize_region(
    region: np.ndarray,
    plans: Sequence[AxisPlan],
    order: int,
    sigma: Sequence[float],
    value_range: tuple[float, float] | None,
    out_dtype: np.dtype,
) -> np.ndarray:
    """Resize one block. `region` holds input indices [plan.read_start, plan.read_stop) of every
    axis (mirrored past the array edges); `sigma` is the anti-aliasing sigma per axis (zeros for
    none); `value_range` is the whole input's (min, max) that scikit-image clips orders >= 2 to."""
    data = region.astype(working_dtype(region.dtype, order), copy=False)
    if any(s > 1e-15 for s in sigma):
        data = ndimage.gaussian_filter(data, sigma, mode="mirror", truncate=_GAUSSIAN_TRUNCATE)
    if order == 0:
        picks = [first_tap(plan.coords, 0) - plan.read_start for plan in plans]
        return cast_to(data[np.ix_(*picks)], out_dtype)
    zoom_dtype = data.dtype
    if order >= 2:
        data = ndimage.spline_filter(data, order, output=np.float64, mode="mirror")
    taps = [first_tap(plan.coords, order) - plan.read_start for plan in plans]
    data = interpolate(data, taps, [spline_weights(plan.coords, order) for plan in plans])
    data = data.astype(zoom_dtype, copy=False)
    if value_range is not None:
        np.clip(data, value_range[0], value_range[1], out=data)
    return cast_to(data, out_dtype)


def value_range(block: np.ndarray) -> tuple[float, float]:
    """(min, max) of a block as scikit-image's clipping sees it: NaNs ignored."""
    values = block.astype(working_dtype(block.dtype, 1), copy=False)
    return float(np.nanmin(values)), float(np.nanmax(values))
