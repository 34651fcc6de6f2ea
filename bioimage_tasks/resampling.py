"""Lazy downsampled views of a source. Slicing a `ResizedSource` returns exactly the region
scikit-image's whole-array `resize(..., mode="reflect", preserve_range=True)` would produce, and
slicing a `WindowedSource` the region tensorstore's `downsample` driver would, each computed from
only the input voxels that region depends on."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from bioimage_tasks.errors import ParameterError
from bioimage_tasks.geometry import downscale_shape
from bioimage_tasks.grid import BlockGrid, default_block_shape
from bioimage_tasks.io import Source, start_read
from bioimage_tasks.io.source import read_unit_of
from bioimage_tasks.kernels.resize import (
    anti_aliasing_sigma,
    cast_to,
    first_tap,
    mirror_indices,
    plan_axis,
    resize_region,
    tap_index,
    value_range,
)
from bioimage_tasks.kernels.window import window_reduce


class DerivedSource:
    """What every lazy view over `self.source` shares: the source's dtype, no write unit of its
    own, and a fingerprint made of the view's parameters and the source's fingerprint."""

    source: Source

    @property
    def dtype(self) -> np.dtype:
        return self.source.dtype

    @property
    def write_unit(self) -> None:
        return None

    def describe(self, what: str) -> str:
        return f"{getattr(self.source, 'name', 'source')} {what}"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def derived_fingerprint(self, parameters: dict) -> dict | None:
        inner = getattr(self.source, "fingerprint", None)
        return None if inner is None else {"view": parameters, "input": inner()}

    def input_interval(self, axis: int, start: int, stop: int) -> tuple[int, int]:
        """The input interval along `axis` that output indices [start, stop) are computed from."""
        raise NotImplementedError

    def input_region(self, region: tuple[slice, ...] | slice) -> tuple[slice, ...]:
        """The input region (in `source`'s coordinates) an output region is computed from: what
        block signatures (signatures.py) and readers must cover."""
        region = normalize_key(region, self.shape)
        return tuple(
            slice(*self.input_interval(axis, s.start, s.stop)) for axis, s in enumerate(region)
        )


def check_order(order: Any) -> None:
    """Reject a spline order outside 0-5 (the flows and ResizedSource say the same)."""
    if not isinstance(order, (int, np.integer)) or isinstance(order, bool) or not 0 <= order <= 5:
        raise ParameterError(f"order must be an integer from 0 to 5, got {order!r}")


def check_anti_aliasing(anti_aliasing: Any) -> None:
    if not isinstance(anti_aliasing, (bool, np.bool_)):
        raise ParameterError(f"anti_aliasing must be True or False, got {anti_aliasing!r}")


@dataclass(frozen=True, eq=False)
class ResizedSource(DerivedSource):
    """`source` resampled to `shape` with a B-spline of `order` (0-5), optionally Gaussian
    anti-aliased first. `value_range` (the input's min and max, which orders >= 2 are clipped to,
    as scikit-image does) is measured on first use when not given. Complex input is resampled
    part by part, each part as scikit-image resizes it alone (its range: complex numbers whose
    real and imaginary parts are those of the two parts, see `kernels.resize.value_range`).

    >>> from bioimage_tasks.io import ArraySource
    >>> x = np.arange(16, dtype=np.uint8).reshape(4, 4)
    >>> ResizedSource(ArraySource(x), (2, 2))[:, :]
    array([[ 5,  7],
           [13, 15]], dtype=uint8)
    """

    source: Source
    shape: tuple[int, ...]
    order: int = 0
    anti_aliasing: bool = False
    value_range: tuple[float, float] | None = None
    _measured: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        ndim = len(self.source.shape)
        shape = self.shape
        if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) != ndim:
            raise ParameterError(
                f"shape must have one entry per input axis ({ndim}), got {shape!r}"
            )
        if not all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in shape
        ):
            raise ParameterError(f"shape entries must be integers >= 1, got {shape!r}")
        object.__setattr__(self, "shape", tuple(int(n) for n in shape))
        check_order(self.order)
        check_anti_aliasing(self.anti_aliasing)

    @property
    def name(self) -> str:
        return self.describe(f"resized to {self.shape}")

    @property
    def sigma(self) -> tuple[float, ...]:
        if not self.anti_aliasing:
            return (0.0,) * len(self.shape)
        return anti_aliasing_sigma(self.source.shape, self.shape)

    def fingerprint(self) -> dict | None:
        return self.derived_fingerprint(
            {
                "resize": {
                    "shape": self.shape,
                    "order": self.order,
                    "anti_aliasing": self.anti_aliasing,
                },
                "value_range": self.value_range,
            }  # clipping to a changed range changes every block
        )

    def input_interval(self, axis: int, start: int, stop: int) -> tuple[int, int]:
        """The input voxels [start, stop) of `axis` are computed from: the taps and halo of the
        spline and Gaussian, folded back into the array where they reach past its edges."""
        n = self.source.shape[axis]
        plan = plan_axis(n, self.shape[axis], start, stop, self.order, self.sigma[axis])
        read = mirror_indices(plan.read_start, plan.read_stop, n)
        return (int(read.min()), int(read.max()) + 1) if len(read) else (0, 0)

    @property
    def clips(self) -> bool:
        """Whether scikit-image's clip of the result to the input's (min, max) can change a value:
        not for order 0 without anti-aliasing (it picks input voxels) nor for order 1 into an
        integer dtype (a convex combination, rounded); otherwise the range must be measured."""
        if self.order == 0 and not self.anti_aliasing:
            return False
        return not (self.order == 1 and self.dtype.kind in "iu")

    def clip_range(self) -> tuple[float, float] | None:
        """The input's (min, max) that scikit-image clips to, where clipping can change a value."""
        if not self.clips:
            return None
        if self.value_range is not None:
            return self.value_range
        if "range" not in self._measured:
            self._measured["range"] = measure_value_range(self.source)
        return self._measured["range"]

    def working_set(self, shape: tuple[int, ...]) -> int:
        """Bytes held while a block of `shape` is resized: order 0 at an integer factor reads
        only the picked voxels; otherwise the input box (spline taps and Gaussian halo) in float64,
        with a pass's copy of it, and the result."""
        plans = [
            plan_axis(n_in, n_out, 0, min(b, n_out), self.order, sigma)
            for n_in, n_out, b, sigma in zip(self.source.shape, self.shape, shape, self.sigma)
        ]
        out = math.prod(shape) * self.dtype.itemsize
        if self.order == 0 and not self.anti_aliasing:
            return 2 * out
        box = math.prod(p.read_stop - p.read_start for p in plans)
        return box * (self.dtype.itemsize + 3 * 8) + out

    def __getitem__(self, key: tuple[slice, ...] | slice) -> np.ndarray:
        return self.start_read(key)()

    def start_read(self, key: tuple[slice, ...] | slice) -> Callable[[], np.ndarray]:
        """Start reading the input region of `key` (in the background where the source can);
        the returned function resizes it."""
        region = normalize_key(key, self.shape)
        plans = [
            plan_axis(n_in, n_out, s.start, s.stop, self.order, sigma)
            for n_in, n_out, s, sigma in zip(self.source.shape, self.shape, region, self.sigma)
        ]
        shape, clip = self.source.shape, self.clip_range()
        if (
            self.order == 0
            and not self.anti_aliasing
            and not isinstance(self.source, DerivedSource)
        ):
            # nearest voxels: at an integer factor a strided read, which copies nothing else
            picks = [tap_index(first_tap(p.coords, 0)) for p in plans]
            if all(
                isinstance(k, slice) and k.start >= 0 and k.stop <= n for k, n in zip(picks, shape)
            ):
                picked = start_read(self.source, tuple(picks))
                return lambda: cast_to(np.asarray(picked()), self.dtype)
        box = tuple(slice(max(p.read_start, 0), min(p.read_stop, n)) for p, n in zip(plans, shape))
        pad = [(b.start - p.read_start, p.read_stop - b.stop) for p, b in zip(plans, box)]
        if all(
            b.stop - b.start > max(widths) or b.stop - b.start == n
            for b, widths, n in zip(box, pad, shape)
        ):
            # The box holds the mirror image of what lies past the edges, so numpy's "reflect"
            # (scipy's "mirror") pads it in one copy, far cheaper than a gather per axis.
            boxed = start_read(self.source, box)

            def resize() -> np.ndarray:
                data = boxed()
                if any(low or high for low, high in pad):
                    data = np.pad(data, pad, mode="reflect")
                return resize_region(data, plans, self.order, self.sigma, clip, self.dtype)

            return resize
        data = read_indexed(
            self.source,
            [mirror_indices(p.read_start, p.read_stop, n) for p, n in zip(plans, shape)],
        )
        return lambda: resize_region(data, plans, self.order, self.sigma, clip, self.dtype)


def normalize_key(key: tuple[slice, ...] | slice, shape: Sequence[int]) -> tuple[slice, ...]:
    """Unit-step slices with explicit bounds, one per axis."""
    key = key if isinstance(key, tuple) else (key,)
    if len(key) > len(shape) or not all(isinstance(k, slice) for k in key):
        raise IndexError(f"index with up to {len(shape)} slices, got {key!r}")
    key = key + (slice(None),) * (len(shape) - len(key))
    bounds = [k.indices(n) for k, n in zip(key, shape)]
    if any(step != 1 for _, _, step in bounds):
        raise IndexError(f"only unit-step slices are supported, got {key!r}")
    return tuple(slice(start, max(start, stop)) for start, stop, _ in bounds)


def read_indexed(source: Source, indices: Sequence[np.ndarray]) -> np.ndarray:
    """`source[np.ix_(*indices)]` with one bounding-box read; axes whose indices are a plain
    range skip the gather copy."""
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in indices)
    data = source[box]
    for axis, (index, bounds) in enumerate(zip(indices, box)):
        if len(index) != bounds.stop - bounds.start or np.any(np.diff(index) != 1):
            data = np.take(data, index - bounds.start, axis=axis)
    return data


