"""`pyramid_flow`: an OME-Zarr multiscale image (s0..sN) with exact per-level geometry, every
level written by one engine in one flow run (bioimage_tasks/pyramid_engine.py)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import tensorstore as ts

from bioimage_tasks.blockwise_flow import blockwise_flow
from bioimage_tasks.chunk_manifest import stamp_writes
from bioimage_tasks.geometry import downscale_shape, normalize_factors
from bioimage_tasks.grid import default_block_shape
from bioimage_tasks.multiscale import (axes_metadata, cumulative_factors, labels_group_attributes, level_transform,
                                       multiscales_attributes, plan_isotropic_factors)
from bioimage_tasks.naming import describe_source, flow_run_namer
from bioimage_tasks.planning import in_memory
from bioimage_tasks.lease import claim_ownership, output_lease
from bioimage_tasks.pyramid_engine import GroupOutput, LevelRow, Sink, pyramid_stages, resize_stages, run_stages
from bioimage_tasks.pyramid_plan import plan_pyramid, tile_bytes_per_voxel
from bioimage_tasks.records import RECORDS_DIR, run_key
from bioimage_tasks.resampling import ResizedSource
from bioimage_tasks.run_call import record_call
from bioimage_tasks.runners import RunnerConfig, backend, check_backend, describe_backend
from bioimage_tasks.io import (ContainerPath, OutputOptions, StorageOptions, UrlPath, as_source, check_existing_output,
                               check_output_options, create_array, open_group, output_path, storage_place,
                               with_write_empty_chunks)
from bioimage_tasks.io.source import physical_of, read_unit_of
from bioimage_tasks.tasks import measure_source_range
from bioimage_tasks.throttle import throttle_writes
from flows.downsample import check_input_dtype, check_method_options


@blockwise_flow("pyramid", flow_run_namer("pyramid", "output_group"))
def pyramid_flow(
    input: Any,
    output_group: str,
    *,
    levels: int | None = None,
    scale_factors: Sequence[int | Sequence[int]] | None = None,
    method: str = "mean",
    order: int = 0,
    anti_aliasing: bool = False,
    voxel_size: Sequence[float] | None = None,
    origin: Sequence[float] | None = None,
    units: str | Sequence[str | None] | None = None,
    axes: Sequence[str] | None = None,
    chunks: Sequence[int] | None = None,
    shards: Sequence[int] | None = None,
    ngff_version: str = "0.5",
    name: str | None = None,
    labels: bool = False,
    job_type: str = "local",
    job_config: RunnerConfig | None = None,
    num_workers: int = 1,
    output_options: OutputOptions | None = None,
    storage_options: StorageOptions | dict | None = None,
) -> str:
    """Write `input` as an OME-Zarr multiscale image at `output_group` ("path/image.zarr", or a
    group inside a container): s0 is a copy, each further level is downsampled with `method`
    (a window method, or "resize" with `order`/`anti_aliasing`) by `scale_factors` (per level,
    relative to the previous level; an int or one per axis) or, with `levels`, by a plan from
    `voxel_size` that makes voxels as isotropic as possible before halving every axis.

    Window methods read each region of the input once and write s0 and every level from that
    read, exactly equal to tensorstore's downsample of s0 by the level's cumulative factor (exact
    sums for mean, histograms for mode and median, never a rounded level); `resize` levels equal
    scikit-image's resize of s0. An input that is this group's own s0 ("<output_group>/s0") is
    used as it is, not copied. Scale and translation follow from the factors and the method's
    sampling (window centres; stride keeps the first voxel). One resumable flow run on any
    backend, within `job_config.memory_budget` per worker.
    With `labels=True` the output is a segmentation: `output_group` must be
    "<image group>/labels/<name>", the data integer, the method label-safe (mode, min, max,
    median, stride, or resize of order 0), and the `labels` group lists it. `output_options` set
    the levels' codec and level and whether all-fill chunks are stored; its `shards` are another
    way to give `shards`. `voxel_size`, `origin`, `units` and `axes` the caller leaves out come
    from the input's own metadata where it has some (OME-TIFF, ImageJ TIFF, an OME-Zarr image or
    level, HDF5 `element_size_um`). Returns the group's path."""
    check_method_options(method, order, anti_aliasing)
    config = check_backend(job_type, num_workers, job_config)
    options = check_output_options(output_options)
    if shards is not None and options.shards is not None and tuple(shards) != options.shards:
        raise ValueError(f"shards={tuple(shards)} and output_options.shards={options.shards} differ: give one")
    shards = shards if shards is not None else options.shards
    options = replace(options, shards=tuple(shards) if shards else None)  # what existing levels must have
    if ngff_version not in ("0.4", "0.5"):
        raise ValueError(f"ngff_version must be '0.4' or '0.5', got {ngff_version!r}")
    if ngff_version == "0.4" and shards is not None:
        raise ValueError("shards need zarr v3, i.e. ngff_version='0.5'")
    if (levels is None) == (scale_factors is None):
        raise ValueError("give exactly one of levels (planned from voxel_size) and scale_factors (per level)")
    source = as_source(input, storage_options=storage_options)
    check_input_dtype(source.dtype, method, order, anti_aliasing)
    if job_type != "local" and in_memory(source):
        raise ValueError(f"job_type={job_type!r} needs a file-backed input (a zarr/n5 path or array), not numpy")
    ndim = len(source.shape)
    known = physical_of(source)  # what an OME-TIFF, OME-Zarr or HDF5 input says, where the caller says nothing
    voxel_size = tuple(float(v) for v in (voxel_size or known.voxel_size or (1.0,) * ndim))
    origin = tuple(float(o) for o in (origin or known.origin or (0.0,) * ndim))
    axes = tuple(axes or known.axes or ("t", "c", "z", "y", "x")[-ndim:])
    if units is None:
        units = known.units or (None,) * ndim
    units = (units,) * ndim if isinstance(units, str) else tuple(units)
    if not len(voxel_size) == len(origin) == len(axes) == len(units) == ndim:
        raise ValueError(f"voxel_size, origin, axes and units need one entry per axis ({ndim})")
    if levels is not None:
        if not isinstance(levels, int) or levels < 0:
            raise ValueError(f"levels must be an integer >= 0, got {levels!r}")
        level_factors = plan_isotropic_factors(voxel_size, levels)
    else:
        level_factors = [normalize_factors(f, ndim) for f in scale_factors]
    group_path = output_path(output_group, storage_options, "output_group")
    if group_path.format != "zarr":
        raise ValueError(f"output_group must be a zarr path for OME-Zarr, got {output_group!r}")
    if labels:
        check_label_options(group_path, source.dtype, method, order, anti_aliasing)

    cumulative = cumulative_factors(level_factors)
    shapes = [downscale_shape(source.shape, f) for f in cumulative]
    reuse_s0 = isinstance(input, (str, os.PathLike)) and os.path.abspath(os.fspath(input)) == os.path.abspath(
        os.path.join(group_path.container, group_path.key, "s0"))
    layouts = [existing_layout(group_path, level, shape, source.dtype, chunks) or
               (tuple(chunks) if chunks else default_block_shape(shape, None), tuple(shards) if shards else None)
               for level, shape in enumerate(shapes)]
    plan = None
    if method != "resize":  # every check before anything is created
        plan = plan_pyramid(source.shape, level_factors, [shard or chunk for chunk, shard in layouts],
                            tile_bytes_per_voxel(method, source.dtype), config.memory_budget, write_s0=not reuse_s0,
                            read_unit=read_unit_of(source))
    group, group_directory = open_group(group_path, 2 if ngff_version == "0.4" else 3)
    arrays = [None if level == 0 and reuse_s0 else
              level_array(group_path, level, shape, source.dtype, *layouts[level], axes, options)
              for level, shape in enumerate(shapes)]
    rows = [LevelRow(level, shape, layouts[level][1] or layouts[level][0], factors,
                     "existing" if arrays[level] is None else "from the base")
            for level, (shape, factors) in enumerate(zip(shapes, cumulative))]
    details = {"input": describe_source(input, source), "output": str(group_path),
               "method": method if method != "resize" else f"resize, order {order}, anti-aliasing {anti_aliasing}",
               "backend": describe_backend(job_type, num_workers)} | (
                   {"output options": options.describe()} if options != OutputOptions() else {})
    fingerprint = getattr(source, "fingerprint", lambda: None)()
    computation = run_key({"pyramid": method, "order": order, "anti_aliasing": anti_aliasing, "factors": level_factors,
                           "input": fingerprint} | options.fingerprint()) if fingerprint is not None else f"unkeyed-{uuid.uuid4().hex}"
    directories = [group_directory, *(storage_place(array) for array in arrays if array is not None)]
    with output_lease(directories, computation):  # another live computation is refused here, before writing
        epoch = claim_ownership(directories, computation)
        record_call(group_directory, "pyramid")  # for `verify --repair`
        sinks = [None if array is None else throttle_writes(stamp_writes(array), config.write_limit)
                 for array in arrays]
        with backend(job_type, num_workers, config) as runner:
            if plan is not None:
                staging = {level: throttle_writes(stamp_writes(staging_array(
                    group_path, level, shapes[level], source.dtype, plan.staging_chunks(level))),
                    config.write_limit) for level in plan.staged}
                for level in range(1, len(shapes)):
                    rows[level].how = "assembled from staged regions" if level in staging else "from the regions' read"
                details |= {"regions": f"{plan.grid.n_blocks} of {plan.region}, tiles of {plan.tile}"}
                stages = pyramid_stages(source, plan, method, sinks, staging, group_directory, epoch, rows)
            else:
                views = [ResizedSource(source, shape, order, anti_aliasing) for shape in shapes[1:]]
                value_range = measure_source_range(runner, source, num_workers, config) if any(v.clips for v in views) else None
                stages = resize_stages(source, shapes, order, anti_aliasing, value_range, sinks, config.memory_budget,
                                       epoch, rows)
            run_stages(runner, stages, num_workers, config, details, rows, GroupOutput(str(group_path), str(getattr(group_directory, "url", group_directory))))

    transforms = [level_transform(method, voxel_size, origin, f, shapes[0], shape) for f, shape in zip(cumulative, shapes)]
    label_name = group_path.key.rsplit("/", 1)[-1]
    group.attrs.update(multiscales_attributes(ngff_version, name or label_name or "image", axes_metadata(axes, units),
                                              transforms, method, label=labels))
    if labels:
        labels_group, _ = open_group(replace(group_path, key=group_path.key.rsplit("/", 1)[0]), 2 if ngff_version == "0.4" else 3)
        labels_group.attrs.update(labels_group_attributes(ngff_version, dict(labels_group.attrs), label_name))
    return str(group_path)


