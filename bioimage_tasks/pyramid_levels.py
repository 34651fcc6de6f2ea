"""The pyramid's levels: their checked factors, shapes and layouts (`LevelSpec`), the level and
staging arrays (an existing level must match what the pyramid needs), and the regions plan."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import tensorstore as ts

from bioimage_tasks.errors import ParameterError
from bioimage_tasks.geometry import downscale_shape
from bioimage_tasks.io import (
    ContainerPath,
    OutputOptions,
    UrlPath,
    check_existing_output,
    create_array,
    output_path,
    with_write_empty_chunks,
)
from bioimage_tasks.io.source import read_unit_of
from bioimage_tasks.multiscale import (
    cumulative_factors,
    plan_isotropic_factors,
)
from bioimage_tasks.pyramid_checks import (
    PyramidGeometry,
    check_channels_kept,
    check_levels,
    check_output_group,
    check_scale_factors,
    new_level_layout,
)
from bioimage_tasks.pyramid_engine import (
    Sink,
)
from bioimage_tasks.pyramid_formats import PrecomputedOutput
from bioimage_tasks.pyramid_plan import PyramidPlan, plan_pyramid, tile_bytes_per_voxel
from bioimage_tasks.records import RECORDS_DIR
from bioimage_tasks.runners import RunnerConfig

Layout = tuple[tuple[int, ...], tuple[int, ...] | None]  # (chunks, shards) of a level


@dataclass(frozen=True)
class LevelSpec:
    """The checked geometry and metadata of a pyramid: per-level factors, shapes and layouts,
    and s0's axes, voxel size, origin and units (`geometry`)."""

    level_factors: list[tuple[int, ...]]
    shapes: list[tuple[int, ...]]
    layouts: list[Layout]
    geometry: PyramidGeometry

    @property
    def cumulative(self) -> list[tuple[int, ...]]:
        return cumulative_factors(self.level_factors, len(self.shapes[0]))


def level_factors_of(
    levels: Any, scale_factors: Any, geometry: PyramidGeometry
) -> list[tuple[int, ...]]:
    """Per-level factors: planned from the voxel size for `levels` (space axes only), else
    `scale_factors`; a channel axis is never reduced."""
    if levels is not None:
        factors = plan_isotropic_factors(geometry.voxel_size, check_levels(levels), geometry.axes)
    else:
        factors = check_scale_factors(scale_factors, len(geometry.axes))
    check_channels_kept(factors, geometry)
    return factors


def level_path(group_path: ContainerPath | UrlPath, level: int) -> ContainerPath | UrlPath:
    return replace(group_path, key=f"{group_path.key}/s{level}".lstrip("/"))


def same_values(stored: np.dtype, dtype: np.dtype) -> bool:
    """Whether an array stored as `stored` holds `dtype`'s values: byte order aside (a ">u2"
    input's levels may come back as native uint16, depending on the library that opens them)."""
    return np.dtype(stored).newbyteorder("=") == np.dtype(dtype).newbyteorder("=")


def existing_layout(
    group_path: ContainerPath | UrlPath,
    level: int,
    shape: tuple[int, ...],
    dtype: np.dtype,
    chunks: Sequence[int] | None,
) -> Layout | None:
    """The (chunks, shards) of level `level` if it exists, which the regions must follow so that
    every write owns whole chunks or shards. An existing level must have the pyramid's shape and
    dtype, and the chunks `chunks` asks for."""
    path = level_path(group_path, level)
    if not path.exists():
        return None
    level_source = path.open("r")
    if level_source.shape != shape or not same_values(level_source.dtype, dtype):
        raise ParameterError(
            f"{path} exists with shape {level_source.shape} and dtype {level_source.dtype}; this "
            f"pyramid needs {shape} {np.dtype(dtype)}: choose another output_group or delete it"
        )
    array = level_source.array
    if isinstance(array, ts.TensorStore):  # on object storage
        read, write = (
            tuple(array.chunk_layout.read_chunk.shape),
            tuple(array.chunk_layout.write_chunk.shape),
        )
        found = read, write if write != read else None
    else:
        found = tuple(array.chunks), tuple(array.shards) if array.shards else None
    if chunks and tuple(chunks) != found[0]:
        raise ParameterError(
            f"{path} exists with chunks {found[0]}, not the chunks {tuple(chunks)} asked for: "
            "leave chunks out to use the existing ones, or choose another output_group"
        )
    return found


