"""The `Source` protocol every storage kind implements, and the checks shared by all of them."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from bioimage_tasks.errors import ParameterError
from bioimage_tasks.io.kv import Location


@runtime_checkable
class Source(Protocol):
    """Anything block-wise code reads from: a shape, a dtype, numpy-style slicing (with positive
    steps), and the unit a writer must own whole (chunk or shard; None for in-memory arrays)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    @property
    def write_unit(self) -> tuple[int, ...] | None: ...

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray: ...


def start_read(source: Source, key: tuple[slice, ...]) -> Callable[[], np.ndarray]:
    """Start reading `key` from `source` in the background where the source can (a
    `start_read` method), else read it now; the returned function gives the values."""
    start = getattr(source, "start_read", None)
    if start is not None:
        return start(key)
    values = source[key]
    return lambda: values


UNSUPPORTED_KINDS = {"O": "object", "U": "str", "S": "bytes", "T": "str", "V": "void"}


def check_array(source: Source, parameter: str) -> Source:
    """`source`, or a ValueError naming `parameter` if it has no axes, no voxels, or a dtype no
    block-wise operation can compute with (object, str, bytes, void)."""
    shape, dtype = tuple(source.shape), np.dtype(source.dtype)
    if not shape:
        raise ParameterError(f"{parameter} is a 0-D array (a scalar); it needs at least one axis")
    if 0 in shape:
        raise ParameterError(f"{parameter} is empty (shape {shape}): there is nothing to process")
    if dtype.kind in UNSUPPORTED_KINDS:
        raise ParameterError(
            f"{parameter} has dtype {dtype} ({UNSUPPORTED_KINDS[dtype.kind]}); only bool and "
            "numeric dtypes are supported"
        )
    return source


def same_storage(a: Source, b: Source) -> bool:
    """Whether two sources (or the sources lazy views wrap) are the same data: the same array
    folder on disk, or numpy arrays sharing memory. Writing one while reading the other would
    read voxels already overwritten."""
    while hasattr(a, "source"):
        a = a.source
    while hasattr(b, "source"):
        b = b.source
    x, y = getattr(a, "array", None), getattr(b, "array", None)
    if isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
        return np.shares_memory(x, y)
    folders = [getattr(s, "directory", None) for s in (a, b)]
    if None in folders:
        return False
    return (
        folders[0] == folders[1]
        if "://" in folders[0]
        else os.path.realpath(folders[0]) == os.path.realpath(folders[1])
    )


def storage_place(source: Source) -> str | Location | None:
    """Where an array keeps its files, and with them its block records and lease: its Location on
    object storage, its local folder, or None (in memory)."""
    return getattr(source, "location", None) or getattr(source, "directory", None)


@dataclass(frozen=True)
class Physical:
    """What a file says about its voxels, per axis (None where it says nothing): the voxel size,
    its unit (NGFF names such as "micrometer"), the axis names, the position of voxel 0 and the
    channels' names.
    `pyramid_flow` uses each part the caller does not give."""

    voxel_size: tuple[float, ...] | None = None
    units: tuple[str | None, ...] | None = None
    axes: tuple[str, ...] | None = None
    origin: tuple[float, ...] | None = None
    channel_names: tuple[str, ...] | None = None  # one per index of the c axis (vendor files)


def physical_of(source: Any) -> Physical:
    """The `physical` metadata of `source` (TIFF, HDF5, OME-Zarr), else an empty `Physical`."""
    return getattr(source, "physical", None) or Physical()


def read_unit_of(source: Any) -> tuple[int, ...] | None:
    """The smallest piece `source` decodes at once (a TIFF strip or tile, an HDF5 chunk), where
    decoding is costly enough that blocks should cover whole pieces; None where it does not say."""
    return getattr(source, "read_unit", None)


def aligned_unit(
    unit: Sequence[int] | None, read_unit: Sequence[int] | None, shape: Sequence[int]
) -> tuple[int, ...] | None:
    """A unit that is a multiple of both the write `unit` and the `read_unit` along each axis
    (capped at the array's extent), so blocks made of it own whole write units and decode every
    strip or tile once.

    >>> aligned_unit((64, 64, 64), (1, 16, 1000), (100, 512, 1000))
    (64, 64, 1000)
    >>> aligned_unit(None, None, (8, 8))
    """
    if read_unit is None:
        return None if unit is None else tuple(unit)
    unit = unit or (1,) * len(shape)
    return tuple(min(math.lcm(int(u), int(r)), n) for u, r, n in zip(unit, read_unit, shape))