def check_label_options(group_path: ContainerPath | UrlPath, dtype: Any, method: str, order: int, anti_aliasing: bool) -> None:
    """A label image lives at <image>/labels/<name>, holds integers, and is downsampled label-safely."""
    parts = group_path.key.split("/")
    if len(parts) < 2 or parts[-2] != "labels":
        raise ValueError(f"labels=True needs output_group '<image>.zarr/labels/<name>', got {str(group_path)!r}")
    if np.dtype(dtype).kind not in "iub":
        raise ValueError(f"label images hold integers, got dtype {dtype}")
    if method == "mean" or (method == "resize" and (order > 0 or anti_aliasing)):
        raise ValueError(f"method={method!r} (order {order}, anti_aliasing {anti_aliasing}) mixes label ids; "
                         "use mode, min, max, median, stride or resize with order 0")


def level_path(group_path: ContainerPath | UrlPath, level: int) -> ContainerPath | UrlPath:
    return replace(group_path, key=f"{group_path.key}/s{level}".lstrip("/"))


def existing_layout(group_path: ContainerPath | UrlPath, level: int, shape: tuple[int, ...], dtype: np.dtype,
                    chunks: Sequence[int] | None) -> tuple[tuple[int, ...], tuple[int, ...] | None] | None:
    """The (chunks, shards) of level `level` if it exists, which the regions must follow so that
    every write owns whole chunks or shards. An existing level must have the pyramid's shape and
    dtype, and the chunks `chunks` asks for."""
    path = level_path(group_path, level)
    if not path.exists():
        return None
    level_source = path.open("r")
    if level_source.shape != shape or level_source.dtype != np.dtype(dtype):
        raise ValueError(f"{path} exists with shape {level_source.shape} and dtype {level_source.dtype}; this pyramid "
                         f"needs {shape} {np.dtype(dtype)}: choose another output_group or delete it")
    array = level_source.array
    if isinstance(array, ts.TensorStore):  # on object storage
        read, write = tuple(array.chunk_layout.read_chunk.shape), tuple(array.chunk_layout.write_chunk.shape)
        found = read, write if write != read else None
    else:
        found = tuple(array.chunks), tuple(array.shards) if array.shards else None
    if chunks and tuple(chunks) != found[0]:
        raise ValueError(f"{path} exists with chunks {found[0]}, not the chunks {tuple(chunks)} asked for: "
                         "leave chunks out to use the existing ones, or choose another output_group")
    return found


