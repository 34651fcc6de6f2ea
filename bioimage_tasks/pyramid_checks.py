"""Checks of a pyramid's parameters, run before anything is created: the axes, voxel geometry and
units NGFF (0.4 and 0.5) can express, level factors that never mix channels, chunk and shard
shapes, and an output group that holds nothing but a pyramid. Each raises a `ParameterError`
that names the parameter at fault."""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bioimage_tasks.errors import ParameterError
from bioimage_tasks.geometry import normalize_factors
from bioimage_tasks.grid import chunks_dividing, default_block_shape
from bioimage_tasks.io import ContainerPath, OutputOptions, UrlPath
from bioimage_tasks.io.source import physical_of
from bioimage_tasks.multiscale import UNITS, axis_type

# taken from the right for inputs whose metadata names no axes
DEFAULT_AXES = ("t", "c", "z", "y", "x")
TYPE_ORDER = {"time": 0, "channel": 1, "space": 2}  # NGFF's order of axis types
UNIT_EXAMPLES = {
    "space": "micrometer, nanometer, millimeter",
    "time": "second, millisecond, minute",
}
LEVEL_NAME = re.compile(r"s\d+")


@dataclass(frozen=True)
class PyramidGeometry:
    """Per axis of s0: NGFF name, voxel size, position of voxel 0 and unit (None: none)."""

    axes: tuple[str, ...]
    voxel_size: tuple[float, ...]
    origin: tuple[float, ...]
    units: tuple[str | None, ...]
    axes_assumed: bool = False  # DEFAULT_AXES, neither the caller nor the input named them


def pyramid_geometry(
    source: Any,
    voxel_size: Sequence[float] | None,
    origin: Sequence[float] | None,
    units: str | Sequence[str | None] | None,
    axes: Sequence[str] | None,
    planned: bool,
) -> PyramidGeometry:
    """The caller's axes, voxel size, origin and units, else the input's metadata (OME-Zarr,
    OME-TIFF, ImageJ TIFF, HDF5), else defaults (axes t, c, z, y, x from the right, voxel 1,
    origin 0, no unit), checked against NGFF. A 4-D or 5-D input whose axes nobody names is
    refused with `planned` (levels= would have to guess which axes are space)."""
    ndim = len(source.shape)
    known = physical_of(source)
    axes = axes if axes is not None else known.axes
    assumed = axes is None
    if assumed and planned and ndim > 3:
        raise ParameterError(
            f"levels= on a {ndim}-D input needs its axes, and the input's metadata names none: "
            f"give axes=, e.g. {DEFAULT_AXES[-ndim:]} (levels reduce space axes only, never c "
            "or t)"
        )
    axes = check_axes(DEFAULT_AXES[-ndim:] if assumed else axes, ndim)
    return PyramidGeometry(
        axes,
        check_numbers(voxel_size, known.voxel_size, 1.0, ndim, "voxel_size", positive=True),
        check_numbers(origin, known.origin, 0.0, ndim, "origin"),
        check_units(units, known.units, axes),
        assumed,
    )


def check_axes(axes: Sequence[str], ndim: int) -> tuple[str, ...]:
    """Axis names NGFF accepts: 2 to 5 unique names, 2 or 3 of them space (all but t and c), at
    most one t and one c, ordered t, c, then space."""
    if not 2 <= ndim <= 5:
        raise ParameterError(f"input has {ndim} axes; an OME-Zarr (NGFF) image has 2 to 5")
    names = tuple(axes)
    if len(names) != ndim or not all(isinstance(n, str) and n for n in names):
        raise ParameterError(f"axes needs one name per axis ({ndim}), got {axes!r}")
    if len(set(names)) != ndim:
        raise ParameterError(f"axes must be unique names, got {names}")
    types = [axis_type(name) for name in names]
    if (
        not 2 <= types.count("space") <= 3
        or types.count("time") > 1
        or types.count("channel") > 1
        or types != sorted(types, key=TYPE_ORDER.get)
    ):
        raise ParameterError(
            f"axes {names} are not an NGFF image's: it has 2 or 3 space axes (every name but t "
            "and c) after at most one t and one c, in the order t, c, space (e.g. ('t', 'c', "
            "'z', 'y', 'x'))"
        )
    return names


