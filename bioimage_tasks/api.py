"""The plain API: `downsample`, `copy` and `pyramid` as functions, without Prefect.

Each is a checked operation (`*_operation`: every parameter is validated, naming it, before
anything is created) run by the one engine on the chosen backend (threads, a local Dask cluster,
SLURM or an existing scheduler), with the same resume, block records, leases and budgets as the
Prefect flows, which run the same operations (bioimage_tasks/prefect/flows.py).

>>> import numpy as np
>>> from bioimage_tasks import downsample
>>> downsample(np.arange(16, dtype=np.uint8).reshape(4, 4), 2, method="mean")
array([[ 2,  4],
       [10, 12]], dtype=uint8)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from bioimage_tasks.api_checks import check_input_dtype, check_label_options, check_method_options
from bioimage_tasks.backends import backend
from bioimage_tasks.errors import ParameterError
from bioimage_tasks.geometry import downscale_shape, normalize_factors
from bioimage_tasks.io import (
    OutputOptions,
    StorageOptions,
    as_source,
    check_output_options,
    physical_of,
)
from bioimage_tasks.io.precomputed_output import precomputed_target
from bioimage_tasks.naming import describe, describe_source
from bioimage_tasks.operations import BlockwiseOperation, Operation, execute
from bioimage_tasks.plain import PlainEdge
from bioimage_tasks.planning import in_memory, plan_blockwise
from bioimage_tasks.pyramid_checks import check_chunks_and_shards, pyramid_geometry
from bioimage_tasks.pyramid_formats import precomputed_output
from bioimage_tasks.pyramid_levels import group_output_path, level_spec, region_plan, reuses_s0
from bioimage_tasks.pyramid_op import PyramidOperation
from bioimage_tasks.resampling import ResizedSource, WindowedSource
from bioimage_tasks.runners import RunnerConfig, check_backend, describe_backend

S0_ALONE = "s0 alone: no level below it (levels=0 or scale_factors=[])"


def run_plain(operation: Operation) -> Any:
    """Run `operation` on its backend with the plain edge (no Prefect)."""
    with backend(operation.job_type, operation.num_workers, operation.config) as executor:
        return execute(operation, PlainEdge(executor, operation.config.worker_timeout))


def built(builder: Callable[..., Operation], args: tuple, kwargs: dict[str, Any]) -> Operation:
    """`builder(*args, **kwargs)`, keeping the call's parameters on the operation (`call`: a run
    stores them for `verify --repair`)."""
    operation = builder(*args, **kwargs)
    bound = inspect.signature(builder).bind(*args, **kwargs)
    bound.apply_defaults()
    operation.call = dict(bound.arguments)
    return operation


def plain(builder: Callable[..., Operation]) -> Callable[..., Any]:
    """The plain function of an operation builder: same parameters and documentation."""

    @functools.wraps(builder)
    def call(*args: Any, **kwargs: Any) -> Any:
        return run_plain(built(builder, args, kwargs))

    call.__name__ = call.__qualname__ = builder.__name__.removesuffix("_operation")
    return call


def blockwise_operation(
    kind: str,
    source: Any,
    input: Any,
    output: Any,
    details: dict[str, Any],
    *,
    block_shape: Any,
    job_type: str,
    job_config: Any,
    num_workers: int,
    mask: Any,
    block_ids: Any,
    resume_from: Any,
    output_options: Any,
    storage_options: Any,
) -> BlockwiseOperation:
    """The checked one-stage operation writing `source` (a view of `input`) into `output`."""
    config = check_backend(job_type, num_workers, job_config)
    options = check_output_options(output_options)
    plan = plan_blockwise(
        source,
        output,
        mask=mask,
        block_shape=block_shape,
        block_ids=block_ids,
        resume_from=resume_from,
        job_type=job_type,
        memory_budget=config.memory_budget,
        output_options=options,
        storage_options=storage_options,
    )
    details = {
        "input": describe_source(input, getattr(source, "source", source)),
        **details,
        "mask": describe(mask) if mask is not None else "none",
        "backend": describe_backend(job_type, num_workers),
    }
    if options != OutputOptions():
        details["output options"] = options.describe()
    return BlockwiseOperation(kind, plan, config, num_workers, details, job_type)


def downsample_operation(
    input: Any,
    scale_factor: int | Sequence[int],
    output: Any = None,
    *,
    order: int = 0,
    anti_aliasing: bool = False,
    method: str = "resize",
    block_shape: Sequence[int] | None = None,
    job_type: str = "local",
    job_config: RunnerConfig | None = None,
    num_workers: int = 1,
    mask: Any = None,
    block_ids: Sequence[int] | None = None,
    resume_from: Any = None,
    output_options: OutputOptions | None = None,
    storage_options: StorageOptions | dict | None = None,
) -> BlockwiseOperation:
    """Downsample `input` by `scale_factor` (an int or one int >= 1 per axis) block-wise.

    The input (numpy, zarr v2/v3, n5, or a path: "path/container.zarr/key", an OME-Zarr image,
    a TIFF file or slice folder, "file.h5/dataset"; see io/inputs.py) is resampled to
    `downscale_shape(shape, factors)` (ceil mode). `method="resize"` does it exactly as
    scikit-image's whole-array `resize(x, shape, order, anti_aliasing, mode="reflect",
    preserve_range=True)` would, cast back to the input dtype (integers rounded to nearest); the
    defaults (order 0, no anti-aliasing) are label-safe: order 0 picks input voxels, never mixes
    them. The window methods "mean", "mode", "min", "max", "median" and "stride" reduce each window
    of `factors` voxels exactly as tensorstore's `downsample` driver does ("mode" is label-safe).

    `output` (array or path; created if missing) receives the result; without it a numpy array
    is returned. `block_shape` is in output space and must be a multiple of the output's chunks
    (default: derived from them). `mask` (output space) limits writes to its nonzero voxels;
    `block_ids` limits the run to those blocks of the output grid. `output_options`
    (`OutputOptions`, or a dict of its fields) choose a new output's codec, level and zarr v3
    shards and whether all-fill chunks are stored. Paths may be "s3://bucket/path/container.zarr/key"
    URLs (or read-only "https://..."); `storage_options` (a StorageOptions or a dict of its fields)
    say how to reach them. `job_type` ("local" threads, "subprocess", "slurm", "dask") and
    `job_config` choose the backend. Returns the output array.
    """
    check_method_options(method, order, anti_aliasing)
    source = as_source(input, storage_options=storage_options)
    factors = normalize_factors(scale_factor, len(source.shape))
    check_input_dtype(source.dtype, method, order, anti_aliasing)
    if method == "resize":
        view = ResizedSource(source, downscale_shape(source.shape, factors), order, anti_aliasing)
    else:
        view = WindowedSource(source, factors, method)
    details = {
        "scale factor": factors,
        "method": f"{method}, order {order}, anti-aliasing {anti_aliasing}",
    }
    return blockwise_operation(
        "downsample",
        view,
        input,
        output,
        details,
        block_shape=block_shape,
        job_type=job_type,
        job_config=job_config,
        num_workers=num_workers,
        mask=mask,
        block_ids=block_ids,
        resume_from=resume_from,
        output_options=output_options,
        storage_options=storage_options,
    )


def copy_operation(
    input: Any,
    output: Any = None,
    *,
    block_shape: Sequence[int] | None = None,
    job_type: str = "local",
    job_config: RunnerConfig | None = None,
    num_workers: int = 1,
    mask: Any = None,
    block_ids: Sequence[int] | None = None,
    resume_from: Any = None,
    output_options: OutputOptions | None = None,
    storage_options: StorageOptions | dict | None = None,
) -> BlockwiseOperation:
    """Copy `input` (any source, e.g. zarr, n5, numpy or a ResizedSource) into `output` block-wise.

    `output` is created if missing (zarr or n5 by its path) or must match the input's shape and
    hold its dtype; without it a numpy array is returned. `block_shape`, `mask`, `block_ids` and
    `output_options` work as in `downsample`, and so do s3:// URLs with `storage_options`.
    A "precomputed://..." output is a single-scale neuroglancer volume with the input's voxel
    size in nm (io/precomputed_output.py). Returns the output array.
    """
    source = as_source(input, storage_options=storage_options)
    output = precomputed_target(
        output, physical_of(source), storage_options
    )  # a single-scale volume
    return blockwise_operation(
        "copy",
        source,
        input,
        output,
        {},
        block_shape=block_shape,
        job_type=job_type,
        job_config=job_config,
        num_workers=num_workers,
        mask=mask,
        block_ids=block_ids,
        resume_from=resume_from,
        output_options=output_options,
        storage_options=storage_options,
    )


def pyramid_operation(
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
) -> PyramidOperation:
    """Write `input` as an OME-Zarr multiscale image at `output_group` ("path/image.zarr", or a
    group inside a container): s0 is a copy, each further level is downsampled with `method`
    (a window method, or "resize" with `order`/`anti_aliasing`) by `scale_factors` (per level,
    relative to the previous level; an int or one per axis) or, with `levels`, by a plan from
    `voxel_size` that makes voxels as isotropic as possible before halving every space axis.
    Only space axes are reduced by `levels`: channel (c) and time (t) axes keep factor 1, scale
    and translation. A 4-D or 5-D input needs its axes named (`axes`, or the input's metadata)
    for `levels`. `scale_factors` may reduce a time axis (NGFF scales time too) but never a
    channel axis. `levels=0` (or `scale_factors=[]`) writes s0 alone, and the run's log and
    summary say so.

    Window methods read each region of the input once and write s0 and every level from that
    read, exactly equal to tensorstore's downsample of s0 by the level's cumulative factor (exact
    sums for mean, histograms for mode and median, never a rounded level); `resize` levels equal
    scikit-image's resize of s0. An input that is this group's own s0 ("<output_group>/s0") is
    used as it is, not copied. Scale and translation follow from the factors and the method's
    sampling (window centres; stride keeps the first voxel). One resumable run on any backend,
    within `job_config.memory_budget` per worker.
    With `labels=True` the output is a segmentation: `output_group` must be
    "<image group>/labels/<name>", the data integer, the method label-safe (mode, min, max,
    median, stride, or resize of order 0), and the `labels` group lists it. `output_options` set
    the levels' codec and level and whether all-fill chunks are stored; its `shards` are another
    way to give `shards`. `voxel_size`, `origin`, `units` and `axes` the caller leaves out come
    from the input's own metadata where it has some (OME-TIFF, ImageJ TIFF, an OME-Zarr image or
    level, HDF5 `element_size_um`); all must be what NGFF can say (2-5 unique axes ordered t, c,
    space; finite voxel sizes > 0; finite origins; NGFF's space and time unit names; a single
    unit is that of the space axes). `chunks` and `shards` are integers >= 1, one per axis, shards
    whole numbers of chunks. `output_group` must be new, or hold only this pyramid's levels (and
    a `labels` group). An `output_group` "precomputed://..." is a neuroglancer precomputed
    volume instead, one scale per level (pyramid_formats.py); an input that is its scale 0 gets
    the missing scales. Every refusal comes before anything is created. Returns the group's path."""
    check_method_options(method, order, anti_aliasing)
    config = check_backend(job_type, num_workers, job_config)
    options = check_output_options(output_options)
    if ngff_version not in ("0.4", "0.5"):
        raise ParameterError(f"ngff_version must be '0.4' or '0.5', got {ngff_version!r}")
    if (levels is None) == (scale_factors is None):
        raise ParameterError(
            "give exactly one of levels (planned from voxel_size) and scale_factors (per level)"
        )
    source = as_source(input, storage_options=storage_options)
    check_input_dtype(source.dtype, method, order, anti_aliasing)
    if job_type != "local" and in_memory(source):
        raise ParameterError(
            f"job_type={job_type!r} needs a file-backed input (a zarr/n5 path or array), not numpy"
        )
    chunks, shards = check_chunks_and_shards(
        chunks, shards, options, len(source.shape), ngff_version
    )
    options = replace(options, shards=shards)  # what existing levels must have
    geometry = pyramid_geometry(source, voxel_size, origin, units, axes, planned=levels is not None)
    group_path = precomputed_output(
        output_group, storage_options, labels, options
    ) or group_output_path(
        output_group, storage_options
    )  # a precomputed volume (pyramid_formats.py) or an OME-Zarr group
    if labels:
        check_label_options(group_path, source.dtype, method, order, anti_aliasing)
    spec = level_spec(source, group_path, levels, scale_factors, geometry, chunks, shards)
    reuse_s0 = reuses_s0(input, group_path)
    plan = region_plan(
        source, spec, method, config, reuse_s0
    )  # every check before anything is created
    details = {
        "input": describe_source(input, source),
        "output": str(group_path),
        "method": method
        if method != "resize"
        else f"resize, order {order}, anti-aliasing {anti_aliasing}",
        "backend": describe_backend(job_type, num_workers),
    }
    if options != OutputOptions():
        details["output options"] = options.describe()
    if not spec.level_factors:
        details["levels"] = S0_ALONE
    return PyramidOperation(
        input,
        source,
        group_path,
        spec,
        method,
        order,
        anti_aliasing,
        options,
        ngff_version,
        name,
        labels,
        config,
        num_workers,
        details,
        plan,
        reuse_s0,
        job_type,
    )


downsample = plain(downsample_operation)
copy = plain(copy_operation)
pyramid = plain(pyramid_operation)