def level_layouts(
    group_path: Any,
    shapes: Sequence[tuple[int, ...]],
    dtype: np.dtype,
    chunks: Any,
    shards: Any,
    preferred: Sequence[int] | None = None,
) -> list[Layout]:
    """Each level's (chunks, shards): an existing level's own, else the ones asked for, else
    the input's `preferred` chunks (a CZI's: see MicroscopySource.preferred_chunks)."""
    return [
        existing_layout(group_path, level, shape, dtype, chunks)
        or new_level_layout(shape, chunks, shards, preferred)
        for level, shape in enumerate(shapes)
    ]


def level_array(
    group_path: ContainerPath | UrlPath,
    level: int,
    shape: tuple[int, ...],
    dtype: np.dtype,
    layout: Layout,
    axes: Sequence[str],
    options: OutputOptions,
) -> Sink:
    """Level `level`'s array, created if missing (stored as `options` ask); an existing one (of
    the shape and dtype `existing_layout` checked) must have the codec and shards `options` name."""
    if isinstance(group_path, PrecomputedOutput):  # a scale of a precomputed volume
        return group_path.level_array(level, dtype, options)
    path = level_path(group_path, level)
    if not path.exists():
        return create_array(path, shape, dtype, layout[0], layout[1], tuple(axes), options)
    sink = path.open("r+")
    check_existing_output(sink, options, str(path))
    return with_write_empty_chunks(sink, options.write_empty_chunks)


def staging_array(
    group_path: ContainerPath | UrlPath,
    level: int,
    shape: tuple[int, ...],
    dtype: np.dtype,
    chunks: tuple[int, ...],
) -> Sink:
    """Where the regions leave their parts of level `level` (one chunk each), kept with the
    group's records until the level is assembled from it; recreated when the plan changed."""
    if isinstance(group_path, PrecomputedOutput):
        group_path = group_path.records_path()
    group = f"{group_path.container}/{group_path.key}".rstrip("/")
    path = replace(group_path, container=f"{group}/{RECORDS_DIR}/staging.zarr", key=f"s{level}")
    if path.exists():
        sink = path.open("r+")
        if sink.shape == shape and same_values(sink.dtype, dtype) and sink.write_unit == chunks:
            return sink
    return create_array(path, shape, dtype, chunks)


def reuses_s0(input: Any, group_path: ContainerPath | UrlPath) -> bool:
    """Whether the input is this group's own s0 (then used as it is, not copied)."""
    if isinstance(group_path, PrecomputedOutput):
        return group_path.is_own_s0(input)
    return isinstance(input, (str, os.PathLike)) and os.path.abspath(
        os.fspath(input)
    ) == os.path.abspath(os.path.join(group_path.container, group_path.key, "s0"))


def region_plan(
    source: Any, spec: LevelSpec, method: str, config: RunnerConfig, reuse_s0: bool
) -> PyramidPlan | None:
    """The regions plan of a window method (None for resize), checked against the budget."""
    if method == "resize":
        return None
    return plan_pyramid(
        source.shape,
        spec.level_factors,
        [shard or chunk for chunk, shard in spec.layouts],
        tile_bytes_per_voxel(method, source.dtype),
        config.memory_budget,
        write_s0=not reuse_s0,
        read_unit=read_unit_of(source),
    )


def group_output_path(output_group: str, storage_options: Any) -> ContainerPath | UrlPath:
    """The group's checked path (a zarr path: OME-Zarr)."""
    group_path = output_path(output_group, storage_options, "output_group")
    if group_path.format != "zarr":
        raise ParameterError(f"output_group must be a zarr path for OME-Zarr, got {output_group!r}")
    check_output_group(group_path)
    return group_path


def level_spec(
    source: Any,
    group_path: Any,
    levels: Any,
    scale_factors: Any,
    geometry: PyramidGeometry,
    chunks: Any,
    shards: Any,
) -> LevelSpec:
    """The pyramid's levels from the checked geometry (axes, voxel size, origin, units)."""
    level_factors = level_factors_of(levels, scale_factors, geometry)
    shapes = [
        downscale_shape(source.shape, f)
        for f in cumulative_factors(level_factors, len(source.shape))
    ]
    if isinstance(group_path, PrecomputedOutput):
        layouts = group_path.level_layouts(
            source,
            shapes,
            cumulative_factors(level_factors, len(source.shape)),
            geometry,
            chunks,
            shards,
        )
    else:
        preferred = getattr(source, "preferred_chunks", None)
        layouts = level_layouts(group_path, shapes, source.dtype, chunks, shards, preferred)
    return LevelSpec(level_factors, shapes, layouts, geometry)