def check_numbers(
    given: Sequence[float] | None,
    known: Sequence[float] | None,
    default: float,
    ndim: int,
    parameter: str,
    positive: bool = False,
) -> tuple[float, ...]:
    """`given`, else `known` (the input's metadata), else `default` per axis, as finite floats
    (with `positive`, > 0): NaN and infinity are not JSON, and a voxel has a size."""
    value = given if given is not None else known if known is not None else (default,) * ndim
    where = "" if given is not None else " (from the input's metadata)"
    try:
        numbers_ = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ParameterError(
            f"{parameter} must be numbers, one per axis, got {value!r}{where}"
        ) from None
    if len(numbers_) != ndim:
        raise ParameterError(f"{parameter} needs one entry per axis ({ndim}), got {value!r}{where}")
    if not all(math.isfinite(v) and (v > 0 or not positive) for v in numbers_):
        wanted = "finite numbers > 0" if positive else "finite numbers"
        raise ParameterError(f"{parameter} must be {wanted}, got {numbers_}{where}")
    return numbers_


def check_units(
    units: str | Sequence[str | None] | None,
    known: Sequence[str | None] | None,
    axes: Sequence[str],
) -> tuple[str | None, ...]:
    """Per axis, a unit NGFF names for its type (UDUNITS-2 space or time units; none for a
    channel) or None. A single string is the unit of the space axes (time axes keep the
    input's)."""
    ndim = len(axes)
    known = tuple(known) if known is not None and len(known) == ndim else (None,) * ndim
    if units is None:
        chosen, where = known, " (from the input's metadata; give units= to replace it)"
    elif isinstance(units, str):
        chosen = tuple(
            units if axis_type(a) == "space" else k if axis_type(a) == "time" else None
            for a, k in zip(axes, known)
        )
        where = ""
    else:
        chosen, where = tuple(units), ""
        if len(chosen) != ndim:
            raise ParameterError(f"units needs one entry per axis ({ndim}), got {units!r}")
    for name, unit in zip(axes, chosen):
        kind = axis_type(name)
        if (
            unit is not None
            and unit != ""
            and (not isinstance(unit, str) or unit not in UNITS[kind])
        ):
            hint = (
                f"use one of NGFF's {kind} units, e.g. {UNIT_EXAMPLES[kind]}"
                if kind in UNIT_EXAMPLES
                else "a channel axis has no unit: give None there"
            )
            raise ParameterError(
                f"units: {unit!r} for axis {name!r} ({kind}) is not a unit NGFF knows{where}; "
                f"{hint}"
            )
    return tuple(u or None for u in chosen)


def check_levels(levels: Any) -> int:
    """`levels` below s0: an integer >= 0 (0 is s0 alone)."""
    if not isinstance(levels, numbers.Integral) or isinstance(levels, bool) or levels < 0:
        raise ParameterError(f"levels must be an integer >= 0 (0 writes s0 alone), got {levels!r}")
    return int(levels)


def check_scale_factors(scale_factors: Any, ndim: int) -> list[tuple[int, ...]]:
    """Per level below s0, one integer factor >= 1 per axis (an int is every axis's); [] is s0
    alone."""
    if isinstance(scale_factors, (str, bytes)) or not isinstance(scale_factors, Sequence):
        raise ParameterError(
            f"scale_factors must be a list with one entry per level below s0 (an int, or one "
            f"int per axis), got {scale_factors!r}"
        )
    result = []
    for level, factors in enumerate(scale_factors, start=1):
        try:
            result.append(normalize_factors(factors, ndim))
        except ValueError as error:
            raise ParameterError(f"scale_factors, level s{level}: {error}") from None
    return result


def check_channels_kept(level_factors: Sequence[Sequence[int]], geometry: PyramidGeometry) -> None:
    """Refuse a factor other than 1 on a channel axis: averaging channels mixes unrelated
    signals, and NGFF never resamples a channel axis. Time may be reduced (NGFF scales time)."""
    for level, factors in enumerate(level_factors, start=1):
        for name, factor in zip(geometry.axes, factors):
            if factor != 1 and axis_type(name) == "channel":
                assumed = (
                    f"; the axes were taken to be {geometry.axes} because the input's metadata "
                    "names none: give axes= if they are others"
                    if geometry.axes_assumed
                    else ""
                )
                raise ParameterError(
                    f"scale_factors: level s{level} has factor {factor} on axis {name!r}, a "
                    f"channel axis; channels are never averaged, so give 1 there{assumed}"
                )


