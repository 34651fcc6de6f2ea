"""`pyramid_flow`: an OME-Zarr multiscale image (s0..sN) with exact per-level geometry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr

from bioimage_tasks.blockwise_flow import blockwise_flow
from bioimage_tasks.geometry import downscale_shape, normalize_factors
from bioimage_tasks.grid import default_block_shape
from bioimage_tasks.multiscale import (axes_metadata, cumulative_factors, labels_group_attributes, level_transform,
                                       multiscales_attributes, plan_isotropic_factors)
from bioimage_tasks.naming import flow_run_namer
from bioimage_tasks.outputs import create_array
from bioimage_tasks.runners import RunnerConfig
from bioimage_tasks.sources import ContainerPath, as_source
from flows.copying import copy_flow
from flows.downsample import check_method_options, downsample_flow

CHAINABLE = ("min", "max", "stride")  # exact when computed from the previous level


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
) -> str:
    """Write `input` as an OME-Zarr multiscale image at `output_group` ("path/image.zarr", or a
    group inside a container): s0 is a copy, each further level is downsampled with `method`
    (a window method, or "resize" with `order`/`anti_aliasing`) by `scale_factors` (per level,
    relative to the previous level; an int or one per axis) or, with `levels`, by a plan from
    `voxel_size` that makes voxels as isotropic as possible before halving every axis.

    Every level is computed from s0 by its cumulative factor (min, max and stride from the level
    above, which is the same and cheaper), so integer mean and mode are never chained through
    rounded levels. Scale and translation follow from the factors and the method's sampling
    (window centres; stride keeps the first voxel). Levels are resumable flows on any backend.
    With `labels=True` the output is a segmentation: `output_group` must be
    "<image group>/labels/<name>", the data integer, the method label-safe (mode, min, max,
    median, stride, or resize of order 0), and the `labels` group lists it. Returns the group's path."""
    check_method_options(method, order, anti_aliasing)
    if ngff_version not in ("0.4", "0.5"):
        raise ValueError(f"ngff_version must be '0.4' or '0.5', got {ngff_version!r}")
    if ngff_version == "0.4" and shards is not None:
        raise ValueError("shards need zarr v3, i.e. ngff_version='0.5'")
    if (levels is None) == (scale_factors is None):
        raise ValueError("give exactly one of levels (planned from voxel_size) and scale_factors (per level)")
    source = as_source(input)
    ndim = len(source.shape)
    voxel_size = tuple(float(v) for v in (voxel_size or (1.0,) * ndim))
    origin = tuple(float(o) for o in (origin or (0.0,) * ndim))
    axes = tuple(axes or ("t", "c", "z", "y", "x")[-ndim:])
    units = (units,) * ndim if isinstance(units, str) or units is None else tuple(units)
    if not len(voxel_size) == len(origin) == len(axes) == len(units) == ndim:
        raise ValueError(f"voxel_size, origin, axes and units need one entry per axis ({ndim})")
    if levels is not None:
        if not isinstance(levels, int) or levels < 0:
            raise ValueError(f"levels must be an integer >= 0, got {levels!r}")
        level_factors = plan_isotropic_factors(voxel_size, levels)
    else:
        level_factors = [normalize_factors(f, ndim) for f in scale_factors]
    group_path = ContainerPath.parse(output_group, "output_group")
    if group_path.format != "zarr":
        raise ValueError(f"output_group must be a zarr path for OME-Zarr, got {output_group!r}")
    if labels:
        check_label_options(group_path, source.dtype, method, order, anti_aliasing)

    group = zarr.open_group(group_path.container, path=group_path.key, mode="a",
                            zarr_format=2 if ngff_version == "0.4" else 3)
    cumulative = cumulative_factors(level_factors)
    shapes = [downscale_shape(source.shape, f) for f in cumulative]
    common = {"job_type": job_type, "job_config": job_config, "num_workers": num_workers}

    level_paths = []
    for level, shape in enumerate(shapes):
        level_path = ContainerPath(group_path.container, f"{group_path.key}/s{level}".lstrip("/"), "zarr")
        if not level_path.exists():
            level_chunks = tuple(chunks) if chunks else default_block_shape(shape, None)
            create_array(level_path, shape, source.dtype, level_chunks, tuple(shards) if shards else None, axes)
        level_paths.append(str(level_path))
    copy_flow(input, level_paths[0], **common)
    for level in range(1, len(shapes)):
        if method in CHAINABLE:
            downsample_flow(level_paths[level - 1], level_factors[level - 1], level_paths[level], method=method, **common)
        else:
            downsample_flow(level_paths[0], cumulative[level], level_paths[level], method=method, order=order,
                            anti_aliasing=anti_aliasing, **common)

    transforms = [level_transform(method, voxel_size, origin, f, shapes[0], shape) for f, shape in zip(cumulative, shapes)]
    label_name = group_path.key.rsplit("/", 1)[-1]
    group.attrs.update(multiscales_attributes(ngff_version, name or label_name or "image", axes_metadata(axes, units),
                                              transforms, method, label=labels))
    if labels:
        labels_group = zarr.open_group(group_path.container, path=group_path.key.rsplit("/", 1)[0], mode="a")
        labels_group.attrs.update(labels_group_attributes(ngff_version, dict(labels_group.attrs), label_name))
    return str(group_path)


def check_label_options(group_path: ContainerPath, dtype: Any, method: str, order: int, anti_aliasing: bool) -> None:
    """A label image lives at <image>/labels/<name>, holds integers, and is downsampled label-safely."""
    parts = group_path.key.split("/")
    if len(parts) < 2 or parts[-2] != "labels":
        raise ValueError(f"labels=True needs output_group '<image>.zarr/labels/<name>', got {str(group_path)!r}")
    if np.dtype(dtype).kind not in "iub":
        raise ValueError(f"label images hold integers, got dtype {dtype}")
    if method == "mean" or (method == "resize" and (order > 0 or anti_aliasing)):
        raise ValueError(f"method={method!r} (order {order}, anti_aliasing {anti_aliasing}) mixes label ids; "
                         "use mode, min, max, median, stride or resize with order 0")