def measure_value_range(
    source: Source, block_ids: Sequence[int] | None = None
) -> tuple[float, float]:
    """(min, max) of `source` (NaNs ignored), read block by block."""
    grid = BlockGrid(source.shape, default_block_shape(source.shape, source.write_unit))
    ranges = [
        value_range(source[grid.block_slices(b)]) for b in (block_ids or range(grid.n_blocks))
    ]
    return combine_ranges(ranges)


def combine_ranges(ranges: Sequence[tuple]) -> tuple[float, float] | tuple[complex, complex]:
    """The range covering all `ranges`; for complex data (see `value_range`) part by part."""
    lows, highs = np.array([r[0] for r in ranges]), np.array([r[1] for r in ranges])
    if lows.dtype.kind == "c":
        return (
            complex(np.nanmin(lows.real), np.nanmin(lows.imag)),
            complex(np.nanmax(highs.real), np.nanmax(highs.imag)),
        )
    return float(np.nanmin(lows)), float(np.nanmax(highs))


@dataclass(frozen=True, eq=False)
class WindowedSource(DerivedSource):
    """`source` reduced over windows of `factors` with a tensorstore `downsample` method (mean,
    mode, min, max, median, stride). Slicing it reads only the windows of the requested region,
    which are whole (or cut by the array edge), so blocks need no halo.

    >>> from bioimage_tasks.io import ArraySource
    >>> WindowedSource(ArraySource(np.array([1, 1, 2, 3, 3], dtype=np.uint8)), (2,), "max")[:]
    array([1, 3, 3], dtype=uint8)
    """

    source: Source
    factors: tuple[int, ...]
    method: str

    @cached_property  # asked for by every block's read
    def shape(self) -> tuple[int, ...]:
        return downscale_shape(self.source.shape, self.factors)

    @property
    def name(self) -> str:
        return self.describe(f"{self.method} over {self.factors}")

    def fingerprint(self) -> dict | None:
        return self.derived_fingerprint(
            {"window": {"factors": self.factors, "method": self.method}}
        )

    @property
    def read_unit(self) -> tuple[int, ...] | None:
        """Output blocks that are multiples of this read whole strips or tiles of the source."""
        unit = read_unit_of(self.source)
        return (
            None if unit is None else tuple(u // math.gcd(u, f) for u, f in zip(unit, self.factors))
        )

    def input_interval(self, axis: int, start: int, stop: int) -> tuple[int, int]:
        """The windows of output indices [start, stop) along `axis`."""
        factor = self.factors[axis]
        return start * factor, min(stop * factor, self.source.shape[axis])

    def working_set(self, shape: tuple[int, ...]) -> int:
        """Bytes held while a block of `shape` is reduced: its windows (only their first voxels
        for stride), for mode and median their gathered and sorted copies, and the result."""
        out = math.prod(shape) * self.dtype.itemsize
        windows = math.prod(shape) * math.prod(self.factors) * self.dtype.itemsize
        copies = {"stride": 0, "min": 1, "max": 1, "mean": 2, "mode": 3, "median": 3}[self.method]
        return out + (out if self.method == "stride" else copies * windows)

    def __getitem__(self, key: tuple[slice, ...] | slice) -> np.ndarray:
        return self.start_read(key)()

    def start_read(self, key: tuple[slice, ...] | slice) -> Callable[[], np.ndarray]:
        """Start reading the windows of `key` (in the background where the source can); the
        returned function reduces them."""
        region = normalize_key(key, self.shape)
        bounds = [
            (s.start * f, min(s.stop * f, n))
            for s, f, n in zip(region, self.factors, self.source.shape)
        ]
        if self.method == "stride" and not isinstance(self.source, DerivedSource):
            # a strided read: only the windows' first voxels are copied out of the decoded chunks
            firsts = start_read(
                self.source, tuple(slice(a, b, f) for (a, b), f in zip(bounds, self.factors))
            )
            return lambda: np.asarray(firsts())
        windows = start_read(self.source, tuple(slice(a, b) for a, b in bounds))
        return lambda: window_reduce(windows(), self.factors, self.method, self.source.shape)