def check_block_sizes(value: Any, ndim: int, parameter: str) -> tuple[int, ...] | None:
    """A chunk or shard shape: None, or one integer >= 1 per axis."""
    if value is None:
        return None
    try:
        sizes = () if isinstance(value, (str, bytes)) else tuple(value)
    except TypeError:
        sizes = ()
    if len(sizes) != ndim or not all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in sizes
    ):
        raise ParameterError(
            f"{parameter} must be {ndim} integers >= 1, one per axis, got {value!r}"
        )
    return tuple(int(s) for s in sizes)


def check_chunks_and_shards(
    chunks: Any, shards: Any, options: OutputOptions, ndim: int, ngff_version: str
) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    """The levels' (chunks, shards): `shards` or `output_options.shards` (not two different
    ones), zarr v3 only, each a whole number of chunks."""
    chunks = check_block_sizes(chunks, ndim, "chunks")
    shards = check_block_sizes(shards, ndim, "shards")
    if shards is not None and options.shards is not None and shards != options.shards:
        raise ParameterError(
            f"shards={shards} and output_options.shards={options.shards} differ: give one"
        )
    shards = shards or check_block_sizes(options.shards, ndim, "output_options.shards")
    if ngff_version == "0.4" and shards is not None:
        raise ParameterError("shards need zarr v3, i.e. ngff_version='0.5'")
    check_shards_hold_chunks(chunks, shards)
    return chunks, shards


def check_shards_hold_chunks(chunks: Sequence[int] | None, shards: Sequence[int] | None) -> None:
    """zarr v3 shards are whole numbers of chunks along every axis."""
    if chunks is not None and shards is not None and any(s % c for s, c in zip(shards, chunks)):
        raise ParameterError(
            f"shards {tuple(shards)} must be a multiple of chunks {tuple(chunks)} along every "
            "axis (a shard holds whole chunks)"
        )


def new_level_layout(
    shape: Sequence[int],
    chunks: tuple[int, ...] | None,
    shards: tuple[int, ...] | None,
    preferred: Sequence[int] | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """(chunks, shards) of a level the pyramid creates: the chunks asked for, else the input's
    `preferred` chunks (cut to the level), else about 64**3 voxels; dividing the shards."""
    if chunks is None:
        chunks = (
            default_block_shape(shape, None)
            if preferred is None
            else tuple(min(int(p), n) for p, n in zip(preferred, shape))
        )
        chunks = chunks if shards is None else chunks_dividing(shards, chunks)
    return chunks, shards


def check_output_group(group_path: ContainerPath | UrlPath) -> None:
    """The output group must be new, or hold nothing but this pyramid's parts (levels s<k>, a
    `labels` group, our records): writing a pyramid into an array, or beside other arrays whose
    group metadata it would replace, is refused. On object storage only an array is checked for
    (listing a bucket prefix can take as long as the pyramid)."""
    node = group_path.node()
    if node == "array":
        raise ParameterError(
            f"output_group {str(group_path)!r} is an array; a pyramid is a group of arrays "
            "s0..sN: choose a new path"
        )
    if isinstance(group_path, UrlPath) or node is None:
        return
    folder = os.path.join(group_path.container, group_path.key)
    others = sorted(
        name
        for name in os.listdir(folder)
        if not name.startswith(".")  # metadata, our records
        and name not in ("zarr.json", "labels")
        and not level_or_new(group_path, name)
    )
    if others:
        raise ParameterError(
            f"output_group {str(group_path)!r} holds {others} besides a pyramid's levels s0..sN; "
            "its metadata would describe only the pyramid: write it to a group of its own, e.g. "
            f"'{group_path}/image'"
        )


def level_or_new(group_path: ContainerPath, name: str) -> bool:
    """Whether member `name` of the group is a level s<k>: an array, or a bare folder."""
    key = f"{group_path.key}/{name}".lstrip("/")
    return bool(LEVEL_NAME.fullmatch(name)) and ContainerPath(
        group_path.container, key, group_path.format
    ).node() in ("array", "folder")