def level_array(group_path: ContainerPath | UrlPath, level: int, shape: tuple[int, ...], dtype: np.dtype,
                chunks: tuple[int, ...], shards: tuple[int, ...] | None, axes: Sequence[str], options: OutputOptions) -> Sink:
    """Level `level`'s array, created if missing (stored as `options` ask); an existing one (of
    the shape and dtype `existing_layout` checked) must have the codec and shards `options` name."""
    path = level_path(group_path, level)
    if not path.exists():
        return create_array(path, shape, dtype, chunks, shards, tuple(axes), options)
    sink = path.open("r+")
    check_existing_output(sink, options, str(path))
    return with_write_empty_chunks(sink, options.write_empty_chunks)


def staging_array(group_path: ContainerPath | UrlPath, level: int, shape: tuple[int, ...], dtype: np.dtype,
                  chunks: tuple[int, ...]) -> Sink:
    """Where the regions leave their parts of level `level` (one chunk each), kept with the
    group's records so a rerun resumes from it; recreated when the plan changed."""
    group = f"{group_path.container}/{group_path.key}".rstrip("/")
    path = replace(group_path, container=f"{group}/{RECORDS_DIR}/staging.zarr", key=f"s{level}")
    if path.exists():
        sink = path.open("r+")
        if sink.shape == shape and sink.dtype == np.dtype(dtype) and sink.write_unit == chunks:
            return sink
    return create_array(path, shape, dtype, chunks)
